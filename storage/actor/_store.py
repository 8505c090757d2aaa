"""The store client: what ``rt.store`` is.

It owns a backend, the storage actor that writes to it, a small pool of
reader threads for a blocking backend, and in-process publish/subscribe.
Where a seed names an operation the client keeps the seed's name and
meaning (``publish_event``, ``subscribe_listen``, ``set_task_state``,
``compare_and_set_state``, ``get_task_state``, ``delete_task_state``,
``update_status``, ``list_pending``, ``list_inflight``,
``aggregate_tokens_by_thread``, ``aclose``).
"""

from __future__ import annotations

import math
import traceback as traceback_module
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio

from .._backend import Backend
from .._clock import Clock, on_virtual_time
from ..model import _codec
from ..model._commands import (
    ClaimTask,
    Command,
    CompareAndSetKeyState,
    CreateResult,
    CreateTask,
    DeleteKeyState,
    RegisterNode,
    ReleaseTasks,
    RemoveNode,
    RenewLeases,
    SetDeterministicValue,
    SetKeyState,
    SetWorkflowData,
    TaskWrite,
    TaskWriteResult,
    UpdateStatus,
)
from ..model._errors import RecordNotFoundError, StorageClosedError
from ..model._records import (
    ExceptionRecord,
    InboxItem,
    JournalEntry,
    NewEvent,
    NodeRecord,
    StoredEvent,
    TaskFilter,
    TaskRecord,
    TaskState,
    UsageRecord,
)
from ..model._validate import check_int, check_json, check_text
from ._pending import PendingWrite, TaskDraft
from ._writer import CommitListener, StorageActor

T = TypeVar("T")

_MISSING: Any = object()


