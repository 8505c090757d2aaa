"""The storage actor: the single writer of a store.

Theory of operation
-------------------
Writers put a ``PendingWrite`` in the actor's queue (``submit_nowait``: it
never blocks, so a sync caller such as ``ctx.emit`` can write; the order of
the calls is the order of the writes). The actor takes what is waiting (all of
a short queue, half of a long one: see ``_next_batch``; at most
``max_batch`` commands or about ``max_rows`` events) and hands the batch to
the backend as one transaction, through the ``WriteRunner`` the backend
opens (``Backend.open_write_runner``): a worker thread for a blocking
backend (one wake-up back into trio per batch, ``storage/_worker.py``),
inline for the memory backend. A runner isolates a command that cannot be
applied (issue #17): it fails alone with ``InvalidWriteError``, and the
rest of its batch is applied and answered in order. A backend that can plan
(``PlanningBackend``: SQLite) decides the batch in trio first and only
writes it elsewhere: in the backend's writer process (SQLite's default,
``sqlite/_process.py``: a GIL of its own), or in the worker thread, which
then holds the GIL for little
more than binding its parameters; and the actor decides the next batch
while the one before is written (two batches in hand:
``_serve_pipelined``), so neither trio nor the writer waits for the other
while there is work. After answering a batch the actor lets a few
scheduling rounds pass before taking the next (``_GROUP_ROUNDS``), so that
the writers it woke queue their next writes together. When the batch
returns, it is durable: the actor
first tells the commit listeners (so subscribers see committed events, in
commit order, and only those), then resolves every write of the batch in
order (outcome callbacks run right then, in commit order), then wakes the
writers that wait.

A ``TaskDraft`` (``_pending.py``, with ``PendingWrite`` and the way a
writer parks) is a ``TaskWrite`` that stays open while it waits in the
queue, so that a task's writes coalesce exactly when the store falls
behind (issue #5).

Urgent writes (``submit_urgent``: lease renewals, the claims of a scan) go
before everything queued, so a long backlog never lets the node's leases
lapse, nor delays the tasks a restart resumes.

A write that is queued is always applied, even if its caller is cancelled
while waiting: ``wait`` is not interruptible (the wait is short: one batch),
and the caller learns the truth. When the actor closes, it applies what is
queued, then refuses further writes with ``StorageClosedError``.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import attrs
import trio

from .._backend import Backend, PlanningBackend, WriteRunner, Writing
from .._clock import Clock
from .._isolate import store_failure
from .._worker import open_inline_runner
from ..model._commands import Command, CreateResult, TaskWriteResult
from ..model._errors import BackendUnavailableError, StorageClosedError, StorageError
from ..model._records import StoredEvent, TaskState
from ._pending import PendingWrite, TaskDraft, _QueuedCommand

log = logging.getLogger("taskactors.storage")

CommitListener = Callable[[Sequence[StoredEvent]], None]

#: Commands a planning backend decides between two checkpoints (a few ms).
_DECIDE_SLICE = 512
#: Scheduling rounds the committer lets pass after answering a batch before
#: the next one is taken (see ``StorageActor._commit``).
_GROUP_ROUNDS = 2


@attrs.define
class _Planned:
    """A batch on its way from the deciding task to the committer."""

    batch: list[PendingWrite]
    commands: list[Command]
    #: None: apply it the long way, alone (``alone`` is set when it is done).
    plan: object
    now: float
    alone: trio.Event | None
    #: The planned batch being written (queued to the worker or sent to
    #: the writer process).
    writing: Writing | None = None


class StorageActor:
    """Owns a backend's write side; see the module docstring."""

    def __init__(
        self,
        backend: Backend,
        clock: Clock,
        *,
        max_batch: int = 4096,
        max_rows: int = 50_000,
        threads: bool = True,
    ) -> None:
        self._backend = backend
        self._threaded = backend.blocking and threads
        self._clock = clock
        self._max_batch = max_batch
        self._max_rows = max_rows
        #: A queue this long or shorter is taken whole.
        self._min_split = 128
        self._queue: collections.deque[PendingWrite] = collections.deque()
        self._urgent: collections.deque[PendingWrite] = collections.deque()
        self._sleeping: trio.lowlevel.Task | None = None
        self._listeners: list[CommitListener] = []
        self._closed = False
        #: The batches taken from the queue and not yet applied.
        self._in_hand: list[list[PendingWrite]] = []
        #: Where the backend's writes run, while ``serve`` runs.
        self._runner: WriteRunner | None = None
        self.batches = 0
        self.writes = 0
        # Fault injection (actors.testing): fail the next N writes / hang until.
        self.fail_next = 0
        self.fail_error: StorageError | None = None
        self.hang_until: float | None = None

    def add_commit_listener(self, listener: CommitListener) -> Callable[[], None]:
        """Call ``listener(events)`` after each batch commits; returns a remover."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    @property
    def busy(self) -> bool:
        """Whether a batch is being decided or applied now."""
        return bool(self._in_hand)

    @property
    def queued(self) -> int:
        """Writes waiting for a batch."""
        return len(self._queue) + len(self._urgent)

    def _enqueue(self, pending: PendingWrite, queue: collections.deque[PendingWrite]) -> None:
        if self._closed:
            raise StorageClosedError("the store is closed")
        queue.append(pending)
        sleeping = self._sleeping
        if sleeping is not None:
            self._sleeping = None
            trio.lowlevel.reschedule(sleeping)

    def submit_nowait(self, command: Command) -> PendingWrite:
        """Queue a write without waiting.

        Raises:
            StorageClosedError: the actor is closed.
        """
        pending = _QueuedCommand(command)
        self._enqueue(pending, self._queue)
        return pending

    def submit_urgent(self, command: Command) -> PendingWrite:
        """Queue a write ahead of everything waiting (lease renewals)."""
        pending = _QueuedCommand(command)
        self._enqueue(pending, self._urgent)
        return pending

    def open_draft(
        self, task_id: str, epoch: int | None, expect: frozenset[TaskState] | None
    ) -> TaskDraft:
        """Queue an empty TaskDraft for a task; its owner fills it (see TaskDraft).

        Raises:
            StorageClosedError: the actor is closed.
        """
        draft = TaskDraft(task_id, epoch, expect)
        self._enqueue(draft, self._queue)
        return draft

    async def execute(self, command: Command) -> object:
        """Queue a write and wait until its batch is durable; see PendingWrite.wait."""
        return await self.submit_nowait(command).wait()

    def close_nowait(self) -> None:
        """Refuse new writes; the writes already queued are still applied."""
        if not self._closed:
            self._closed = True
            sleeping = self._sleeping
            if sleeping is not None:
                self._sleeping = None
                trio.lowlevel.reschedule(sleeping)

    def _next_batch(self) -> list[PendingWrite]:
        # Half of a long queue when no other batch is in hand, else all of
        # it. Writers woken by one batch queue their next writes together; a
        # batch that took them all would leave trio idle while it is written,
        # then the writer idle while trio wakes them. Two halves take turns
        # instead: trio handles one while the other is written (issue #5).
        # Once two batches take turns, each takes what its writers queued.
        queued = self.queued
        most = queued if self._in_hand else max(self._min_split, (queued + 1) // 2)
        most = min(self._max_batch, most)
        batch: list[PendingWrite] = []
        rows = 0
        for queue in (self._urgent, self._queue):
            while queue and len(batch) < most and rows < self._max_rows:
                pending = queue.popleft()
                if isinstance(pending, TaskDraft):
                    rows += len(pending.events)
                batch.append(pending)
        return batch

    async def _sleep(self) -> None:
        self._sleeping = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._sleeping = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    # KeyboardInterrupt protected: a Ctrl-C that lands while the actor runs
    # goes to the main task instead, which then closes the store the proper
    # way (queued writes applied, the node's tasks released). Raised in here,
    # it killed the actor first, and every write after it was refused.
    @trio.lowlevel.enable_ki_protection
    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Apply batches until closed and drained. Cancelling it fails what is queued."""
        task_status.started()
        try:
            async with self._open_runner() as self._runner:
                try:
                    if self._threaded and isinstance(self._backend, PlanningBackend):
                        await self._serve_pipelined(self._backend)
                    else:
                        await self._serve_serially()
                finally:
                    self._runner = None
        finally:
            self._closed = True
            error = StorageClosedError("the store was closed before this write was applied")
            for batch in self._in_hand:
                for pending in batch:
                    if not pending.done:
                        pending._resolve(error)
            self._in_hand.clear()
            for queue in (self._urgent, self._queue):
                while queue:
                    queue.popleft()._resolve(error)

    def _open_runner(self) -> AbstractAsyncContextManager[WriteRunner]:
        """The backend's runner (thread, process), or inline in trio when
        the store was opened with ``threads=False`` (or never blocks)."""
        if self._threaded:
            return self._backend.open_write_runner()
        return open_inline_runner(self._backend)

    async def _wait_for_writes(self) -> bool:
        """Wait until a write is queued; False when closed and drained."""
        while not (self._queue or self._urgent):
            if self._closed:
                return False
            await self._sleep()
        return True

    def _take_batch(self) -> list[PendingWrite]:
        batch = self._next_batch()
        self._in_hand.append(batch)
        return batch

    def _done_with(self, batch: list[PendingWrite], outcomes: list[object]) -> None:
        self._in_hand.remove(batch)
        self._finish(batch, outcomes)

    async def _serve_serially(self) -> None:
        """One batch at a time: inline (memory), or in the worker thread."""
        while await self._wait_for_writes():
            batch = self._take_batch()
            commands = [pending._take() for pending in batch]
            outcomes = await self._outcomes(commands, self._run_backend(commands))
            self._done_with(batch, outcomes)

    async def _serve_pipelined(self, backend: PlanningBackend) -> None:
        """Two batches at a time: this task decides the next batch in trio
        while the committer writes the one before it in the worker thread
        (issue #5: the worker no longer waits for trio to decide, nor trio
        for the worker to write). A batch that cannot be planned goes alone:
        it is applied once the one before it is written, and the next is
        decided once it is."""
        send, receive = trio.open_memory_channel[_Planned](0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._commit, receive)
            async with send:
                while await self._wait_for_writes():
                    batch = self._take_batch()
                    commands = [pending._take() for pending in batch]
                    now = self._clock.now()
                    plan = None
                    if not (self.fail_next or self.hang_until is not None):
                        plan = self._plan(backend, commands, now)
                    item = _Planned(batch, commands, plan, now, None)
                    try:
                        if plan is not None:
                            item.writing = await self._decided_and_sent(backend, item)
                        if item.writing is None:
                            item.alone = trio.Event()
                        await send.send(item)
                    except BaseException:
                        if item.writing is not None:
                            # Cancelled with its batch being written: wait
                            # for it, so its writers learn the truth.
                            await self._written(item, item.writing)
                        elif plan is not None:
                            backend.abandon(plan)  # decided, never to be executed
                        raise
                    if item.alone is not None:
                        await item.alone.wait()

    @staticmethod
    def _plan(backend: PlanningBackend, commands: list[Command], now: float) -> object:
        """The backend's plan for a batch; None if it has none, or if
        planning failed (a poisoned command, issue #17: the long way
        isolates it)."""
        try:
            return backend.plan(commands, now)
        except Exception:
            return None

    async def _decided_and_sent(self, backend: PlanningBackend, item: _Planned) -> Writing | None:
        """Decide a plan and start writing it; None, with the plan
        abandoned, if deciding or sending it failed (a poisoned command,
        issue #17: the batch goes the long way, alone, which isolates it)."""
        try:
            await self._decide(backend, item.plan, item.commands)
            assert self._runner is not None
            return await self._runner.send_plan(item.plan, item.commands, item.now)
        except Exception:
            backend.abandon(item.plan)
            return None

    @trio.lowlevel.enable_ki_protection  # (its own task: see serve)
    async def _commit(self, receive: trio.MemoryReceiveChannel[_Planned]) -> None:
        """Answer the batches in order, as the worker writes them (a batch
        that cannot be planned is applied here, alone)."""
        async with receive:
            async for item in receive:
                if item.writing is None:
                    outcomes = await self._outcomes(item.commands, self._run_backend(item.commands))
                    self._done_with(item.batch, outcomes)
                else:
                    await self._written(item, item.writing)
                    # A group-commit window, in scheduling rounds: the writers
                    # just answered take a round or two to queue their next
                    # writes (a finished task's slot goes to a waiting one,
                    # which writes a round later). Taking the next batch at
                    # once would cut their wave in two, and the halves would
                    # no longer take turns with the other wave (issue #5:
                    # batches of 150 and 350 instead of 250 and 250, trio
                    # idle a quarter of the run; 6,300 -> 8,200 tasks/s).
                    for _ in range(_GROUP_ROUNDS):
                        await trio.lowlevel.checkpoint()
                if item.alone is not None:
                    item.alone.set()

    async def _written(self, item: _Planned, writing: Writing) -> None:
        """Wait until a planned batch is written; answer its writers."""
        self._done_with(item.batch, await self._outcomes(item.commands, writing.result()))

    async def _outcomes(
        self, commands: list[Command], running: Awaitable[list[object]]
    ) -> list[object]:
        """The outcomes of a batch being applied; a failure of the store
        fails each command (the runner isolated any command at fault)."""
        try:
            return await running
        except Exception as exc:  # the batch is lost, the actor goes on
            return [store_failure(exc, len(commands))] * len(commands)

    async def _run_backend(self, commands: list[Command]) -> list[object]:
        """Apply a batch the long way (injected faults first, if any)."""
        if self.hang_until is not None:
            await trio.sleep_until(self.hang_until)
            self.hang_until = None
        failed = min(self.fail_next, len(commands))
        self.fail_next -= failed
        error = self.fail_error or BackendUnavailableError("injected write failure")
        outcomes: list[object] = [error] * failed
        rest = commands[failed:]
        if rest:
            assert self._runner is not None
            outcomes.extend(await self._runner.apply(rest, self._clock.now()))
        return outcomes

    async def _decide(
        self, backend: PlanningBackend, plan: object, commands: list[Command]
    ) -> None:
        """Decide a plan in slices, letting trio run between them: a batch of
        thousands of commands never holds the event loop for long. (Cancelled
        or failed half-way, the caller abandons the plan.)"""
        for start in range(0, len(commands), _DECIDE_SLICE):
            if start:
                await trio.lowlevel.checkpoint()
            backend.decide(plan, commands[start : start + _DECIDE_SLICE])

    def _finish(self, batch: list[PendingWrite], outcomes: list[object]) -> None:
        self.batches += 1
        self.writes += len(batch)
        if self._listeners:
            events: list[StoredEvent] = []
            for outcome in outcomes:
                if isinstance(outcome, (TaskWriteResult, CreateResult)) and outcome.events:
                    events.extend(outcome.events)
            if events:
                for listener in list(self._listeners):
                    try:
                        listener(events)
                    except Exception:  # a broken listener must not break the store
                        log.exception("commit listener %r failed", listener)
        for pending, outcome in zip(batch, outcomes, strict=True):
            pending._resolve(outcome)
