"""TaskActor: one trio task per live task, driving the lifecycle.

Theory of operation
-------------------
An actor owns one task while the task needs it (pending or running, or while
a message for it is handled). It is one trio task (``serve``) that runs the
task's *runs* one after the other: the handler, with its retries, inside the
run's own cancel scope. Between runs, and once the last run is over, it
decides under its lock whether to start the next run, or to end.

Messages (a Request, a signal, a cancel) are handled by the task that sends
them, holding the actor's ``ActorLock``: the lock is the mailbox (first
come, first served), and a message is handled whole, start to finish, even
if its sender is cancelled meanwhile. Everything that moves the task (the
transitions of runs and of messages) happens under that lock, as a write
fenced by the actor's epoch and guarded by a compare-and-set on the state
the actor believes in, committed before the lock is released; so a run
finishing and a Cancel arriving are serialized, and whichever is first
wins. (A run's START is the one such write its writer does not await: the
handler starts at once, the lock stays held until the START commits, and
the START shares a draft with what the run writes first.) Cancel, STOP
and the interrupt strategies cancel the run's scope *before* they write:
the handler is interrupted at once, inside whatever step it is in. A
message that ends the run and starts another (a STOP with a queued
Request, an interrupt, a RESUME) leaves the next run's Request in
``_next``; the actor starts it as soon as the old run has unwound.

Writes that do not move the task (events, progress, usage, step results,
recorded values) are added to the actor's open ``TaskDraft``: one storage
command that grows until the storage actor takes it, so a task costs one
command per batch however much it writes (issue #5). They need no lock: a
run writes only while its scope is live, and whoever ends a run cancels its
scope before writing. A step result is awaited (``_commit``): the draft
that holds it is durable before the next step starts, and with it every
event queued before. Drafts are resolved in commit order, and the record
each returns becomes ``self.record`` right then.

When the last run is over and the task is paused, stopped or waiting for
input, the actor *passivates*: it leaves the runtime's table, lets go of its
ownership and ends; the store holds everything, and the next message
revives the task (a new actor, a new epoch) which replays the handler from
its journal. A terminal task leaves no actor behind either.

If a fenced write is refused (another node took the task over) or the state
was changed under the actor (an unfenced cancel from elsewhere), the actor
stops at once without writing anything else; a caller handling a message
then gets ActorStoppedError.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import trio

from storage import (
    ACTIVE_STATES,
    ConflictError,
    EventLike,
    InboxItem,
    JournalEntry,
    JournalWrite,
    NewEvent,
    StaleEpochError,
    StorageError,
    TaskDraft,
    TaskRecord,
    TaskState,
    TaskWrite,
    TaskWriteResult,
    UsageRecord,
    decode,
    encode,
    exception_record,
)

from ..core._errors import (
    ActorsError,
    ActorStoppedError,
    HeartbeatTimeoutError,
    NonDeterminismError,
    OwnershipLostError,
    TaskTimeoutError,
)
from ..core._info import TaskInfo
from ..core._lifecycle import Command, RequestAction, Strategy, on_request, transition
from ..core._messages import CancelTask, Message, Request, SendInput, Signal
from ._context import KIND, MARK, RUN, VALUE, Entry, TaskContext
from ._lock import ActorLock

if TYPE_CHECKING:
    from storage import Clock, Store

    from ._app import TaskSpec
    from ._runtime import Runtime

log = logging.getLogger("taskactors.actor")

S = TaskState
#: The one-state sets a write expects, made once (each write expects one).
ONLY = {state: frozenset({state}) for state in S}
RUNNING = ONLY[S.RUNNING]


def _event(kind: str, data: Any = None) -> NewEvent:
    return NewEvent(kind, encode({} if data is None else data))


def _has_spawn(journal: dict[int, Entry]) -> bool:
    return any(entry[KIND] == "spawn" for entry in journal.values())


class _Superseded(ActorsError):
    """The task's state was changed by someone else (e.g. cancelled from another node)."""


class ActorGone(ActorsError):
    """The actor stopped before it handled the message: deliver it again (revive)."""


