"""The storage actor: the single writer of a store.

Theory of operation
-------------------
Writers put a ``PendingWrite`` in the actor's mailbox (an unbounded trio
memory channel: ordering is the order of ``send_nowait`` calls, and a sync
caller such as ``ctx.emit`` never blocks). The actor takes the first waiting
write, then everything else already waiting (up to ``max_batch``), and hands
the batch to ``backend.apply`` as one transaction: in the actor's worker
thread for a blocking backend (one wake-up back into trio per batch), inline
for the memory backend. When ``apply`` returns, the batch is durable: the
actor first tells the commit listeners (so subscribers see committed events,
in commit order, and only those), then answers every write of the batch.

A write that is queued is always applied, even if its caller is cancelled
while waiting: callers wait for the answer inside a shielded scope (the
wait is short: one batch). When the actor closes, it applies what is queued,
then refuses further writes with ``StorageClosedError``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import trio

from ._backend import Backend
from ._clock import Clock
from ._commands import Command, CreateResult, TaskWriteResult
from ._errors import BackendUnavailableError, StorageClosedError, StorageError
from ._records import StoredEvent

log = logging.getLogger("taskactors.storage")

CommitListener = Callable[[Sequence[StoredEvent]], None]


class PendingWrite:
    """A queued command and, once its batch is applied, its outcome."""

    __slots__ = ("_done", "_outcome", "command", "on_error")

    def __init__(self, command: Command) -> None:
        self.command = command
        self._done = trio.Event()
        self._outcome: object = None
        #: Called with the StorageError if the write is refused or fails
        #: (lets a fire-and-forget writer learn of it without keeping the write).
        self.on_error: Callable[[StorageError], None] | None = None

    def _resolve(self, outcome: object) -> None:
        self._outcome = outcome
        self._done.set()
        if self.on_error is not None and isinstance(outcome, StorageError):
            self.on_error(outcome)

    @property
    def done(self) -> bool:
        """Whether the batch holding this write has been applied (or refused)."""
        return self._done.is_set()

    def outcome_nowait(self) -> object:
        """The outcome of a done write: its result, or raise its StorageError."""
        assert self._done.is_set()
        if isinstance(self._outcome, StorageError):
            raise self._outcome
        return self._outcome

    async def wait_quietly(self) -> None:
        """Wait (shielded) until the write is applied, without raising its error."""
        with trio.CancelScope(shield=True):
            await self._done.wait()

    async def wait(self) -> object:
        """Wait until the write is applied; return its result or raise its error.

        The wait is shielded from cancellation: a queued write is applied
        whatever the caller does, and the caller learns the truth.
        """
        with trio.CancelScope(shield=True):
            await self._done.wait()
        return self.outcome_nowait()


class StorageActor:
    """Owns a backend's write side; see the module docstring."""

    def __init__(
        self, backend: Backend, clock: Clock, *, max_batch: int = 2048, threads: bool = True
    ) -> None:
        self._backend = backend
        self._threaded = backend.blocking and threads
        self._clock = clock
        self._max_batch = max_batch
        self._send, self._receive = trio.open_memory_channel[PendingWrite](math.inf)
        self._listeners: list[CommitListener] = []
        self._limiter = trio.CapacityLimiter(1)
        self._closed = False
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

    def submit_nowait(self, command: Command) -> PendingWrite:
        """Queue a write without waiting.

        Raises:
            StorageClosedError: the actor is closed.
        """
        if self._closed:
            raise StorageClosedError("the store is closed")
        pending = PendingWrite(command)
        self._send.send_nowait(pending)
        return pending

    async def execute(self, command: Command) -> object:
        """Queue a write and wait until its batch is durable; see PendingWrite.wait."""
        return await self.submit_nowait(command).wait()

    def close_nowait(self) -> None:
        """Refuse new writes; the writes already queued are still applied."""
        if not self._closed:
            self._closed = True
            self._send.close()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Apply batches until closed and drained. Cancelling it fails what is queued."""
        task_status.started()
        batch: list[PendingWrite] = []
        try:
            async for first in self._receive:
                batch = [first]
                while len(batch) < self._max_batch:
                    try:
                        batch.append(self._receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                await self._apply(batch)
                batch = []
        finally:
            self._closed = True
            error = StorageClosedError("the store was closed before this write was applied")
            for pending in batch:
                if not pending.done:
                    pending._resolve(error)
            while True:
                try:
                    self._receive.receive_nowait()._resolve(error)
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break

    async def _inject(self, batch: list[PendingWrite]) -> list[object] | None:
        """Injected faults: hang until a deadline, or refuse the next writes."""
        if self.hang_until is not None:
            await trio.sleep_until(self.hang_until)
            self.hang_until = None
        if not self.fail_next:
            return None
        failed = min(self.fail_next, len(batch))
        self.fail_next -= failed
        error = self.fail_error or BackendUnavailableError("injected write failure")
        outcomes: list[object] = [error] * failed
        if failed < len(batch):
            rest = [pending.command for pending in batch[failed:]]
            outcomes.extend(self._apply_now(rest))
        return outcomes

    def _apply_now(self, commands: list[Command]) -> list[object]:
        try:
            return self._backend.apply(commands, self._clock.now())
        except StorageError as exc:
            return [exc] * len(commands)

    async def _apply(self, batch: list[PendingWrite]) -> None:
        if self.fail_next or self.hang_until is not None:
            injected = await self._inject(batch)
            if injected is not None:
                self._finish(batch, injected)
                return
        commands = [pending.command for pending in batch]
        now = self._clock.now()
        try:
            if self._threaded:
                outcomes = await trio.to_thread.run_sync(
                    self._backend.apply, commands, now, limiter=self._limiter
                )
            else:
                outcomes = self._backend.apply(commands, now)
        except StorageError as exc:
            outcomes = [exc] * len(batch)
        except Exception as exc:  # a driver error: the batch is lost, the actor goes on
            error = BackendUnavailableError(f"batch of {len(batch)} writes failed: {exc!r}")
            error.__cause__ = exc
            outcomes = [error] * len(batch)
        self._finish(batch, outcomes)

    def _finish(self, batch: list[PendingWrite], outcomes: list[object]) -> None:
        self.batches += 1
        self.writes += len(batch)
        events: list[StoredEvent] = []
        for outcome in outcomes:
            if isinstance(outcome, (TaskWriteResult, CreateResult)):
                events.extend(outcome.events)
        if events:
            for listener in list(self._listeners):
                try:
                    listener(events)
                except Exception:  # a broken listener must not break the store
                    log.exception("commit listener %r failed", listener)
        for pending, outcome in zip(batch, outcomes, strict=True):
            pending._resolve(outcome)
