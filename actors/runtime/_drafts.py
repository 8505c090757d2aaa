"""ActorCore: a task actor's state, and how it writes (drafts, commits, transitions).

Theory of operation
-------------------
Writes that do not move the task (events, progress, usage, step results,
recorded values) are added to the actor's open ``TaskDraft``: one storage
command that grows until the storage actor takes it, so a task costs one
command per batch however much it writes (issue #5). They need no lock: a
run writes only while its scope is live, and whoever ends a run cancels its
scope before writing. A step result is awaited (``_commit``): the draft
that holds it is durable before the next step starts, and with it every
event queued before. Drafts are resolved in commit order, and the record
each returns becomes ``self.record`` right then.

A transition (``_transition``) is such a write, made under the actor's
lock, fenced by its epoch and guarded by a compare-and-set on the state the
actor believes in. If a fenced write is refused (another node took the task
over) or the state was changed under the actor (an unfenced cancel from
elsewhere), ``_lost`` says so and the actor stops without writing anything
else.

The rest of the actor is built on this class: what a handler's context
calls (``_calls``), the mailbox (``_mailbox``) and the run loop (``_run``);
``_actor.TaskActor`` puts them together.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import trio

from storage import (
    ACTIVE_STATES,
    ConflictError,
    EventLike,
    InboxItem,
    JournalEntry,
    NewEvent,
    StaleEpochError,
    StorageError,
    TaskDraft,
    TaskRecord,
    TaskState,
    TaskWriteResult,
    decode,
    encode,
)

from ..core._errors import ActorsError, OwnershipLostError
from ..core._info import TaskInfo
from ..core._lifecycle import Command, Strategy, transition
from ..core._messages import Request
from ._fast import KIND, ONLY, RUNNING, VALUE, Entry, state_data
from ._lock import ActorLock

if TYPE_CHECKING:
    from storage import Clock, Store

    from ._app import TaskSpec
    from ._supervisor import Supervisor


def runtime_event(kind: str, data: Any = None) -> NewEvent:
    """An event of the runtime's own (data encoded as JSON)."""
    return NewEvent(kind, encode({} if data is None else data))


def has_spawn(journal: dict[int, Entry]) -> bool:
    """Whether a journal holds a spawn (children to cancel when the task ends)."""
    return any(entry[KIND] == "spawn" for entry in journal.values())


class Superseded(ActorsError):
    """The task's state was changed by someone else (e.g. cancelled from another node)."""


class ActorGone(ActorsError):
    """The actor stopped before it handled the message: deliver it again (revive)."""