class TaskActor(ActorLock):
    """The live actor of one task. Made and started by the runtime only.

    The actor is its own mailbox lock (an ``ActorLock``; ``self._lock`` is
    the actor itself): one object less per live task.
    """

    __slots__ = (
        "_draft",
        "_fresh",
        "_hb_scope",
        "_lost",
        "_next",
        "_pause_requested",
        "_record",
        "_run_scope",
        "_spawns",
        "_start_draft",
        "_start_error",
        "_stopped",
        "_write_error",
        "epoch",
        "holds_slot",
        "inbox",
        "journal",
        "journal_end",
        "runtime",
        "spec",
        "task_id",
    )

    def __init__(
        self,
        runtime: Runtime,
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
        self._spawns = _has_spawn(self.journal)
        #: The durable inbox as the actor knows it (a tuple: most tasks never
        #: have one, and the empty tuple costs nothing per actor).
        self.inbox: tuple[InboxItem, ...] = tuple(inbox)
        super().__init__()  # the lock: free, nobody waiting
        #: The Request of the run to start once the current one has unwound.
        self._next: Request | None = None
        self._run_scope: trio.CancelScope | None = None
        self._hb_scope: trio.CancelScope | None = None
        self._pause_requested = False
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
                self._lost = _Superseded(f"task {self.task_id} was changed elsewhere: {outcome}")
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
            OwnershipLostError, _Superseded: the write was fenced off or
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
        outcome = draft._outcome
        if self._lost is not None:
            raise self._lost from outcome if isinstance(outcome, StorageError) else None
        if isinstance(outcome, StorageError):
            self._write_error = None
            raise outcome
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
        # (hand-built: the runtime's own events need no encoder)
        head = f'{{"from":"{old.value}","to":"{new.value}"'
        state_event = ("state", f"{head},{encode(data)[1:]}" if data else head + "}")
        return self._add(ONLY[old], state=new, events=(*events, state_event), **fields)

    def _start_run(self) -> None:
        """Move a pending task to running (lock held) without waiting for
        the write: the handler starts at once, and the lock stays held until
        the write commits (``_started`` releases it).

        Messages, and the run's own transitions, wait for the lock as they
        would for an awaited START; the START shares its draft with what
        the run writes first (its first step's result, in the rule): one
        write of a 3-step task's five instead of six (issue #5). A crash
        leaves what it could before: the task pending, its run to start
        over; a step's result is kept only with the START before it (one
        draft, applied or refused whole). If the store refuses the START,
        ``_started`` cancels the run at once.

        Raises:
            StorageError: the store is closed (the lock is still held).
        """
        draft = self._move(Command.START, {"run": self.run}, (), {})
        assert draft is not None
        self._start_draft = draft

    def _queue(self, **parts: Any) -> None:
        """Add a fire-and-forget part (its failure is seen at the next commit)."""
        try:
            self._add(RUNNING, **parts)
        except StorageError:
            return  # the store is closing: the run is about to be cancelled

    def _live(self, ctx: TaskContext) -> bool:
        scope = ctx._scope
        return scope is self._run_scope and not scope.cancel_called

    def emit_nowait(self, ctx: TaskContext, kind: str, data: Any) -> None:
        self.emit_text_nowait(ctx, kind, encode({} if data is None else data))

    def emit_text_nowait(self, ctx: TaskContext, kind: str, text: str) -> None:
        """Queue an event whose data is JSON text already."""
        # _queue without the part: ctx.emit in a loop is the hot path of scenario b.
        if self._live(ctx):
            try:
                draft = self._draft_for(RUNNING)
            except StorageError:
                return  # the store is closing: the run is about to be cancelled
            draft.events.append((kind, text))  # (a plain pair: see storage.EventLike)

    def progress_nowait(self, ctx: TaskContext, done: float, total: float | None) -> None:
        if self._live(ctx):
            self._queue(
                progress=(done, total),
                events=(_event("progress", {"done": done, "total": total}),),
            )

    def usage_nowait(
        self,
        ctx: TaskContext,
        key: str,
        model: str,
        input_tokens: int,
        output_tokens: int,
        caller: str | None,
    ) -> None:
        if not self._live(ctx):
            return
        usage = UsageRecord(
            self.task_id,
            f"{self.run}/{key}",
            model,
            input_tokens,
            output_tokens,
            caller,
            self.record.thread_id,
            self.record.user_id,
        )
        data = {
            "model": model,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "caller": caller,
        }
        self._queue(usage=(usage,), events=(_event("usage", data),))

    def record_nowait(self, ctx: TaskContext, index: int, kind: str, name: str, value: str) -> None:
        """Record a journal entry without waiting (ctx.now/uuid/random)."""
        if not self._live(ctx):
            return
        self._remember(index, kind, name, value)
        self._queue(journal=(JournalWrite(index, kind, name, value, self.run),))

    def _remember(
        self, index: int, kind: str, name: str, value: str, run: int | None = None
    ) -> None:
        self.journal[index] = (kind, name, value, self.run if run is None else run)
        if kind == "spawn":
            self._spawns = True
        if index >= self.journal_end:
            self.journal_end = index + 1

    async def record_entry(
        self,
        ctx: TaskContext,
        index: int,
        kind: str,
        name: str,
        value: str,
        events: Sequence[tuple[str, Any]] = (),
    ) -> None:
        """Record a journal entry durably (a step result, a checkpoint...)."""
        draft = self.record_draft(ctx, index, kind, name, value, [_event(k, d) for k, d in events])
        if draft is None:
            await self._dead_run()
        await draft.wait_quietly()
        self.recorded(ctx, draft, index, kind, name, value)
        # The wait for the store is not a cancel point; a run ended meanwhile stops here.
        await trio.lowlevel.checkpoint_if_cancelled()

    def record_draft(
        self,
        ctx: TaskContext,
        index: int,
        kind: str,
        name: str,
        value: str,
        events: Sequence[EventLike],
    ) -> TaskDraft | None:
        """The first half of ``record_entry``: add the entry to the draft and
        return the draft to wait for; None if the run was ended (its caller
        then calls ``_dead_run``). ``ctx.step`` awaits the two halves itself:
        a waiting task holds a coroutine less."""
        if not self._live(ctx):
            return None
        draft = self._draft_for(RUNNING)
        # (the run's own number: a live run's is the task's, and reading the
        # task's would make the record of the last write)
        draft.add(events, journal=(JournalWrite(index, kind, name, value, ctx.request.run),))
        return draft

    def recorded(
        self, ctx: TaskContext, draft: TaskDraft, index: int, kind: str, name: str, value: str
    ) -> None:
        """The second half of ``record_entry``, once the draft is done: raise
        what refused it, or remember the entry (then raise a lost write of
        the run: the entry is stored, and a replay must not run it again)."""
        self._committed(draft)
        self._remember(index, kind, name, value, ctx.request.run)
        self._raise_lost_write()

    async def _dead_run(self) -> NoReturn:
        # A run that was ended must not record anything more: its scope is
        # cancelled, so this checkpoint raises Cancelled.
        await trio.lowlevel.checkpoint()
        raise ActorStoppedError(f"task {self.task_id}: this run was ended")

    # -- what the context calls --------------------------------------------
    async def safe_point(self, ctx: TaskContext) -> None:
        """Where a requested PAUSE takes effect (step boundaries, ask, checkpoint)."""
        if self._pause_requested and self._live(ctx):
            async with self._lock:
                if self._pause_requested and self.state is S.RUNNING and self._live(ctx):
                    self._pause_requested = False
                    mark = JournalWrite(ctx._cursor, MARK, "pause", "null", self.run)
                    await self._transition(Command.PAUSE, journal=(mark,))
                    self._remember(mark.index, MARK, mark.name, mark.value)
                    self._end_run()
            await trio.lowlevel.checkpoint()

    async def answer_or_suspend(
        self, ctx: TaskContext, index: int, name: str, question: Any, auth: bool
    ) -> Any:
        """Answer an ask from the inbox, or suspend the run until a Request comes."""
        async with self._lock:
            if not self._live(ctx):
                pass
            elif self.inbox:
                item = self.inbox[0]
                await self._commit(
                    RUNNING,
                    journal=(JournalWrite(index, "ask", name, item.input, self.run),),
                    inbox_consume=(item.id,),
                    events=(_event("input_received", {"index": index}),),
                )
                self.inbox = self.inbox[1:]
                self._remember(index, "ask", name, item.input)
                self._raise_lost_write()
                return decode(item.input)
            else:
                data = {"question": decode(encode(question)), "index": index}
                mark = JournalWrite(index, MARK, name, "null", self.run)
                command = Command.ASK_AUTH if auth else Command.ASK_INPUT
                await self._transition(command, data, journal=(mark,))
                self._remember(index, MARK, name, mark.value)
                self._end_run()
        await self._dead_run()
        raise AssertionError("unreachable")

    def heartbeat(self) -> None:
        timeout = self.spec.heartbeat_timeout
        if timeout is not None and self._hb_scope is not None:
            self._hb_scope.deadline = trio.current_time() + timeout

    async def spawn_child(
        self,
        child_id: str,
        name: str,
        input: Any,
        metadata: dict[str, Any] | None,
        strategy: str | None,
    ) -> TaskInfo:
        return await self.runtime._submit_child(
            name,
            input,
            task_id=child_id,
            user_id=self.record.user_id,
            thread_id=self.record.thread_id,
            metadata=metadata,
            strategy=strategy,
            parent_id=self.task_id,
            root_id=self.root_id,
        )

    async def join(self, task_id: str) -> dict[str, Any]:
        slots = self.runtime._slots
        if slots is not None and self.holds_slot:
            # Waiting for another task, the run gives its slot back: under
            # max_running=N, N parents waiting for their children would
            # otherwise leave no slot for the children (a deadlock). It
            # waits its turn (ahead of tasks not started yet) after.
            self._give_slot_back()
            info = await self.runtime.wait(task_id)
            await slots.acquire()
            self.holds_slot = True
        else:
            info = await self.runtime.wait(task_id)
        if info.state is S.COMPLETED:
            return {"result": await self.store.get_result(task_id)}
        stored = await self.store.get_exception(task_id)
        if stored is not None and info.state is S.FAILED:
            return {
                "error": {
                    "type": stored.type,
                    "message": stored.message,
                    "traceback": stored.traceback,
                }
            }
        return {
            "error": {"type": "TaskCancelled", "message": f"task {task_id} was {info.state.value}"}
        }

    # -- runs ----------------------------------------------------------------
    def _end_run(self) -> None:
        """Cancel the current run, or forget the one about to start (a message
        handled before it began); its state change is written by the caller,
        who sets ``_next`` after this if another run is to follow."""
        self._next = None
        if self._run_scope is not None:
            self._run_scope.cancel()

    async def _attempts(self, scope: trio.CancelScope, request: Request) -> None:
        # (take/release, not ``async with``: see ActorLock.take)
        await self._lock.take()
        held = True
        try:
            if request.run != self.run:
                return  # a run decided before a message started another
            if self.state is S.PENDING:
                self._start_run()
                held = False  # the lock goes with the START write (see _start_run)
            elif self.state is not S.RUNNING:
                return
        finally:
            if held:
                self._lock.release()
        spec = self.spec
        attempt = 0
        while True:
            attempt += 1
            ctx = TaskContext(self, request, attempt, scope)
            # Scopes only for the limits this task has: each costs memory and time.
            if spec.timeout is None and spec.heartbeat_timeout is None:
                # (inline: one coroutine less on the stack of every waiting task)
                try:
                    value = await spec.handler(ctx, request)
                except Exception as exc:
                    failure: Exception | None = exc
                else:
                    failure = await self._complete(ctx, value)
            else:
                failure = await self._limited_attempt(ctx)
            if self._lost is not None:
                raise self._lost
            if failure is None:
                return
            retryable = not isinstance(failure, (NonDeterminismError, TaskTimeoutError))
            if retryable and attempt <= spec.retries:
                delay = spec.delay(attempt)
                error = f"{type(failure).__qualname__}: {failure}"
                self._queue(
                    events=(
                        _event("retry", {"attempt": attempt + 1, "delay": delay, "error": error}),
                    )
                )
                await trio.sleep(delay)
                continue
            async with self._lock:
                if not self._live(ctx):
                    return
                text = f"{type(failure).__qualname__}: {failure}"
                await self._transition(
                    Command.FAIL,
                    {"error": text},
                    events=self._drop_events(),
                    exception=exception_record(failure, retryable=retryable),
                    error=text,
                    inbox_clear=bool(self.inbox),
                    release=True,
                )
                self.inbox = ()
            return

    async def _limited_attempt(self, ctx: TaskContext) -> Exception | None:
        """An attempt under the task's timeout and heartbeat limits."""
        spec = self.spec
        with trio.move_on_after(spec.timeout if spec.timeout is not None else math.inf) as limit:
            if spec.heartbeat_timeout is None:
                return await self._attempt(ctx)
            deadline = trio.current_time() + spec.heartbeat_timeout
            with trio.CancelScope(deadline=deadline) as hb_scope:
                self._hb_scope = hb_scope
                outcome = await self._attempt(ctx)
            if hb_scope.cancelled_caught:
                return HeartbeatTimeoutError(
                    f"task {self.task_id} gave no heartbeat for {spec.heartbeat_timeout} s"
                )
            return outcome
        assert limit.cancelled_caught
        return TaskTimeoutError(
            f"task {self.task_id} ran longer than its timeout of {spec.timeout} s"
        )

    async def _attempt(self, ctx: TaskContext) -> Exception | None:
        """One attempt of the handler; None when it completed (and was recorded)."""
        try:
            value = await self.spec.handler(ctx, ctx.request)
        except Exception as exc:
            return exc
        return await self._complete(ctx, value)

    async def _complete(self, ctx: TaskContext, value: Any) -> Exception | None:
        """Record the handler's result: ``completed`` (None), or why it cannot be."""
        try:
            text = encode(value)
        except TypeError as exc:
            return TypeError(f"the result of task {self.task_id}: {exc}")
        try:
            self._raise_lost_write()  # not completed as if everything were written
        except StorageError as error:
            return error
        await self._lock.take()  # (see ActorLock.take)
        try:
            if self._live(ctx) and self._lost is None:
                await self._transition(
                    Command.COMPLETE,
                    events=self._drop_events(),
                    result=text,
                    inbox_clear=bool(self.inbox),
                    release=True,
                )
                self.inbox = ()
        finally:
            self._lock.release()
        return None

    def _drop_events(self) -> tuple[NewEvent, ...]:
        return tuple(_event("request_dropped", {"inbox_id": item.id}) for item in self.inbox)

    # -- the actor's own task ---------------------------------------------------
    async def serve(self) -> None:
        """Run until the task is finished, passivated, or lost. Never raises
        but Cancelled (a crash is logged and the task released)."""
        refusals = 0
        try:
            while not await self._settled():
                request, self._next = self._next, None
                assert request is not None
                # A run: the handler and its retries, in the run's own cancel scope.
                scope = self._run_scope = trio.CancelScope()
                refused: StorageError | None = None
                try:
                    with scope:
                        slots = self.runtime._slots
                        if slots is not None and not self.holds_slot:
                            await slots.acquire()
                            self.holds_slot = True
                        await self._attempts(scope, request)
                except StorageError as exc:
                    refused = exc
                finally:
                    if self._start_error is not None:
                        refused, self._start_error = self._start_error, None
                    if self._run_scope is scope:
                        self._run_scope = None
                        self._hb_scope = None
                    self._give_slot_back()
                if self._lost is not None:
                    raise self._lost
                if refused is None:
                    refusals = 0
                else:
                    refusals += 1
                    await self._run_again_later(refused, refusals)
        except OwnershipLostError:
            log.info("task %s: ownership lost; actor stopped", self.task_id)
        except _Superseded as exc:
            log.info("task %s: %s; actor stopped", self.task_id, exc)
        except Exception:
            log.exception("task %s: actor crashed", self.task_id)
            self.runtime._actor_crashed(self)
        finally:
            self._stop()
            self._give_slot_back()  # (one it was started with and never ran)
            if self._write_error is not None:
                log.warning(
                    "task %s: the store failed to keep some of its events: %s",
                    self.task_id,
                    self._write_error,
                )

    def _give_slot_back(self) -> None:
        if self.holds_slot:
            self.holds_slot = False
            slots = self.runtime._slots
            assert slots is not None
            slots.release()

    async def _run_again_later(self, refused: StorageError, refusals: int) -> None:
        """The store refused a transition of the run (its start, its end):
        the task has not moved. Wait (doubling, up to 30 s on trio's clock),
        then run it again from its journal if it is still pending or running
        with no run going on (a message meanwhile may have moved it)."""
        delay = min(0.5 * 2 ** (refusals - 1), 30.0)
        log.warning(
            "task %s: the store refused a write of its run (%s); it runs again in %.1f s",
            self.task_id,
            refused,
            delay,
        )
        await trio.sleep(delay)
        async with self._lock:
            self._rearm()

    def boot(self) -> None:
        """Decide the actor's first run, as the task stands when it is started:
        called by the runtime before ``serve`` and before any message can be
        handled (a message handled first would make that run stale)."""
        if self.state is S.RUNNING:
            # A run interrupted by a crash, a shutdown or a lost lease goes on here.
            recovered = _event("recovered", {"node": self.runtime.node_id, "epoch": self.epoch})
            self._add(RUNNING, events=(recovered,))
        if self.state in ACTIVE_STATES:
            self._next = Request(decode(self.record.input), self.run)

    async def _settled(self) -> bool:
        """Whether the actor is done: no next run, and it finished or passivated.

        Taken under the lock, so a message being handled decides first.
        """
        async with self._lock:
            if self._lost is not None:
                raise self._lost
            if self._next is not None:
                return False
            if self.state in ACTIVE_STATES:
                raise RuntimeError(f"task {self.task_id}: the run ended while {self.state.value}")
            # Leave the table before the first await: a message that comes
            # meanwhile revives a new actor, or the lifecycle answers it.
            self._stop()
        if self.state.terminal and self._spawns:
            await self.runtime._cancel_children(self.task_id)
        await self._release()
        return True

    def _stop(self) -> None:
        self._stopped = True
        self.runtime._forget(self)

    async def cancelled_elsewhere(self, record: TaskRecord) -> None:
        """Another node cancelled the task (its record says so, and still
        names this node the owner): end the run now, as a Cancel would; the
        actor then settles and lets go of the task."""
        async with self._lock:
            if self._stopped or self.state not in ACTIVE_STATES or record.epoch != self.epoch:
                return
            self.record = record
            self._pause_requested = False
            self._end_run()

    async def _release(self) -> None:
        fresh = self._fresh  # (the last write's owner, without making its record)
        if (self._record.owner if fresh is None else fresh.owner) is None:
            return  # a terminal write let go of it already
        # Refused if someone claimed it meanwhile: then it is theirs to release.
        with contextlib.suppress(StorageError):
            await self.store.write(TaskWrite(self.task_id, epoch=self.epoch, release=True))

    # -- messages ---------------------------------------------------------------
    async def deliver(self, message: Message) -> TaskInfo:
        """Handle a message (in the caller's task, under the actor's lock).

        Cancellation: while waiting for the lock, the message is withdrawn;
        once its handling began, it is finished whatever the caller does (as
        a mailbox would), and the caller sees the cancellation after.

        Raises:
            ActorGone: the actor stopped before it got to the message.
            ActorStoppedError: the task moved to another owner meanwhile.
            ActorsError, StorageError, TypeError: the message was refused.
        """
        async with self._lock:
            if self._stopped:
                raise ActorGone(f"the actor of task {self.task_id} stopped")
            try:
                with trio.CancelScope(shield=True):
                    if isinstance(message, SendInput):
                        await self._on_input(message.input)
                    elif isinstance(message, CancelTask):
                        await self._on_cancel(message.reason)
                    else:
                        await self._on_signal(message.signal)
            except (OwnershipLostError, _Superseded) as exc:
                # The actor's own task sees _lost and ends; callers must not wait for it.
                self._end_run()
                self._stop()
                raise ActorStoppedError(f"task {self.task_id} moved to another owner") from exc
            except StorageError:
                self._rearm()
                raise
            return self.info()

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

    async def _on_input(self, value: Any) -> None:
        action = on_request(self.state, self.strategy, self.task_id)
        text = encode(value)
        # The run the Request feeds: the current one (an answer), else the
        # one it starts.
        answers = action is RequestAction.ANSWER
        received = _event("request_received", {"run": self.run if answers else self.run + 1})
        if answers:
            result = await self._transition(Command.ANSWER, events=(received,), inbox_add=(text,))
            assert result is not None
            self._remember_inbox(result, text)
            self._next = Request(decode(self.record.input), self.run)
        elif action is RequestAction.START:
            await self._transition(
                Command.START,
                {"run": self.run + 1},
                events=(received,),
                input=text,
                run=self.run + 1,
            )
            self._next = Request(value, self.run)
        elif action is RequestAction.QUEUE:
            queued = _event("request_queued", {"position": len(self.inbox) + 1})
            result = await self._commit(
                frozenset({self.state}), inbox_add=(text,), events=(queued,)
            )
            self._remember_inbox(result, text)
        else:
            old, old_run = self.state, self.run
            stopped = transition(old, Command.STOP, self.task_id)
            running = transition(stopped, Command.START, self.task_id)
            self._end_run()
            self._pause_requested = False
            reason = action.value
            events = (
                _event("state", {"from": old.value, "to": stopped.value, "reason": reason}),
                received,
                _event("state", {"from": stopped.value, "to": running.value, "run": old_run + 1}),
            )
            rollback = action is RequestAction.ROLLBACK
            await self._commit(
                frozenset({old}),
                state=running,
                events=events,
                input=text,
                run=old_run + 1,
                discard_run=old_run if rollback else None,
            )
            if rollback:
                self.journal = {i: e for i, e in self.journal.items() if e[RUN] != old_run}
                self._spawns = _has_spawn(self.journal)
                self.journal_end = max(self.journal, default=-1) + 1
            self._next = Request(value, self.run)

    def _remember_inbox(self, result: TaskWriteResult, text: str) -> None:
        """Keep the item a write added to the inbox (the write gave it its id)."""
        item = InboxItem(self.task_id, result.inbox_ids[0], text, self.clock.now())
        self.inbox = (*self.inbox, item)

    async def _on_signal(self, signal: Signal) -> None:
        state = self.state
        if signal is Signal.PAUSE:
            if state is S.RUNNING:
                self._pause_requested = True
                return
            await self._transition(Command.PAUSE)
            self._end_run()
        elif signal is Signal.RESUME:
            if state is S.RUNNING and self._pause_requested:
                self._pause_requested = False
                return
            await self._transition(Command.RESUME)
            self._next = Request(decode(self.record.input), self.run)
        else:
            transition(state, Command.STOP, self.task_id)
            self._end_run()
            self._pause_requested = False
            await self._transition(Command.STOP)
            if self.inbox and self.state is S.STOPPED:
                item = self.inbox[0]
                await self._transition(
                    Command.START,
                    {"run": self.run + 1},
                    events=(_event("request_received", {"run": self.run + 1}),),
                    input=item.input,
                    run=self.run + 1,
                    inbox_consume=(item.id,),
                )
                self.inbox = self.inbox[1:]
                self._next = Request(decode(item.input), self.run)

    async def _on_cancel(self, reason: str | None) -> None:
        if transition(self.state, Command.CANCEL, self.task_id) is self.state:
            return  # cancel of a cancelled task: no-op
        self._end_run()
        self._pause_requested = False
        data = {"reason": reason} if reason else None
        await self._transition(
            Command.CANCEL,
            data,
            events=self._drop_events(),
            inbox_clear=bool(self.inbox),
            release=True,
        )
        self.inbox = ()
        if self._spawns:
            await self.runtime._cancel_children(self.task_id)
