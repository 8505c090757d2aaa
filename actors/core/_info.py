"""Public read models: TaskInfo and TaskEvent."""

from __future__ import annotations

from typing import Any

import attrs

from storage import StoredEvent, TaskRecord, TaskState, decode


@attrs.frozen
class TaskInfo:
    """What callers see of a task."""

    id: str
    name: str
    state: TaskState
    user_id: str | None
    thread_id: str | None
    parent_id: str | None
    created_at: float
    updated_at: float
    #: (done, total) from the last ``ctx.progress``, or None.
    progress: tuple[float, float | None] | None
    #: Short error text of a failed task.
    error: str | None
    metadata: dict[str, Any] = attrs.field(factory=dict)
    strategy: str = "enqueue"
    #: Number of the current run.
    run: int = 1
    #: Seq of the last event in the task's history.
    last_seq: int = 0
    #: Node that runs the task's actor now, if any.
    owner: str | None = None

    @property
    def terminal(self) -> bool:
        """Whether the task is finished."""
        return self.state.terminal

    @classmethod
    def from_record(cls, record: TaskRecord) -> TaskInfo:
        progress = (
            (record.progress_done, record.progress_total)
            if record.progress_done is not None
            else None
        )
        return cls(
            id=record.id,
            name=record.name,
            state=record.state,
            user_id=record.user_id,
            thread_id=record.thread_id,
            parent_id=record.parent_id,
            created_at=record.created_at,
            updated_at=record.updated_at,
            progress=progress,
            error=record.error,
            metadata={} if record.metadata == "{}" else decode(record.metadata),
            strategy=record.strategy,
            run=record.run,
            last_seq=record.last_seq,
            owner=record.owner,
        )


@attrs.frozen
class TaskEvent:
    """One committed event of a task's history."""

    task_id: str
    #: 1, 2, 3... per task, no gaps, in commit order.
    seq: int
    kind: str
    #: Seconds since the epoch (runtime clock).
    at: float
    data: Any

    @classmethod
    def from_stored(cls, event: StoredEvent) -> TaskEvent:
        return cls(event.task_id, event.seq, event.kind, event.at, decode(event.data))

    @property
    def terminal(self) -> bool:
        """Whether this event moved the task into a terminal state."""
        if self.kind != "state" or not isinstance(self.data, dict):
            return False
        try:
            return TaskState(str(self.data.get("to"))).terminal
        except ValueError:
            return False