class Subscription:
    """Messages published on a channel, in order, from when it was opened.

    Use ``async with`` or call ``aclose()``; iterating ends when closed.
    """

    def __init__(self, store: Store, channel: str) -> None:
        self._store = store
        self.channel = channel
        self._send, self._receive = trio.open_memory_channel[str](math.inf)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> str:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        """Stop receiving. Idempotent."""
        self._store._unsubscribe(self)
        self._send.close()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class Store:
    """Client of one store. Made by ``storage.open``; see the module docstring."""

    def __init__(
        self, backend: Backend, clock: Clock, *, readers: int = 4, threads: bool = True
    ) -> None:
        self.backend = backend
        self.clock = clock
        #: Whether blocking backend calls go to worker threads (else inline).
        self.threaded = backend.blocking and threads
        self._writer = StorageActor(backend, clock, threads=threads)
        #: ``open_draft(task_id, epoch, expect)``: queue a TaskWrite that its
        #: owner may extend until the storage actor takes it (see
        #: ``TaskDraft``): how a task actor coalesces its writes. (The
        #: storage actor's own method: a task actor calls it for each write.)
        self.open_draft: Callable[[str, int | None, frozenset[TaskState] | None], TaskDraft] = (
            self._writer.open_draft
        )
        self._read_limiter = trio.CapacityLimiter(readers)
        self._channels: dict[str, set[Subscription]] = {}
        self._closed = False

    # -- writes ------------------------------------------------------------
    async def execute(self, command: Command) -> Any:
        """Apply one command; return its outcome or raise its StorageError.

        Returns once the command's batch is durable. A queued command is
        applied even if the caller is cancelled meanwhile.
        """
        return await self._writer.execute(command)

    def execute_nowait(self, command: Command, *, urgent: bool = False) -> PendingWrite:
        """Queue a command without waiting (its order among writes is kept).

        ``urgent`` puts it ahead of every write waiting (and behind earlier
        urgent ones): for commands whose effect does not depend on what waits,
        such as claims and lease renewals.
        """
        if urgent:
            return self._writer.submit_urgent(command)
        return self._writer.submit_nowait(command)

    def add_commit_listener(self, listener: CommitListener) -> Callable[[], None]:
        """Call ``listener(events)`` with each committed batch's events, in
        commit order, before the writers are answered. Returns a remover."""
        return self._writer.add_commit_listener(listener)

    def statistics(self) -> dict[str, int]:
        """Batches and writes applied so far, and writes queued now."""
        writer = self._writer
        return {"batches": writer.batches, "writes": writer.writes, "queued": writer.queued}

    @property
    def idle(self) -> bool:
        """Whether no write is queued or being applied."""
        return self._writer.queued == 0 and not self._writer.busy

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise StorageClosedError("the store is closed")
        if self.threaded:
            return await trio.to_thread.run_sync(fn, *args, limiter=self._read_limiter)
        await trio.lowlevel.checkpoint()
        return fn(*args)

    # -- tasks -------------------------------------------------------------
    async def put_task(self, record: TaskRecord, events: Sequence[NewEvent] = ()) -> CreateResult:
        """Insert a task unless its id exists (then return the existing one)."""
        result = await self._writer.submit_nowait(CreateTask(record, tuple(events))).wait()
        assert isinstance(result, CreateResult)
        return result

    async def write(self, command: TaskWrite) -> TaskWriteResult:
        """Apply a fenced task write; see TaskWrite."""
        result: TaskWriteResult = await self.execute(command)
        return result

    async def get_task(self, task_id: str) -> TaskRecord | None:
        check_text(task_id=task_id)
        return await self._read(self.backend.get_task, task_id)

    async def list_tasks(
        self,
        *,
        user_id: str | None = None,
        thread_id: str | None = None,
        parent_id: str | None = None,
        states: Sequence[TaskState] | None = None,
        name: str | None = None,
        limit: int | None = None,
        owner: str | None = None,
    ) -> list[TaskRecord]:
        """Tasks matching every given filter, oldest first (``owner``: the
        node holding their lease)."""
        check_text(
            user_id=user_id, thread_id=thread_id, parent_id=parent_id, name=name, owner=owner
        )
        check_int(limit=limit)
        query = TaskFilter(
            user_id=user_id,
            thread_id=thread_id,
            parent_id=parent_id,
            states=frozenset(states) if states is not None else None,
            name=name,
            limit=limit,
            owner=owner,
        )
        return await self._read(self.backend.list_tasks, query)

    async def list_pending(self) -> list[TaskRecord]:
        """Tasks in state pending."""
        return await self._read(self.backend.list_pending)

    async def list_inflight(self) -> list[TaskRecord]:
        """Tasks still pending or running."""
        return await self._read(self.backend.list_inflight)

    async def list_claimable(self, node_id: str) -> list[TaskRecord]:
        """Pending or running tasks that node_id may claim now."""
        check_text(node_id=node_id)
        return await self._read(self.backend.list_claimable, node_id, self.clock.now())

    async def update_status(
        self, task_id: str, status: TaskState, error: str | None = None
    ) -> bool:
        """Set a task's state (unfenced); False when no such task exists."""
        check_text(task_id=task_id, error=error)
        outcome = await self.execute(UpdateStatus(task_id, status, error))
        return outcome is not None

    # -- ownership and nodes -----------------------------------------------
    async def claim_task(
        self,
        task_id: str,
        node_id: str,
        lease: float,
        states: Iterable[TaskState] | None = None,
    ) -> TaskRecord:
        """Own a task for ``lease`` seconds; the epoch grows. See ClaimTask."""
        check_text(task_id=task_id, node_id=node_id)
        record: TaskRecord = await self.execute(
            ClaimTask(
                task_id,
                node_id,
                self.clock.now() + lease,
                frozenset(states) if states is not None else None,
            )
        )
        return record

    async def renew_leases(self, node_id: str, lease: float) -> int:
        """Extend the node's lease and its tasks' leases; returns how many tasks."""
        check_text(node_id=node_id)
        # Ahead of the queue: a backlog of writes must not let the leases lapse.
        pending = self._writer.submit_urgent(RenewLeases(node_id, self.clock.now() + lease))
        count = await pending.wait()
        assert isinstance(count, int)
        return count

    async def release_tasks(self, node_id: str, task_ids: Sequence[str] | None = None) -> int:
        """Let go of the node's tasks (all when task_ids is None)."""
        check_text(node_id=node_id)
        count: int = await self.execute(
            ReleaseTasks(node_id, tuple(task_ids) if task_ids is not None else None)
        )
        return count

    async def register_node(self, node_id: str, lease: float, info: Any = None) -> None:
        check_text(node_id=node_id)
        check_json(info=info)
        now = self.clock.now()
        await self.execute(
            RegisterNode(NodeRecord(node_id, now, now + lease, _codec.encode(info or {})))
        )

    async def remove_node(self, node_id: str) -> None:
        check_text(node_id=node_id)
        await self.execute(RemoveNode(node_id))

    async def list_nodes(self) -> list[NodeRecord]:
        """Nodes whose lease holds now."""
        return await self._read(self.backend.list_nodes, self.clock.now())

    # -- history, results, journal -------------------------------------------
    async def read_events(
        self, task_id: str, after: int = 0, limit: int | None = None
    ) -> list[StoredEvent]:
        """A task's events with seq > after, in seq order."""
        check_text(task_id=task_id)
        check_int(after=after, limit=limit)
        return await self._read(self.backend.read_events, task_id, after, limit)

    async def get_result(self, task_id: str) -> Any:
        """The stored result of a task.

        Raises:
            RecordNotFoundError: no result is stored for the task.
        """
        check_text(task_id=task_id)
        text = await self._read(self.backend.get_result, task_id)
        if text is None:
            raise RecordNotFoundError(task_id)
        return _codec.decode(text)

    async def set_result(self, task_id: str, result: Any) -> None:
        """Store a result for a task (unfenced)."""
        check_text(task_id=task_id)
        check_json(result=result)
        await self.write(TaskWrite(task_id, result=_codec.encode(result)))

    async def get_exception(self, task_id: str) -> ExceptionRecord | None:
        """The stored exception of a task, if any."""
        check_text(task_id=task_id)
        return await self._read(self.backend.get_exception, task_id)

    async def set_exception(self, task_id: str, exception: BaseException | ExceptionRecord) -> None:
        """Store an exception for a task (unfenced): type, message, traceback."""
        check_text(task_id=task_id)
        if isinstance(exception, BaseException):
            exception = exception_record(exception)
        await self.write(TaskWrite(task_id, exception=exception))

    async def read_journal(self, task_id: str) -> list[JournalEntry]:
        check_text(task_id=task_id)
        return await self._read(self.backend.read_journal, task_id)

    async def list_inbox(self, task_id: str) -> list[InboxItem]:
        check_text(task_id=task_id)
        return await self._read(self.backend.list_inbox, task_id)

    async def read_journals(self, task_ids: Sequence[str]) -> dict[str, list[JournalEntry]]:
        """The journals of many tasks in a few queries (recovery); id -> entries."""
        return await self._read(self.backend.read_journals, list(task_ids))

    async def list_inboxes(self, task_ids: Sequence[str]) -> dict[str, list[InboxItem]]:
        """The inboxes of many tasks in a few queries (recovery); id -> items."""
        return await self._read(self.backend.list_inboxes, list(task_ids))

    async def record_usage(self, usage: UsageRecord) -> None:
        """Store a usage report (ignored if its (task_id, key) is stored already)."""
        await self.write(TaskWrite(usage.task_id, usage=(usage,)))

    async def aggregate_tokens_by_thread(
        self, thread_id: str, include_active: bool = False, *, user_id: str | None = None
    ) -> dict[str, Any]:
        """Token usage of a thread: total_tokens, total_input_tokens,
        total_output_tokens, total_runs, by_model, by_caller. Only finished
        tasks count unless include_active; only ``user_id``'s tasks when given."""
        check_text(thread_id=thread_id, user_id=user_id)
        return await self._read(
            self.backend.aggregate_tokens_by_thread, thread_id, include_active, user_id
        )

    # -- keyed state with TTL (the interrupt backend) ---------------------------
    async def set_task_state(self, key: str, state: TaskState, ttl: float | None = 3600) -> None:
        """Set the state of ``key``, expiring after ``ttl`` seconds (trio's clock)."""
        check_text(key=key)
        await self.execute(SetKeyState(key, state.value, ttl))

    async def compare_and_set_state(
        self,
        key: str,
        new_state: TaskState,
        expected_state: TaskState,
        negate: bool = False,
        ttl: float | None = 3600,
    ) -> bool:
        """Atomically set ``key`` to new_state if its state is expected_state
        (or, with negate, is not). A missing or expired key has no state."""
        check_text(key=key)
        changed: bool = await self.execute(
            CompareAndSetKeyState(key, new_state.value, expected_state.value, negate, ttl)
        )
        return changed

    async def get_task_state(self, key: str) -> TaskState | None:
        """The state of ``key``; None when missing or expired."""
        check_text(key=key)
        value = await self._read(self.backend.get_key_state, key, self.clock.now())
        return TaskState(value) if value is not None else None

    async def delete_task_state(self, key: str) -> None:
        check_text(key=key)
        await self.execute(DeleteKeyState(key))

    # -- workflow data and deterministic values ---------------------------------
    async def set_workflow_data(self, workflow_id: str, key: str, value: Any) -> None:
        check_text(workflow_id=workflow_id, key=key)
        check_json(value=value)
        await self.execute(SetWorkflowData(workflow_id, key, _codec.encode(value)))

    async def get_workflow_data(self, workflow_id: str, key: str, default: Any = None) -> Any:
        check_text(workflow_id=workflow_id, key=key)
        text = await self._read(self.backend.get_workflow_data, workflow_id, key)
        return default if text is None else _codec.decode(text)

    async def set_workflow_deterministic_value(
        self, workflow_id: str, key: str, value: Any
    ) -> None:
        check_text(workflow_id=workflow_id, key=key)
        check_json(value=value)
        await self.execute(SetDeterministicValue(workflow_id, key, _codec.encode(value)))

    async def get_workflow_deterministic_value(self, workflow_id: str, key: str) -> Any:
        """The stored value, or None."""
        check_text(workflow_id=workflow_id, key=key)
        text = await self._read(self.backend.get_deterministic_value, workflow_id, key)
        return None if text is None else _codec.decode(text)

    # -- publish / subscribe ------------------------------------------------
    async def publish_event(self, channel: str, message: str) -> None:
        """Deliver message to every current subscriber of channel (this process)."""
        check_text(channel=channel, message=message)
        for subscription in list(self._channels.get(channel, ())):
            try:
                subscription._send.send_nowait(message)
            except trio.ClosedResourceError:
                self._unsubscribe(subscription)
        await trio.lowlevel.checkpoint()

    def subscribe_listen(self, channel: str) -> Subscription:
        """Messages published on channel from now on, as an async iterator."""
        check_text(channel=channel)
        if self._closed:
            raise StorageClosedError("the store is closed")
        subscription = Subscription(self, channel)
        self._channels.setdefault(channel, set()).add(subscription)
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        subscribers = self._channels.get(subscription.channel)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._channels[subscription.channel]

    # -- closing -----------------------------------------------------------
    async def aclose(self) -> None:
        """Apply the writes already queued, then refuse new ones. Idempotent."""
        self._writer.close_nowait()
        await trio.lowlevel.checkpoint()

    def _close_subscriptions(self) -> None:
        self._closed = True
        for subscribers in list(self._channels.values()):
            for subscription in list(subscribers):
                subscription._send.close()
        self._channels.clear()


