"""TaskActor: one trio task per live task, driving the lifecycle.

Theory of operation
-------------------
An actor owns one task while the task needs it (pending or running, or while
a message for it is handled). It has a mailbox (an unbounded trio channel:
callers never block on a send, and they wait for their reply instead) and a
nursery holding the current *run*: the handler, with its retries, inside its
own cancel scope.

Two trio tasks share the actor: the mailbox loop and the run. Every write that
moves the task goes through ``_commit`` under the actor's lock, as a
``TaskWrite`` fenced by the actor's epoch and guarded by a compare-and-set on
the state the actor believes in; so a run finishing and a Cancel arriving
are serialized, and whichever is first wins (a queued write is always applied
and always answered). Cancel, STOP and the interrupt strategies cancel the
run's scope *before* taking the lock: the handler is interrupted at once,
inside whatever step it is in.

When the run is over and the task is paused, stopped or waiting for input, the
actor *passivates*: it leaves the runtime's table, lets go of its ownership
and ends; the store holds everything, and the next message revives the task
(a new actor, a new epoch) which replays the handler from its journal. A
terminal task leaves no actor behind either.

If a fenced write is refused (another node took the task over) or the state
was changed under the actor (an unfenced cancel from elsewhere), the actor
stops at once without writing anything else; callers waiting on it get
ActorStoppedError.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import trio

from storage import (
    ACTIVE_STATES,
    ConflictError,
    InboxItem,
    JournalEntry,
    JournalWrite,
    NewEvent,
    PendingWrite,
    StaleEpochError,
    StorageError,
    TaskRecord,
    TaskState,
    TaskWrite,
    TaskWriteResult,
    UsageRecord,
    decode,
    encode,
    exception_record,
)

from ._context import MARK, TaskContext
from ._errors import (
    ActorsError,
    ActorStoppedError,
    HeartbeatTimeoutError,
    NonDeterminismError,
    OwnershipLostError,
    TaskTimeoutError,
)
from ._info import TaskInfo
from ._lifecycle import Command, RequestAction, Strategy, on_request, transition
from ._messages import (
    Message,
    Request,
    RunEnded,
    SendInput,
    SendSignal,
    Signal,
    fail_message,
)

if TYPE_CHECKING:
    from storage import Clock, Store

    from ._app import TaskSpec
    from ._runtime import Runtime

log = logging.getLogger("taskactors.actor")

S = TaskState


def _event(kind: str, data: Any = None) -> NewEvent:
    return NewEvent(kind, encode({} if data is None else data))


class _Superseded(ActorsError):
    """The task's state was changed by someone else (e.g. cancelled from another node)."""


