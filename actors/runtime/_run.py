"""RunLoop: a task actor's own trio task, its runs, their retries, passivation.

Theory of operation
-------------------
The actor's trio task (``serve``) runs the task's *runs* one after the
other: the handler, with its retries, inside the run's own cancel scope.
Between runs, and once the last run is over, it decides under its lock
whether to start the next run, or to end. A run's START is the one
transition its writer does not await (``_start_run``): the handler starts
at once, the lock stays held until the START commits, and the START shares
a draft with what the run writes first.

When the last run is over and the task is paused, stopped or waiting for
input, the actor *passivates* (``_settled``): it leaves the runtime's
table, lets go of its ownership and ends; the store holds everything, and
the next message revives the task (a new actor, a new epoch) which replays
the handler from its journal. A terminal task leaves no actor behind
either. A lost task (``_lost``) ends the loop at once.
"""

from __future__ import annotations

import contextlib
import logging
import math

import trio

from storage import (
    ACTIVE_STATES,
    StorageError,
    TaskState,
    TaskWrite,
    decode,
    encode,
    exception_record,
)

from ..core._errors import (
    HeartbeatTimeoutError,
    NonDeterminismError,
    OwnershipLostError,
    TaskTimeoutError,
)
from ..core._lifecycle import Command
from ..core._messages import Request
from ._calls import ActorCalls
from ._context import TaskContext
from ._drafts import Superseded, runtime_event
from ._fast import RUNNING

log = logging.getLogger("taskactors.actor")

S = TaskState


class RunLoop(ActorCalls):
    """The task actor's own task; see the module docstring."""

    __slots__ = ()

    def boot(self) -> None:
        """Decide the actor's first run, as the task stands when it is started:
        called by the runtime before ``serve`` and before any message can be
        handled (a message handled first would make that run stale)."""
        if self.state is S.RUNNING:
            # A run interrupted by a crash, a shutdown or a lost lease goes on here.
            recovered = runtime_event(
                "recovered", {"node": self.runtime.node_id, "epoch": self.epoch}
            )
            self._add(RUNNING, events=(recovered,))
        if self.state in ACTIVE_STATES:
            self._next = Request(decode(self.record.input), self.run)

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
                        slots = self.runtime.run_slots
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
                        self.heartbeat_scope = None
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
        except Superseded as exc:
            log.info("task %s: %s; actor stopped", self.task_id, exc)
        except Exception:
            log.exception("task %s: actor crashed", self.task_id)
            self.runtime.actor_crashed(self.task_id)
        finally:
            self._stop()
            self._give_slot_back()  # (one it was started with and never ran)
            if self._write_error is not None:
                log.warning(
                    "task %s: the store failed to keep some of its events: %s",
                    self.task_id,
                    self._write_error,
                )

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

    # -- passivation -----------------------------------------------------------
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
            await self.runtime.cancel_children(self.task_id)
        await self._release()
        return True

    async def _release(self) -> None:
        fresh = self._fresh  # (the last write's owner, without making its record)
        if (self._record.owner if fresh is None else fresh.owner) is None:
            return  # a terminal write let go of it already
        # Refused if someone claimed it meanwhile: then it is theirs to release.
        with contextlib.suppress(StorageError):
            await self.store.write(TaskWrite(self.task_id, epoch=self.epoch, release=True))

    # -- a run -------------------------------------------------------------------
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
                    failure = await self._complete(scope, value)
            else:
                failure = await self._limited_attempt(ctx, scope)
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
                        runtime_event(
                            "retry", {"attempt": attempt + 1, "delay": delay, "error": error}
                        ),
                    )
                )
                await trio.sleep(delay)
                continue
            await self._fail(scope, failure, retryable)
            return

    async def _fail(self, scope: trio.CancelScope, failure: Exception, retryable: bool) -> None:
        """Record that the run failed for good (if it was not ended meanwhile)."""
        async with self._lock:
            if not self._live(scope):
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

    async def _limited_attempt(self, ctx: TaskContext, scope: trio.CancelScope) -> Exception | None:
        """An attempt under the task's timeout and heartbeat limits."""
        spec = self.spec
        with trio.move_on_after(spec.timeout if spec.timeout is not None else math.inf) as limit:
            if spec.heartbeat_timeout is None:
                return await self._attempt(ctx, scope)
            deadline = trio.current_time() + spec.heartbeat_timeout
            with trio.CancelScope(deadline=deadline) as hb_scope:
                self.heartbeat_scope = hb_scope
                outcome = await self._attempt(ctx, scope)
            if hb_scope.cancelled_caught:
                return HeartbeatTimeoutError(
                    f"task {self.task_id} gave no heartbeat for {spec.heartbeat_timeout} s"
                )
            return outcome
        assert limit.cancelled_caught
        return TaskTimeoutError(
            f"task {self.task_id} ran longer than its timeout of {spec.timeout} s"
        )

    async def _attempt(self, ctx: TaskContext, scope: trio.CancelScope) -> Exception | None:
        """One attempt of the handler; None when it completed (and was recorded)."""
        try:
            value = await self.spec.handler(ctx, ctx.request)
        except Exception as exc:
            return exc
        return await self._complete(scope, value)

    async def _complete(self, scope: trio.CancelScope, value: object) -> Exception | None:
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
            if self._live(scope) and self._lost is None:
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