class ActorCore(ActorLock):
    """The state of a task actor and its writes; see the module docstring.

    The actor is its own mailbox lock (an ``ActorLock``; ``self._lock`` is
    the actor itself): one object less per live task.
    """

    __slots__ = (
        "_draft",
        "_fresh",
        "_lost",
        "_next",
        "_record",
        "_run_scope",
        "_spawns",
        "_start_draft",
        "_start_error",
        "_stopped",
        "_write_error",
        "epoch",
        "heartbeat_scope",
        "holds_slot",
        "inbox",
        "journal",
        "journal_end",
        "pause_requested",
        "runtime",
        "spec",
        "task_id",
    )

    def __init__(
        self,
        runtime: Supervisor,
        spec: TaskSpec,
        record: TaskRecord,
        journal: Sequence[JournalEntry],
        inbox: Sequence[InboxItem],
    ) -> None:
        self.runtime = runtime
        self.spec = spec
        self._record = record
        #: The result of the last write, whose record is made when first
        #: needed (see ``record``).
        self._fresh: TaskWriteResult | None = None
        self.task_id = record.id
        self.epoch = record.epoch
        self.journal: dict[int, Entry] = (
            {e.index: (e.kind, e.name, e.value, e.run) for e in journal} if journal else {}
        )
        self.journal_end = max(self.journal, default=-1) + 1
        #: Whether the journal holds a spawn (children to cancel when it ends).
        self._spawns = has_spawn(self.journal)
        #: The durable inbox as the actor knows it (a tuple: most tasks never
        #: have one, and the empty tuple costs nothing per actor).
        self.inbox: tuple[InboxItem, ...] = tuple(inbox)
        super().__init__()  # the lock: free, nobody waiting
        #: The Request of the run to start once the current one has unwound.
        self._next: Request | None = None
        self._run_scope: trio.CancelScope | None = None
        #: The scope a heartbeat pushes back (None: no heartbeat_timeout, or no run).
        self.heartbeat_scope: trio.CancelScope | None = None
        #: Whether a PAUSE waits for the run's next safe point.
        self.pause_requested = False
        #: The open draft this actor adds its writes to (see TaskDraft).
        self._draft: TaskDraft | None = None
        self._write_error: StorageError | None = None
        #: The draft holding a START not committed yet (the lock goes with it).
        self._start_draft: TaskDraft | None = None
        #: Why the store refused the last START (not a lost task): the run
        #: starts again later.
        self._start_error: StorageError | None = None
        self._lost: ActorsError | None = None
        self._stopped = False
        #: Whether the actor holds one of the runtime's run slots (max_running).
        self.holds_slot = False

    # -- conveniences ------------------------------------------------------
    @property
    def record(self) -> TaskRecord:
        """The task as the actor's last committed write left it."""
        fresh = self._fresh
        if fresh is not None:
            self._record = fresh.record
            self._fresh = None
        return self._record

    @record.setter
    def record(self, record: TaskRecord) -> None:
        self._record = record
        self._fresh = None

    @property
    def _lock(self) -> ActorLock:
        """The mailbox lock: the actor itself (``async with self._lock``)."""
        return self

    @property
    def store(self) -> Store:
        return self.runtime.store

    @property
    def clock(self) -> Clock:
        return self.runtime.store.clock

    @property
    def state(self) -> TaskState:
        fresh = self._fresh  # (the last write's state, without making its record)
        return self._record.state if fresh is None else fresh.state

    @property
    def strategy(self) -> Strategy:
        return Strategy(self.record.strategy)

    @property
    def root_id(self) -> str:
        return self.record.root_id or self.task_id

    @property
    def run(self) -> int:
        return self.record.run

    def info(self) -> TaskInfo:
        return TaskInfo.from_record(self.record)

    def latest_checkpoint_index(self) -> int | None:
        indexes = [i for i, e in self.journal.items() if e[KIND] == "checkpoint"]
        return max(indexes) if indexes else None

    def latest_checkpoint(self) -> Any:
        index = self.latest_checkpoint_index()
        return None if index is None else decode(self.journal[index][VALUE])

    def _live(self, scope: trio.CancelScope) -> bool:
        """Whether ``scope`` is the current run's, and not ended."""
        return scope is self._run_scope and not scope.cancel_called

    # -- writing ---------------------------------------------------------------
    def _draft_for(self, expect: frozenset[TaskState], *, fresh: bool = False) -> TaskDraft:
        """The open draft if a part expecting ``expect`` may join it, else a new one.

        Raises:
            StorageClosedError: the store is closed.
        """
        draft = self._draft
        if draft is None or not draft.accepts(expect) or (fresh and not draft.empty):
            draft = self.runtime.store.open_draft(self.task_id, self.epoch, expect)
            draft.on_outcome = self  # (see __call__)
            self._draft = draft
        return draft

    def _add(self, expect: frozenset[TaskState], **parts: Any) -> TaskDraft:
        """Add a part to the open draft, or to a new one; the draft that holds it."""
        draft = self._draft_for(expect, fresh=parts.get("discard_run") is not None)
        draft.add(**parts)
        return draft

    def __call__(self, outcome: object) -> None:
        """A draft's outcome: the actor is its drafts' ``on_outcome`` (a bound
        method would be one more object per draft). Called by the storage
        actor in commit order, before anyone wakes."""
        draft = self._draft
        if draft is not None and draft.done:
            self._draft = None  # keep nothing of a committed write
            if draft.result is not None and isinstance(outcome, TaskWriteResult):
                # The completion committed: its waiters need not read the result back.
                self.runtime.hub.offer_result(self.task_id, draft.result)
        start = self._start_draft
        starting = start is not None and start.done
        if isinstance(outcome, TaskWriteResult):
            # Kept for its state and record (made when first read), not its
            # events: the commit listeners had them, and nothing here reads
            # them again (while kept they would grow old in the collector).
            outcome.events = ()
            self._fresh = outcome
        elif isinstance(outcome, StaleEpochError):
            if self._lost is None:
                self._lost = OwnershipLostError(f"task {self.task_id}: another node owns it now")
        elif isinstance(outcome, ConflictError):
            if self._lost is None:
                self._lost = Superseded(f"task {self.task_id} was changed elsewhere: {outcome}")
        elif isinstance(outcome, StorageError):
            if starting:
                self._start_error = outcome  # the run starts again later (see serve)
            elif self._write_error is None:
                self._write_error = outcome
        if starting:
            self._started(outcome)

    def _started(self, outcome: object) -> None:
        """The draft holding a START is done (see ``_start_run``): let the
        lock go and, if the store refused it, end the run at once (a lost
        task's actor then stops; a failed write has the run start again
        later, as a refused awaited START would)."""
        self._start_draft = None
        if not isinstance(outcome, TaskWriteResult) and self._run_scope is not None:
            self._run_scope.cancel()
        self._lock.release()

    async def _commit(self, expect: frozenset[TaskState], **parts: Any) -> TaskWriteResult:
        """Write parts durably: return once the draft that holds them committed.

        Raises:
            OwnershipLostError, Superseded: the write was fenced off or
                compare-and-set failed (the actor must stop).
            StorageError: the store failed to keep this write.
        """
        draft = self._add(expect, **parts)
        await draft.wait_quietly()
        return self._committed(draft)

    def _committed(self, draft: TaskDraft) -> TaskWriteResult:
        """The result of a draft that is done; raise what refused it.

        Not what refused an earlier fire-and-forget write: once this one
        committed, the caller first keeps what it wrote (a step result it
        must not run again, an inbox item consumed), then a write of the run
        calls ``_raise_lost_write``. A transition or a message's write never
        does: raising then would report a failure for a change that was made
        (to a message's sender, who might send it again) or crash the actor
        at a run's end; ``_complete`` checks before it writes.
        """
        try:
            outcome = draft.outcome_nowait()
        except StorageError as refusal:
            if self._lost is not None:
                raise self._lost from refusal
            self._write_error = None
            raise
        if self._lost is not None:
            raise self._lost from None
        assert isinstance(outcome, TaskWriteResult)
        return outcome

    def _raise_lost_write(self) -> None:
        """Raise (once) what refused an earlier fire-and-forget write of the run:
        the run fails with it (and is retried by its policy) rather than going
        on as if it had been written."""
        error, self._write_error = self._write_error, None
        if error is not None:
            raise error

    async def _transition(
        self,
        command: Command,
        data: dict[str, Any] | None = None,
        *,
        events: Sequence[EventLike] = (),
        **fields: Any,
    ) -> TaskWriteResult | None:
        """Move the task (lock held); None for a no-op. Raises the lifecycle's errors."""
        draft = self._move(command, data, events, fields)
        if draft is None:
            return None
        # (_commit, inline: a parked transition holds one coroutine less)
        await draft.wait_quietly()
        return self._committed(draft)

    def _move(
        self,
        command: Command,
        data: dict[str, Any] | None,
        events: Sequence[EventLike],
        fields: dict[str, Any],
    ) -> TaskDraft | None:
        """Add a transition to the draft (lock held): the draft, or None for a no-op."""
        old = self.state
        new = transition(old, command, self.task_id)
        if new is old:
            return None
        state_event = ("state", state_data(old, new, data))
        return self._add(ONLY[old], state=new, events=(*events, state_event), **fields)

    def _queue(self, **parts: Any) -> None:
        """Add a fire-and-forget part (its failure is seen at the next commit)."""
        try:
            self._add(RUNNING, **parts)
        except StorageError:
            return  # the store is closing: the run is about to be cancelled

    def _remember(
        self, index: int, kind: str, name: str, value: str, run: int | None = None
    ) -> None:
        """Keep a journal entry that is (or is being) stored."""
        self.journal[index] = (kind, name, value, self.run if run is None else run)
        if kind == "spawn":
            self._spawns = True
        if index >= self.journal_end:
            self.journal_end = index + 1

    def _drop_events(self) -> tuple[NewEvent, ...]:
        """The ``request_dropped`` events of a task that ends with an inbox."""
        return tuple(runtime_event("request_dropped", {"inbox_id": item.id}) for item in self.inbox)

    # -- runs and the table ------------------------------------------------------
    def _end_run(self) -> None:
        """Cancel the current run, or forget the one about to start (a message
        handled before it began); its state change is written by the caller,
        who sets ``_next`` after this if another run is to follow."""
        self._next = None
        if self._run_scope is not None:
            self._run_scope.cancel()

    def _rearm(self) -> None:
        """After a message whose write the store refused: the task has not
        moved, but the message may have ended its run already (Cancel, STOP
        and interrupts cancel the run before they write). A task still
        pending or running with no run going on gets its run again (replayed
        from its journal), as after a recovery."""
        if self.state not in ACTIVE_STATES or self._next is not None:
            return
        scope = self._run_scope
        if scope is None or scope.cancel_called:
            self._next = Request(decode(self.record.input), self.run)

    def _stop(self) -> None:
        self._stopped = True
        self.runtime.forget(self.task_id, self)

    def _give_slot_back(self) -> None:
        if self.holds_slot:
            self.holds_slot = False
            slots = self.runtime.run_slots
            assert slots is not None
            slots.release()