def exception_record(exc: BaseException, *, retryable: bool = False) -> ExceptionRecord:
    """What a store keeps of an exception: type name, message, traceback text."""
    return ExceptionRecord(
        type=type(exc).__qualname__,
        message=str(exc),
        traceback="".join(traceback_module.format_exception(exc)),
        retryable=retryable,
    )


@asynccontextmanager
async def open_store(
    backend: Backend, *, clock: Clock | None = None, threads: bool | None = None
) -> AsyncIterator[Store]:
    """Open a backend and run its storage actor for the duration of the block.

    On exit the writes already queued are applied, subscriptions end and the
    backend is closed.

    Args:
        backend: the backend to own.
        clock: the runtime clock (default: a new one).
        threads: run a blocking backend's calls in worker threads. The
            default is yes, except on trio's virtual clock (tests), where
            they run inline so that the clock never jumps over a write.
    """
    if threads is None:
        threads = not on_virtual_time()
    if backend.blocking and threads:
        await trio.to_thread.run_sync(backend.open)
    else:
        backend.open()
    try:
        store = Store(backend, clock or Clock(), threads=threads)
        async with trio.open_nursery() as nursery:
            await nursery.start(store._writer.serve)
            try:
                yield store
            finally:
                store._writer.close_nowait()
                store._close_subscriptions()
    finally:
        if backend.blocking and threads:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(backend.close)
        else:
            backend.close()