class TaskActor:
    """The live actor of one task. Made and started by the runtime only."""

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
        self.record = record
        self.task_id = record.id
        self.epoch = record.epoch
        self.journal: dict[int, JournalEntry] = {entry.index: entry for entry in journal}
        self.journal_end = max(self.journal, default=-1) + 1
        self.inbox: collections.deque[InboxItem] = collections.deque(inbox)
        self.strategy = Strategy(record.strategy)
        self._send, self._receive = trio.open_memory_channel[Message](math.inf)
        self._lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        self._run_scope: trio.CancelScope | None = None
        self._run_token = 0
        self._hb_scope: trio.CancelScope | None = None
        self._pause_requested = False
        self._last_write: PendingWrite | None = None
        self._write_error: StorageError | None = None
        self._lost: ActorsError | None = None
        self.stopped = trio.Event()

    # -- conveniences ------------------------------------------------------
    @property
    def store(self) -> Store:
        return self.runtime.store

    @property
    def clock(self) -> Clock:
        return self.runtime.store.clock

    @property
    def state(self) -> TaskState:
        return self.record.state

    @property
    def root_id(self) -> str:
        return self.record.root_id or self.task_id

    @property
    def run(self) -> int:
        return self.record.run

    def info(self) -> TaskInfo:
        return TaskInfo.from_record(self.record)

    def latest_checkpoint_index(self) -> int | None:
        indexes = [i for i, e in self.journal.items() if e.kind == "checkpoint"]
        return max(indexes) if indexes else None

    def latest_checkpoint(self) -> Any:
        index = self.latest_checkpoint_index()
        return None if index is None else decode(self.journal[index].value)

    # -- mailbox -----------------------------------------------------------
    def send_nowait(self, message: Message) -> None:
        """Put a message in the mailbox.

        Raises:
            trio.ClosedResourceError: the actor has stopped (revive the task).
        """
        self._send.send_nowait(message)

    # -- writing ---------------------------------------------------------------
    def _write(self, expect: frozenset[TaskState] | None = None, **fields: Any) -> TaskWrite:
        return TaskWrite(
            self.task_id,
            epoch=self.epoch,
            expect=expect if expect is not None else frozenset({self.state}),
            **fields,
        )

    async def _commit(self, command: TaskWrite) -> TaskWriteResult:
        """Apply a write for this task and adopt the record it returns."""
        await self._flush()
        try:
            result = await self.store.write(command)
        except StaleEpochError as exc:
            self._lost = OwnershipLostError(f"task {self.task_id}: another node owns it now")
            raise self._lost from exc
        except ConflictError as exc:
            self._lost = _Superseded(f"task {self.task_id} was changed elsewhere: {exc}")
            raise self._lost from exc
        self.record = result.record
        return result

    async def _transition(
        self,
        command: Command,
        data: dict[str, Any] | None = None,
        *,
        events: Sequence[NewEvent] = (),
        **fields: Any,
    ) -> TaskWriteResult | None:
        """Move the task (lock held); None for a no-op. Raises the lifecycle's errors."""
        old = self.state
        new = transition(old, command, self.task_id)
        if new is old:
            return None
        state_event = _event("state", {"from": old.value, "to": new.value, **(data or {})})
        return await self._commit(self._write(state=new, events=(*events, state_event), **fields))

    def _queue(self, command: TaskWrite) -> None:
        """Queue a fire-and-forget write (its failure is seen at the next flush)."""
        try:
            pending = self.store.execute_nowait(command)
        except StorageError:
            return
        pending.on_error = self._on_write_error
        self._last_write = pending

    def _on_write_error(self, error: StorageError) -> None:
        # A ConflictError is an event of a run that a state change already
        # ended: rightly dropped. Anything else fails the next durable call.
        if not isinstance(error, ConflictError) and self._write_error is None:
            self._write_error = error

    def _raise_write_error(self) -> None:
        error, self._write_error = self._write_error, None
        if error is None:
            return
        if isinstance(error, StaleEpochError):
            self._lost = OwnershipLostError(f"task {self.task_id}: another node owns it now")
            raise self._lost from error
        # The store failed to keep an event: the run fails with it (and is
        # retried by its policy) rather than going on as if it were written.
        raise error

    async def _flush(self) -> None:
        """Wait for the queued fire-and-forget writes; raise if one failed.

        The storage actor answers writes in order, so waiting for the last
        one is waiting for all of them.
        """
        last = self._last_write
        if last is not None and not last.done:
            await last.wait_quietly()
        self._raise_write_error()

    def _live(self, ctx: TaskContext) -> bool:
        scope = ctx._scope
        return scope is self._run_scope and not scope.cancel_called

    def emit_nowait(self, ctx: TaskContext, kind: str, data: Any) -> None:
        if self._live(ctx):
            self._queue(self._write(frozenset({S.RUNNING}), events=(_event(kind, data),)))

    def progress_nowait(self, ctx: TaskContext, done: float, total: float | None) -> None:
        if self._live(ctx):
            self._queue(
                self._write(
                    frozenset({S.RUNNING}),
                    progress=(done, total),
                    events=(_event("progress", {"done": done, "total": total}),),
                )
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
        events = (_event("usage", data),)
        self._queue(self._write(frozenset({S.RUNNING}), usage=(usage,), events=events))

    def record_nowait(self, ctx: TaskContext, index: int, kind: str, name: str, value: str) -> None:
        """Record a journal entry without waiting (ctx.now/uuid/random)."""
        if not self._live(ctx):
            return
        self._remember(index, kind, name, value)
        self._queue(
            self._write(
                frozenset({S.RUNNING}), journal=(JournalWrite(index, kind, name, value, self.run),)
            )
        )

    def _remember(self, index: int, kind: str, name: str, value: str) -> None:
        self.journal[index] = JournalEntry(
            self.task_id, index, kind, name, value, self.run, self.clock.now()
        )
        self.journal_end = max(self.journal_end, index + 1)

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
        async with self._lock:
            if self._live(ctx):
                await self._commit(
                    self._write(
                        journal=(JournalWrite(index, kind, name, value, self.run),),
                        events=tuple(_event(k, d) for k, d in events),
                    )
                )
                self._remember(index, kind, name, value)
                return
        await self._dead_run()

    async def _dead_run(self) -> None:
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
                    self._write(
                        journal=(JournalWrite(index, "ask", name, item.input, self.run),),
                        inbox_consume=(item.id,),
                        events=(_event("input_received", {"index": index}),),
                    )
                )
                self.inbox.popleft()
                self._remember(index, "ask", name, item.input)
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
        return await self.runtime._submit(
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
    def _start_run(self, request: Request) -> None:
        assert self._nursery is not None
        self._run_token += 1
        scope = trio.CancelScope()
        self._run_scope = scope
        self._nursery.start_soon(self._run, scope, self._run_token, request)

    def _end_run(self) -> None:
        """Cancel the current run (its state change is written by the caller)."""
        if self._run_scope is not None:
            self._run_scope.cancel()

    async def _run(self, scope: trio.CancelScope, token: int, request: Request) -> None:
        try:
            with scope:
                limiter = self.runtime._run_limiter
                if limiter is None:
                    await self._attempts(scope, request)
                else:
                    async with limiter:
                        await self._attempts(scope, request)
        finally:
            with contextlib.suppress(trio.ClosedResourceError):
                self._send.send_nowait(RunEnded(token))

    async def _attempts(self, scope: trio.CancelScope, request: Request) -> None:
        async with self._lock:
            if self.state is S.PENDING:
                await self._transition(Command.START, {"run": self.run})
            elif self.state is not S.RUNNING:
                return
        attempt = 0
        while True:
            attempt += 1
            ctx = TaskContext(self, request, attempt)
            ctx._scope = scope
            failure = await self._attempt(ctx)
            if self._lost is not None:
                raise self._lost
            if failure is None:
                return
            retryable = not isinstance(failure, (NonDeterminismError, TaskTimeoutError))
            if retryable and attempt <= self.spec.retries:
                delay = self.spec.delay(attempt)
                self._queue(
                    self._write(
                        frozenset({S.RUNNING}),
                        events=(
                            _event(
                                "retry",
                                {
                                    "attempt": attempt + 1,
                                    "delay": delay,
                                    "error": f"{type(failure).__qualname__}: {failure}",
                                },
                            ),
                        ),
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
                self.inbox.clear()
            return

    async def _attempt(self, ctx: TaskContext) -> Exception | None:
        """One attempt of the handler; None when it completed (and was recorded)."""
        spec = self.spec
        with trio.move_on_after(spec.timeout if spec.timeout is not None else math.inf) as limit:
            deadline = (
                trio.current_time() + spec.heartbeat_timeout
                if spec.heartbeat_timeout is not None
                else math.inf
            )
            with trio.CancelScope(deadline=deadline) as hb_scope:
                self._hb_scope = hb_scope
                try:
                    value = await spec.handler(ctx, ctx.request)
                except Exception as exc:
                    return exc
                try:
                    text = encode(value)
                except TypeError as exc:
                    return TypeError(f"the result of task {self.task_id}: {exc}")
                async with self._lock:
                    if self._live(ctx) and self._lost is None:
                        await self._transition(
                            Command.COMPLETE,
                            events=self._drop_events(),
                            result=text,
                            inbox_clear=bool(self.inbox),
                            release=True,
                        )
                        self.inbox.clear()
                return None
            return HeartbeatTimeoutError(
                f"task {self.task_id} gave no heartbeat for {spec.heartbeat_timeout} s"
            )
        assert limit.cancelled_caught
        return TaskTimeoutError(
            f"task {self.task_id} ran longer than its timeout of {spec.timeout} s"
        )

    def _drop_events(self) -> tuple[NewEvent, ...]:
        return tuple(_event("request_dropped", {"inbox_id": item.id}) for item in self.inbox)

    # -- the mailbox loop ----------------------------------------------------
    async def serve(self) -> None:
        """Run until the task is finished, passivated, or lost. Never raises
        (a crash is logged and fails the waiting callers)."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._boot()
                await self._loop()
                nursery.cancel_scope.cancel()
        except* OwnershipLostError:
            log.info("task %s: ownership lost; actor stopped", self.task_id)
        except* _Superseded as group:
            log.info("task %s: %s; actor stopped", self.task_id, group.exceptions[0])
        except* Exception:
            log.exception("task %s: actor crashed", self.task_id)
            self.runtime._actor_crashed(self)
        finally:
            self.runtime._forget(self)
            self._send.close()
            error = ActorStoppedError(f"the actor of task {self.task_id} stopped")
            while True:
                try:
                    fail_message(self._receive.receive_nowait(), error)
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            self.stopped.set()

    def _boot(self) -> None:
        if self.state is S.RUNNING:
            # A run interrupted by a crash, a shutdown or a lost lease goes on here.
            recovered = _event("recovered", {"node": self.runtime.node_id, "epoch": self.epoch})
            self._queue(self._write(events=(recovered,)))
        if self.state in ACTIVE_STATES:
            self._start_run(Request(decode(self.record.input), self.run))

    async def _loop(self) -> None:
        while True:
            if self._run_scope is None and self.state not in ACTIVE_STATES:
                if self.state.terminal:
                    await self._finish()
                    return
                if self._receive.statistics().current_buffer_used == 0:
                    await self._passivate()
                    return
            message = await self._receive.receive()
            await self._dispatch(message)

    async def _passivate(self) -> None:
        self.runtime._forget(self)
        self._send.close()
        await self._release()

    async def _finish(self) -> None:
        # Leave the table before the first await: a finished task has no actor
        # (a message that comes meanwhile revives nothing; the lifecycle answers it).
        self.runtime._forget(self)
        self._send.close()
        if self._spawned():
            await self.runtime._cancel_children(self.task_id)
        await self._release()

    def _spawned(self) -> bool:
        """Whether this task ever spawned a child (its journal says so)."""
        return any(entry.kind == "spawn" for entry in self.journal.values())

    async def _release(self) -> None:
        if self.record.owner is None:
            return  # a terminal write let go of it already
        # Refused if someone claimed it meanwhile: then it is theirs to release.
        with contextlib.suppress(StorageError):
            await self._flush()
            await self.store.write(TaskWrite(self.task_id, epoch=self.epoch, release=True))

    async def _dispatch(self, message: Message) -> None:
        if isinstance(message, RunEnded):
            if message.run_token == self._run_token:
                self._run_scope = None
                self._hb_scope = None
                if self.state is S.RUNNING:
                    raise RuntimeError(f"task {self.task_id}: the run ended while running")
            return
        try:
            async with self._lock:
                if isinstance(message, SendInput):
                    await self._on_input(message.input)
                elif isinstance(message, SendSignal):
                    await self._on_signal(message.signal)
                else:
                    await self._on_cancel(message.reason)
        except (OwnershipLostError, _Superseded):
            message.reply.fail(ActorStoppedError(f"task {self.task_id} moved to another owner"))
            raise
        except (ActorsError, StorageError, TypeError) as exc:
            message.reply.fail(exc)
        else:
            message.reply.resolve(self.info())
        finally:
            # Cancelled mid-way (the runtime is closing): the caller must hear so.
            message.reply.fail(ActorStoppedError(f"the actor of task {self.task_id} stopped"))

    async def _on_input(self, value: Any) -> None:
        action = on_request(self.state, self.strategy, self.task_id)
        text = encode(value)
        received = _event("request_received", {"run": self.run})
        if action is RequestAction.ANSWER:
            result = await self._transition(Command.ANSWER, events=(received,), inbox_add=(text,))
            assert result is not None
            self.inbox.append(InboxItem(self.task_id, result.inbox_ids[0], text, self.clock.now()))
            self._start_run(Request(decode(self.record.input), self.run))
        elif action is RequestAction.START:
            await self._transition(
                Command.START,
                {"run": self.run + 1},
                events=(received,),
                input=text,
                run=self.run + 1,
            )
            self._start_run(Request(value, self.run))
        elif action is RequestAction.QUEUE:
            queued = _event("request_queued", {"position": len(self.inbox) + 1})
            result = await self._commit(self._write(inbox_add=(text,), events=(queued,)))
            self.inbox.append(InboxItem(self.task_id, result.inbox_ids[0], text, self.clock.now()))
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
                self._write(
                    state=running,
                    events=events,
                    input=text,
                    run=old_run + 1,
                    discard_run=old_run if rollback else None,
                )
            )
            if rollback:
                self.journal = {i: e for i, e in self.journal.items() if e.run != old_run}
                self.journal_end = max(self.journal, default=-1) + 1
            self._start_run(Request(value, self.run))

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
            if self._run_scope is None or self._run_scope.cancel_called:
                # (the paused run may still be unwinding: its RunEnded will be stale)
                self._start_run(Request(decode(self.record.input), self.run))
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
                self.inbox.popleft()
                self._start_run(Request(decode(item.input), self.run))

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
        self.inbox.clear()
        if self._spawned():
            await self.runtime._cancel_children(self.task_id)
