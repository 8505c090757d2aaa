"""Records and stored tasks for the storage tests, written once.

``make_task`` and ``make_usage`` build records with the defaults the tests
share; ``put`` creates tasks through the public store client.
"""

from __future__ import annotations

import storage
from storage import TaskRecord, TaskState, UsageRecord


def make_task(
    task_id: str,
    *,
    created_at: float = 1_000.0,
    state: TaskState = TaskState.PENDING,
    name: str = "job",
    user_id: str | None = None,
    thread_id: str | None = None,
    parent_id: str | None = None,
) -> TaskRecord:
    """A task record created at ``created_at`` (also its updated_at), input ``{"n":1}``."""
    return TaskRecord(
        id=task_id,
        name=name,
        state=state,
        input='{"n":1}',
        created_at=created_at,
        updated_at=created_at,
        user_id=user_id,
        thread_id=thread_id,
        parent_id=parent_id,
        root_id=parent_id or task_id,
    )


def make_usage(
    task_id: str,
    key: str,
    model: str,
    input_tokens: int,
    output_tokens: int,
    *,
    caller: str | None = None,
    thread_id: str = "th1",
) -> UsageRecord:
    """A usage report of user u1."""
    return UsageRecord(
        task_id,
        key,
        model,
        input_tokens,
        output_tokens,
        caller=caller,
        thread_id=thread_id,
        user_id="u1",
    )


async def put(store: storage.Store, *records: TaskRecord) -> None:
    """Create each task, asserting that it did not exist."""
    for record in records:
        result = await store.put_task(record)
        assert result.created


def ids(records: list[TaskRecord]) -> list[str]:
    return [record.id for record in records]
