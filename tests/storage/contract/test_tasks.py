"""The contract on task records: create, read, list, and status updates.

Runs once per backend of ``conftest.BACKENDS`` (see ``__init__``).
"""

from __future__ import annotations

import json

import attrs
import pytest
import trio
import trio.testing

import storage
from storage import NewEvent, TaskRecord, TaskState

from ..factories import ids, make_task, put

# -- task records -------------------------------------------------------------


async def test_put_task_then_get_task_returns_the_record(store: storage.Store) -> None:
    record = make_task("t1", user_id="u1", thread_id="th1")
    result = await store.put_task(record)
    assert result.created
    assert result.record == record
    assert await store.get_task("t1") == record


async def test_get_task_of_an_unknown_id_is_none(store: storage.Store) -> None:
    assert await store.get_task("nope") is None


async def test_put_task_is_idempotent_on_the_id(store: storage.Store) -> None:
    first = await store.put_task(make_task("t1", name="first"), [NewEvent("submitted")])
    again = await store.put_task(make_task("t1", name="second"), [NewEvent("other")])
    assert not again.created
    assert again.record == first.record
    assert again.events == ()
    assert await store.get_task("t1") == first.record
    assert [event.kind for event in await store.read_events("t1")] == ["submitted"]


async def test_put_task_stores_its_events_from_seq_1(
    store: storage.Store, autojump_clock: trio.testing.MockClock
) -> None:
    result = await store.put_task(
        make_task("t1"), [NewEvent("submitted", '{"a":1}'), NewEvent("queued")]
    )
    now = store.clock.now()
    assert result.record.last_seq == 2
    assert [(e.task_id, e.seq, e.kind, e.data, e.at) for e in result.events] == [
        ("t1", 1, "submitted", '{"a":1}', now),
        ("t1", 2, "queued", "{}", now),
    ]
    assert await store.read_events("t1") == list(result.events)


@pytest.mark.parametrize("given", [0, 1, 5])
async def test_put_task_counts_last_seq_from_its_events_whatever_was_given(
    store: storage.Store, given: int
) -> None:
    record = attrs.evolve(make_task("t1", user_id="u1"), last_seq=given)
    result = await store.put_task(record, [NewEvent("submitted")])
    assert result.record == attrs.evolve(record, last_seq=1)
    assert await store.get_task("t1") == result.record


async def test_put_task_keeps_the_given_epoch_and_timestamps(store: storage.Store) -> None:
    record = TaskRecord(
        id="t1",
        name="job",
        state=TaskState.PAUSED,
        input="{}",
        created_at=12.5,
        updated_at=13.5,
        epoch=7,
        metadata='{"k":"v"}',
        strategy="reject",
    )
    await store.put_task(record)
    assert await store.get_task("t1") == record


@pytest.fixture
async def listed(store: storage.Store) -> storage.Store:
    """Four tasks for the list tests; t2 and t4 share a created_at."""
    await put(
        store,
        make_task("t1", created_at=1, user_id="u1", thread_id="th1", name="alpha"),
        make_task(
            "t4",
            created_at=2,
            user_id="u1",
            thread_id="th1",
            name="alpha",
            state=TaskState.FAILED,
        ),
        make_task(
            "t2",
            created_at=2,
            user_id="u2",
            thread_id="th1",
            name="beta",
            state=TaskState.RUNNING,
            parent_id="t1",
        ),
        make_task(
            "t3",
            created_at=3,
            user_id="u1",
            thread_id="th2",
            name="alpha",
            state=TaskState.COMPLETED,
            parent_id="t1",
        ),
    )
    return store


async def test_list_tasks_is_oldest_first_then_by_id(listed: storage.Store) -> None:
    assert ids(await listed.list_tasks()) == ["t1", "t2", "t4", "t3"]


async def test_list_tasks_by_user(listed: storage.Store) -> None:
    assert ids(await listed.list_tasks(user_id="u1")) == ["t1", "t4", "t3"]
    assert ids(await listed.list_tasks(user_id="nobody")) == []


async def test_list_tasks_by_thread(listed: storage.Store) -> None:
    assert ids(await listed.list_tasks(thread_id="th1")) == ["t1", "t2", "t4"]


