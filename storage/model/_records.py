"""Records kept by every backend.

Payload fields (task input, results, event data, journal values, metadata)
are JSON text produced by the caller's codec: storage keeps them opaque.
Timestamps are seconds since the epoch, taken from the runtime's clock.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

import attrs


class TaskState(enum.StrEnum):
    """Lifecycle state of a task."""

    #: Recorded, not yet started.
    PENDING = "pending"
    #: The handler is running.
    RUNNING = "running"
    #: Suspended at a safe point; only RESUME continues it.
    PAUSED = "paused"
    #: The handler asked for input; the next Request answers.
    INPUT_REQUIRED = "input_required"
    #: The handler asked for authorization; the next Request answers.
    AUTH_REQUIRED = "auth_required"
    #: The current request was aborted; the next Request runs again.
    STOPPED = "stopped"
    #: Terminal: the handler returned.
    COMPLETED = "completed"
    #: Terminal: the handler raised (after retries) or timed out.
    FAILED = "failed"
    #: Terminal: cancelled.
    CANCELLED = "cancelled"
    #: Terminal: refused before it ran.
    REJECTED = "rejected"

    # Hashed as its value, which it equals ("running" in {TaskState.RUNNING});
    # str's hash is C and cached in the object, where Enum's own __hash__ is a
    # Python call (a task's writes and transitions hash states about 16 times,
    # issue #5).
    __hash__ = str.__hash__

    @property
    def terminal(self) -> bool:
        """Whether no transition leaves this state."""
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED, TaskState.REJECTED}
)
#: States in which a task needs a live actor (and so an owner).
ACTIVE_STATES = frozenset({TaskState.PENDING, TaskState.RUNNING})
#: Every non-terminal state.
INFLIGHT_STATES = frozenset(TaskState) - TERMINAL_STATES


@attrs.frozen
class TaskRecord:
    """A task as the store keeps it."""

    id: str
    name: str
    state: TaskState
    #: JSON text: the input of the current run.
    input: str
    created_at: float
    updated_at: float
    user_id: str | None = None
    thread_id: str | None = None
    parent_id: str | None = None
    #: Id of the root of the task tree (the task itself when it has no parent).
    root_id: str = ""
    #: JSON text of the caller's metadata object.
    metadata: str = "{}"
    strategy: str = "enqueue"
    #: Node that owns the task (runs its actor), if any.
    owner: str | None = None
    #: Until when the owner's lease holds.
    lease_expires: float | None = None
    #: Grows each time the task changes hands; fences every write.
    epoch: int = 0
    #: Number of the current run (a run starts on submit and after each STOP).
    run: int = 1
    #: Seq of the last event in the task's history.
    last_seq: int = 0
    progress_done: float | None = None
    progress_total: float | None = None
    #: Short error text of a failed task.
    error: str | None = None


# Events are named tuples, not attrs classes: a busy runtime makes hundreds
# of thousands of them, and a tuple is cheaper to make and to walk for the
# collector (issue #5: the collector was ~45% of the time of 10,000
# concurrent tasks). CPython still tracks them: it stops tracking exact
# tuples of atoms only, not instances of a tuple subclass.
class NewEvent(NamedTuple):
    """An event to append; the store gives it its seq."""

    kind: str
    #: JSON text.
    data: str = "{}"


#: An event to append, as a write carries it: a NewEvent, or a plain
#: (kind, JSON data) pair. The runtime's own events are plain pairs: a plain
#: tuple of strings is made in C, and the collector stops tracking it at its
#: first pass (issue #5: the events of the writes in flight were a tenth of
#: what each collection of the middle generation moved to the oldest).
EventLike = tuple[str, str]


class StoredEvent(NamedTuple):
    """An event of a task's history."""

    task_id: str
    #: 1, 2, 3... per task, without gaps, in the order the store committed them.
    seq: int
    kind: str
    at: float
    #: JSON text.
    data: str


@attrs.frozen
class JournalEntry:
    """One durable point of a handler run: a step result, an answer, a checkpoint...

    Entries are numbered by their position in the handler's sequence of
    durable calls; a replay walks them in that order.
    """

    task_id: str
    index: int
    #: "step", "ask", "checkpoint", "spawn", "join" (free text for the store).
    kind: str
    name: str
    #: JSON text of the stored value.
    value: str
    #: Run that recorded the entry (rollback discards a run's entries).
    run: int
    at: float


@attrs.frozen
class ExceptionRecord:
    """What survives of an exception: enough to report it, not to re-raise it."""

    type: str
    message: str
    traceback: str
    retryable: bool = False


@attrs.frozen
class InboxItem:
    """A Request waiting for the handler (durable mailbox)."""

    task_id: str
    id: int
    #: JSON text.
    input: str
    at: float


@attrs.frozen
class UsageRecord:
    """Token usage reported by a task."""

    task_id: str
    #: Idempotency key within the task: a replayed report is stored once.
    key: str
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    caller: str | None = None
    thread_id: str | None = None
    user_id: str | None = None
    at: float = 0.0


@attrs.frozen
class NodeRecord:
    """A runtime node registered in the store."""

    node_id: str
    started_at: float
    lease_expires: float
    #: JSON text of whatever the node says about itself.
    info: str = "{}"


@attrs.frozen
class TaskFilter:
    """Which tasks to list; None means "any"."""

    user_id: str | None = None
    thread_id: str | None = None
    parent_id: str | None = None
    states: frozenset[TaskState] | None = None
    name: str | None = None
    limit: int | None = None
    #: The node that owns them (holds their lease).
    owner: str | None = None
