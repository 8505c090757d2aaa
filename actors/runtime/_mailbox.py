"""Mailbox: how a task actor handles a message (a Request, a signal, a cancel).

Messages are handled by the task that sends them, holding the actor's
``ActorLock``: the lock is the mailbox (first come, first served), and a
message is handled whole, start to finish, even if its sender is cancelled
meanwhile. A Request is handled by the task's multitask strategy (the
lifecycle's ``on_request`` says which: answer an ask, start a run, queue,
reject, interrupt, rollback). Cancel, STOP and the interrupt strategies
cancel the run's scope *before* they write: the handler is interrupted at
once, inside whatever step it is in. A message that ends the run and starts
another (a STOP with a queued Request, an interrupt, a RESUME) leaves the
next run's Request in ``_next``; the run loop starts it as soon as the old
run has unwound.
"""

from __future__ import annotations

from typing import Any

import trio

from storage import (
    ACTIVE_STATES,
    InboxItem,
    NewEvent,
    StorageError,
    TaskRecord,
    TaskState,
    TaskWriteResult,
    decode,
    encode,
)

from ..core._errors import ActorStoppedError, OwnershipLostError
from ..core._info import TaskInfo
from ..core._lifecycle import Command, RequestAction, on_request, transition
from ..core._messages import CancelTask, Message, Request, SendInput, Signal
from ._drafts import ActorCore, ActorGone, Superseded, has_spawn, runtime_event
from ._fast import RUN

S = TaskState


class Mailbox(ActorCore):
    """The task actor's message handling; see the module docstring."""

    __slots__ = ()

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
            except (OwnershipLostError, Superseded) as exc:
                # The actor's own task sees _lost and ends; callers must not wait for it.
                self._end_run()
                self._stop()
                raise ActorStoppedError(f"task {self.task_id} moved to another owner") from exc
            except StorageError:
                self._rearm()
                raise
            return self.info()

    async def cancelled_elsewhere(self, record: TaskRecord) -> None:
        """Another node cancelled the task (its record says so, and still
        names this node the owner): end the run now, as a Cancel would; the
        actor then settles and lets go of the task."""
        async with self._lock:
            if self._stopped or self.state not in ACTIVE_STATES or record.epoch != self.epoch:
                return
            self.record = record
            self.pause_requested = False
            self._end_run()

    async def _on_input(self, value: Any) -> None:
        action = on_request(self.state, self.strategy, self.task_id)
        text = encode(value)
        # The run the Request feeds: the current one (an answer), else the
        # one it starts.
        answers = action is RequestAction.ANSWER
        received = runtime_event("request_received", {"run": self.run if answers else self.run + 1})
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
            queued = runtime_event("request_queued", {"position": len(self.inbox) + 1})
            result = await self._commit(
                frozenset({self.state}), inbox_add=(text,), events=(queued,)
            )
            self._remember_inbox(result, text)
        else:
            await self._restart_run(action, value, text, received)

    async def _restart_run(
        self, action: RequestAction, value: Any, text: str, received: NewEvent
    ) -> None:
        """The interrupt strategies: STOP the current run and start the
        Request's (with ROLLBACK, without the steps the old run recorded)."""
        old, old_run = self.state, self.run
        stopped = transition(old, Command.STOP, self.task_id)
        running = transition(stopped, Command.START, self.task_id)
        self._end_run()
        self.pause_requested = False
        reason = action.value
        restart = {"from": stopped.value, "to": running.value, "run": old_run + 1}
        events = (
            runtime_event("state", {"from": old.value, "to": stopped.value, "reason": reason}),
            received,
            runtime_event("state", restart),
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
            self._spawns = has_spawn(self.journal)
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
                self.pause_requested = True
                return
            await self._transition(Command.PAUSE)
            self._end_run()
        elif signal is Signal.RESUME:
            if state is S.RUNNING and self.pause_requested:
                self.pause_requested = False
                return
            await self._transition(Command.RESUME)
            self._next = Request(decode(self.record.input), self.run)
        else:
            transition(state, Command.STOP, self.task_id)
            self._end_run()
            self.pause_requested = False
            await self._transition(Command.STOP)
            if self.inbox and self.state is S.STOPPED:
                item = self.inbox[0]
                await self._transition(
                    Command.START,
                    {"run": self.run + 1},
                    events=(runtime_event("request_received", {"run": self.run + 1}),),
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
        self.pause_requested = False
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
            await self.runtime.cancel_children(self.task_id)
