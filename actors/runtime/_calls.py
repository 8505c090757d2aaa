"""ActorCalls: what a handler's TaskContext asks of its task actor.

Each call names the run it comes from by the run's cancel scope: a run that
was ended (its scope cancelled, or another run started since) writes
nothing more. Fire-and-forget writes (events, progress, usage, recorded
values) join the actor's open draft; a journal entry (a step result, a
checkpoint, a spawn, a join) is awaited, in two halves that ``ctx.step``
awaits itself (see ``record_draft``). Children (spawn, join) go through the
supervisor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn

import trio

from storage import (
    EventLike,
    JournalWrite,
    StorageError,
    TaskDraft,
    TaskState,
    UsageRecord,
    decode,
    encode,
)

from ..core._errors import ActorStoppedError
from ..core._info import TaskInfo
from ..core._lifecycle import Command
from ._drafts import ActorCore, runtime_event
from ._fast import MARK, RUNNING

S = TaskState


class ActorCalls(ActorCore):
    """The task actor's side of ``TaskContext``; see the module docstring."""

    __slots__ = ()

    # -- fire-and-forget -----------------------------------------------------
    def emit_nowait(self, scope: trio.CancelScope, kind: str, data: Any) -> None:
        self.emit_text_nowait(scope, kind, encode({} if data is None else data))

    def emit_text_nowait(self, scope: trio.CancelScope, kind: str, text: str) -> None:
        """Queue an event whose data is JSON text already."""
        # _queue without the part: ctx.emit in a loop is the hot path of scenario b.
        if self._live(scope):
            try:
                draft = self._draft_for(RUNNING)
            except StorageError:
                return  # the store is closing: the run is about to be cancelled
            draft.events.append((kind, text))  # (a plain pair: see storage.EventLike)

    def progress_nowait(self, scope: trio.CancelScope, done: float, total: float | None) -> None:
        if self._live(scope):
            self._queue(
                progress=(done, total),
                events=(runtime_event("progress", {"done": done, "total": total}),),
            )

    def usage_nowait(
        self,
        scope: trio.CancelScope,
        key: str,
        model: str,
        input_tokens: int,
        output_tokens: int,
        caller: str | None,
    ) -> None:
        if not self._live(scope):
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
        self._queue(usage=(usage,), events=(runtime_event("usage", data),))

    def record_nowait(
        self, scope: trio.CancelScope, index: int, kind: str, name: str, value: str
    ) -> None:
        """Record a journal entry without waiting (ctx.now/uuid/random)."""
        if not self._live(scope):
            return
        self._remember(index, kind, name, value)
        self._queue(journal=(JournalWrite(index, kind, name, value, self.run),))

    # -- journal entries -----------------------------------------------------
    async def record_entry(
        self,
        scope: trio.CancelScope,
        run: int,
        index: int,
        kind: str,
        name: str,
        value: str,
        events: Sequence[tuple[str, Any]] = (),
    ) -> None:
        """Record a journal entry of run ``run`` durably (a checkpoint, a spawn...)."""
        draft = self.record_draft(
            scope, run, index, kind, name, value, [runtime_event(k, d) for k, d in events]
        )
        if draft is None:
            await self.dead_run()
        await draft.wait_quietly()
        self.recorded(draft, run, index, kind, name, value)
        # The wait for the store is not a cancel point; a run ended meanwhile stops here.
        await trio.lowlevel.checkpoint_if_cancelled()

    def record_draft(
        self,
        scope: trio.CancelScope,
        run: int,
        index: int,
        kind: str,
        name: str,
        value: str,
        events: Sequence[EventLike],
    ) -> TaskDraft | None:
        """The first half of ``record_entry``: add the entry to the draft and
        return the draft to wait for; None if the run was ended (its caller
        then calls ``dead_run``). ``ctx.step`` awaits the two halves itself:
        a waiting task holds a coroutine less."""
        if not self._live(scope):
            return None
        draft = self._draft_for(RUNNING)
        # (the run's own number: a live run's is the task's, and reading the
        # task's would make the record of the last write)
        draft.add(events, journal=(JournalWrite(index, kind, name, value, run),))
        return draft

    def recorded(
        self, draft: TaskDraft, run: int, index: int, kind: str, name: str, value: str
    ) -> None:
        """The second half of ``record_entry``, once the draft is done: raise
        what refused it, or remember the entry (then raise a lost write of
        the run: the entry is stored, and a replay must not run it again)."""
        self._committed(draft)
        self._remember(index, kind, name, value, run)
        self._raise_lost_write()

    async def dead_run(self) -> NoReturn:
        """Stop a run that was ended: it must not record anything more."""
        # Its scope is cancelled, so this checkpoint raises Cancelled.
        await trio.lowlevel.checkpoint()
        raise ActorStoppedError(f"task {self.task_id}: this run was ended")

    # -- safe points and asks ------------------------------------------------
    async def safe_point(self, scope: trio.CancelScope, cursor: int) -> None:
        """Where a requested PAUSE takes effect (step boundaries, ask,
        checkpoint); ``cursor`` is the run's next journal position."""
        if self.pause_requested and self._live(scope):
            async with self._lock:
                if self.pause_requested and self.state is S.RUNNING and self._live(scope):
                    self.pause_requested = False
                    mark = JournalWrite(cursor, MARK, "pause", "null", self.run)
                    await self._transition(Command.PAUSE, journal=(mark,))
                    self._remember(mark.index, MARK, mark.name, mark.value)
                    self._end_run()
            await trio.lowlevel.checkpoint()

    async def answer_or_suspend(
        self, scope: trio.CancelScope, index: int, name: str, question: Any, auth: bool
    ) -> Any:
        """Answer an ask from the inbox, or suspend the run until a Request comes."""
        async with self._lock:
            if not self._live(scope):
                pass
            elif self.inbox:
                item = self.inbox[0]
                await self._commit(
                    RUNNING,
                    journal=(JournalWrite(index, "ask", name, item.input, self.run),),
                    inbox_consume=(item.id,),
                    events=(runtime_event("input_received", {"index": index}),),
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
        await self.dead_run()
        raise AssertionError("unreachable")

    def heartbeat(self) -> None:
        timeout = self.spec.heartbeat_timeout
        if timeout is not None and self.heartbeat_scope is not None:
            self.heartbeat_scope.deadline = trio.current_time() + timeout

    # -- children --------------------------------------------------------------
    async def spawn_child(
        self,
        child_id: str,
        name: str,
        input: Any,
        metadata: dict[str, Any] | None,
        strategy: str | None,
    ) -> TaskInfo:
        return await self.runtime.submit_child(
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
        slots = self.runtime.run_slots
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