async def test_list_tasks_by_states(listed: storage.Store) -> None:
    states = [TaskState.RUNNING, TaskState.COMPLETED]
    assert ids(await listed.list_tasks(states=states)) == ["t2", "t3"]
    assert ids(await listed.list_tasks(states=[])) == []


async def test_list_tasks_by_parent(listed: storage.Store) -> None:
    assert ids(await listed.list_tasks(parent_id="t1")) == ["t2", "t3"]


async def test_list_tasks_by_name(listed: storage.Store) -> None:
    assert ids(await listed.list_tasks(name="beta")) == ["t2"]


async def test_list_tasks_by_owner(listed: storage.Store) -> None:
    await listed.claim_task("t2", "node-a", lease=60)
    await listed.claim_task("t1", "node-b", lease=60)
    assert ids(await listed.list_tasks(owner="node-a")) == ["t2"]
    assert ids(await listed.list_tasks(owner="node-a", states=[TaskState.RUNNING])) == ["t2"]
    assert ids(await listed.list_tasks(owner="node-a", states=[TaskState.CANCELLED])) == []
    assert ids(await listed.list_tasks(owner="nobody")) == []


async def test_list_tasks_combines_filters(listed: storage.Store) -> None:
    found = await listed.list_tasks(user_id="u1", thread_id="th1", states=[TaskState.FAILED])
    assert ids(found) == ["t4"]


async def test_list_tasks_limit_keeps_the_oldest(listed: storage.Store) -> None:
    assert ids(await listed.list_tasks(limit=2)) == ["t1", "t2"]
    assert ids(await listed.list_tasks(user_id="u1", limit=1)) == ["t1"]


async def test_list_pending_returns_only_pending_tasks(listed: storage.Store) -> None:
    await put(listed, make_task("t0", created_at=0))
    assert ids(await listed.list_pending()) == ["t0", "t1"]


async def test_list_inflight_returns_pending_and_running_tasks(listed: storage.Store) -> None:
    await put(listed, make_task("t5", created_at=5, state=TaskState.PAUSED))
    assert ids(await listed.list_inflight()) == ["t1", "t2"]


# -- status updates -----------------------------------------------------------


async def test_update_status_of_an_unknown_task_returns_false(store: storage.Store) -> None:
    assert await store.update_status("nope", TaskState.RUNNING) is False
    assert await store.get_task("nope") is None


async def test_update_status_sets_the_state_and_appends_a_state_event(
    store: storage.Store, autojump_clock: trio.testing.MockClock
) -> None:
    await put(store, make_task("t1"))
    assert await store.update_status("t1", TaskState.RUNNING) is True
    task = await store.get_task("t1")
    assert task is not None
    assert (task.state, task.error, task.updated_at) == (
        TaskState.RUNNING,
        None,
        store.clock.now(),
    )
    [event] = await store.read_events("t1")
    assert (event.seq, event.kind) == (1, "state")
    assert json.loads(event.data) == {"from": "pending", "to": "running"}


async def test_update_status_with_an_error_records_it(store: storage.Store) -> None:
    await put(store, make_task("t1", state=TaskState.RUNNING))
    assert await store.update_status("t1", TaskState.FAILED, error="timed out")
    task = await store.get_task("t1")
    assert task is not None
    assert (task.state, task.error) == (TaskState.FAILED, "timed out")
    [event] = await store.read_events("t1")
    assert json.loads(event.data) == {"from": "running", "to": "failed", "error": "timed out"}


async def test_update_status_to_the_same_state_still_reports_the_row(
    store: storage.Store,
) -> None:
    await put(store, make_task("t1"))
    assert await store.update_status("t1", TaskState.PENDING) is True


async def test_update_status_outcome_is_the_written_record(store: storage.Store) -> None:
    await put(store, make_task("t1"))
    outcome = await store.execute(storage.UpdateStatus("t1", TaskState.PAUSED))
    assert isinstance(outcome, storage.TaskWriteResult)
    assert outcome.record == await store.get_task("t1")
    assert [event.kind for event in outcome.events] == ["state"]
    assert await store.execute(storage.UpdateStatus("nope", TaskState.PAUSED)) is None
