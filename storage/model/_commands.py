"""Write commands: what the storage actor takes from its mailbox.

Theory of operation
-------------------
Every change to a store is one of these commands (frozen but TaskWrite). The storage actor
(``_writer.py``) drains whatever is waiting in its mailbox and hands the list
to the backend's ``apply(commands, now)``, which applies them in order, each
atomically, inside one transaction (group commit), and returns one outcome
per command: the command's result, or the ``StorageError`` *instance* that
refused it (a refused command changes nothing; the others still commit).
``now`` is the runtime clock's time for the whole batch: event timestamps,
TTLs and lease checks all use it, so backends never read a clock.

A ``TaskWrite`` is the unit of a task actor's progress: state change,
events, journal entries, result... land together or not at all, fenced by
the actor's epoch and guarded by a compare-and-set on the state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import attrs

from ._records import (
    EventLike,
    ExceptionRecord,
    NewEvent,
    NodeRecord,
    StoredEvent,
    TaskRecord,
    TaskState,
    UsageRecord,
)


@attrs.frozen
class CreateTask:
    """Insert a task unless its id exists (idempotent submit).

    Outcome: ``CreateResult``. ``record.last_seq`` is ignored: the events given
    here become seq 1, 2, ... of the new task. ``record.epoch`` is stored as given.
    (A record whose last_seq counts its events is stored exactly as given, and
    a backend may return that very object.)
    """

    record: TaskRecord
    events: tuple[NewEvent, ...] = ()


@attrs.frozen
class CreateResult:
    record: TaskRecord
    #: False when the id existed (the existing record is returned, nothing changed).
    created: bool
    events: tuple[StoredEvent, ...] = ()


class JournalWrite(NamedTuple):
    """A journal entry to record (replaces an entry at the same index).

    A NamedTuple, as ``NewEvent``: made in a few hundred ns where a frozen
    attrs class took a microsecond and more (issue #5: a step result makes
    one). Its ``index`` field hides ``tuple.index``, which nothing here calls.
    """

    index: int  # type: ignore[assignment]
    kind: str
    name: str
    value: str
    run: int


@attrs.define
class TaskWrite:
    """An atomic, fenced update of one task.

    The one command that is not frozen: a ``TaskDraft`` (``actor/_pending.py``) is a
    TaskWrite that its owner fills while it waits in the queue, and that the
    storage actor then takes as it is (issue #5: copying each draft into a
    frozen TaskWrite was a tenth of the storage actor's time). Do not change
    a TaskWrite once it is submitted.

    Refused with ``RecordNotFoundError`` (no such task), ``StaleEpochError``
    (``epoch`` given and the record's epoch differs, or its lease has expired
    at ``now``), or ``ConflictError`` (``expect`` given and the state is not in it).
    Outcome: ``TaskWriteResult``.

    Within one write, ``discard_run`` applies before ``journal`` (a rollback
    can record the new run's first entries), and ``inbox_consume`` and
    ``inbox_clear`` apply before ``inbox_add`` (the added items survive).
    ``updated_at`` becomes ``now`` unless the write carries no change (a bare
    probe of ``epoch``/``expect``). ``usage`` reports are stored for
    ``task_id`` whatever their own ``task_id`` says.
    """

    task_id: str
    #: The writer's epoch; None for an unfenced write (an external cancel, an admin fix).
    epoch: int | None = None
    #: The states the task must be in; None: any.
    expect: frozenset[TaskState] | None = None
    #: New state, if it changes.
    state: TaskState | None = None
    events: Sequence[EventLike] = ()
    journal: Sequence[JournalWrite] = ()
    #: Delete the journal entries recorded by this run (rollback).
    discard_run: int | None = None
    #: Inputs to append to the durable inbox (JSON text each).
    inbox_add: tuple[str, ...] = ()
    #: Inbox item ids consumed by this write.
    inbox_consume: tuple[int, ...] = ()
    #: Empty the inbox.
    inbox_clear: bool = False
    #: New input of the current run (JSON text).
    input: str | None = None
    #: New run number.
    run: int | None = None
    #: (done, total) progress.
    progress: tuple[float, float | None] | None = None
    #: Error text to set on the record.
    error: str | None = None
    #: Result JSON text (stored in the results table).
    result: str | None = None
    exception: ExceptionRecord | None = None
    #: Usage reports; a report whose (task_id, key) exists is ignored.
    usage: Sequence[UsageRecord] = ()
    #: Clear owner and lease (the actor passivates or the node lets go).
    release: bool = False

    @property
    def changes_anything(self) -> bool:
        """Whether the write carries any change (a bare fenced probe does not)."""
        return bool(
            self.state is not None
            or self.events
            or self.journal
            or self.discard_run is not None
            or self.inbox_add
            or self.inbox_consume
            or self.inbox_clear
            or self.input is not None
            or self.run is not None
            or self.progress is not None
            or self.error is not None
            or self.result is not None
            or self.exception is not None
            or self.usage
            or self.release
        )


class TaskWriteResult:
    """The outcome of a TaskWrite: the task as the write left it, the events
    it stored, the ids of the inbox items it added.

    A backend may give the task as a row and the function that reads it
    (``of_row``): the record is then made when first asked for. Most
    results are read for their events alone, or not at all (issue #5: a
    frozen TaskRecord of 20 fields costs ~2 us, and each write made one).
    """

    __slots__ = ("_read", "_record", "_row", "events", "inbox_ids", "owner", "state")

    def __init__(
        self,
        record: TaskRecord,
        events: tuple[StoredEvent, ...] = (),
        inbox_ids: tuple[int, ...] = (),
    ) -> None:
        self._record: TaskRecord | None = record
        self._row: tuple[Any, ...] = ()
        self._read: Callable[[tuple[Any, ...]], TaskRecord] | None = None
        #: The task's state and owner after the write (``record.state``,
        #: ``record.owner``, without making the record).
        self.state = record.state
        self.owner = record.owner
        self.events = events
        #: Ids given to ``inbox_add`` items, in order.
        self.inbox_ids = inbox_ids

    @classmethod
    def of_row(
        cls,
        row: tuple[Any, ...],
        read: Callable[[tuple[Any, ...]], TaskRecord],
        state: TaskState,
        owner: str | None,
        events: tuple[StoredEvent, ...] = (),
        inbox_ids: tuple[int, ...] = (),
    ) -> TaskWriteResult:
        """A result whose record is ``read(row)``, made when first asked for
        (``row`` must not change after); ``state`` and ``owner`` are the row's."""
        result = cls.__new__(cls)
        result.state = state
        result.owner = owner
        result._record = None
        result._row = row
        result._read = read
        result.events = events
        result.inbox_ids = inbox_ids
        return result

    @property
    def record(self) -> TaskRecord:
        record = self._record
        if record is None:
            assert self._read is not None
            record = self._record = self._read(self._row)
            self._row, self._read = (), None
        return record

    def __reduce__(self) -> tuple[object, ...]:
        return (TaskWriteResult, (self.record, self.events, self.inbox_ids))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TaskWriteResult):
            return NotImplemented
        return (self.record, self.events, self.inbox_ids) == (
            other.record,
            other.events,
            other.inbox_ids,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"TaskWriteResult(record={self.record!r}, events={self.events!r},"
            f" inbox_ids={self.inbox_ids!r})"
        )


@attrs.frozen
class ClaimTask:
    """Take ownership of a task: owner := node, lease := lease_until, epoch += 1.

    Allowed when the task has no owner, is owned by ``node_id`` already (a
    restart is a change of hands too), or its lease expired before ``now``.
    Refused with ``LeaseHeldError``, ``RecordNotFoundError``, or ``ConflictError``
    when ``states`` is given and the task is not in one of them.
    Outcome: the claimed ``TaskRecord``.
    """

    task_id: str
    node_id: str
    lease_until: float
    states: frozenset[TaskState] | None = None
    #: Take it even from a live owner (testing: "as if another node claimed it").
    force: bool = False


@attrs.frozen
class RenewLeases:
    """Extend the lease of the node and of every task it owns.

    Outcome: the number of tasks renewed (int).
    """

    node_id: str
    lease_until: float


@attrs.frozen
class ReleaseTasks:
    """Clear owner and lease of the node's tasks (all of them when task_ids is None).

    Outcome: the number of tasks released (int).
    """

    node_id: str
    task_ids: tuple[str, ...] | None = None


@attrs.frozen
class RegisterNode:
    """Insert or replace a node record. Outcome: None."""

    node: NodeRecord


@attrs.frozen
class RemoveNode:
    """Forget a node. Outcome: None."""

    node_id: str


@attrs.frozen
class UpdateStatus:
    """Set a task's state without fencing (the run store's ``update_status``).

    Appends a ``state`` event. Outcome: the ``TaskWriteResult``, or None when no
    such task exists (the store client turns that into the seed's bool).
    """

    task_id: str
    status: TaskState
    error: str | None = None


@attrs.frozen
class SetKeyState:
    """Set a keyed state with a TTL in seconds (None: no expiry). Outcome: None."""

    key: str
    state: str
    ttl: float | None = 3600


@attrs.frozen
class CompareAndSetKeyState:
    """Set ``key`` to ``new_state`` if its current state equals ``expected_state``.

    With ``negate``, if it does *not* equal it (a missing or expired key has
    state None, which equals nothing). Outcome: bool, whether it was set.
    """

    key: str
    new_state: str
    expected_state: str
    negate: bool = False
    ttl: float | None = 3600


@attrs.frozen
class DeleteKeyState:
    """Remove a keyed state. Outcome: None."""

    key: str


@attrs.frozen
class SetWorkflowData:
    """Set workflow_id/key to JSON text. Outcome: None."""

    workflow_id: str
    key: str
    value: str


@attrs.frozen
class SetDeterministicValue:
    """Set a deterministic value of a workflow (JSON text). Outcome: None."""

    workflow_id: str
    key: str
    value: str


Command = (
    CreateTask
    | TaskWrite
    | ClaimTask
    | RenewLeases
    | ReleaseTasks
    | RegisterNode
    | RemoveNode
    | UpdateStatus
    | SetKeyState
    | CompareAndSetKeyState
    | DeleteKeyState
    | SetWorkflowData
    | SetDeterministicValue
)
