"""Runtime: the API an embedding application calls, and open_runtime.

Why this module is long: it is the public runtime API, one method per
operation of DESIGN.md with its docstring; the node's duties live in _node.py.

Theory of operation
-------------------
``Runtime`` is a ``Node`` (``_node``: the node duties and the table of
actors) with the public API on top. Submitting records a task as pending
durably, then starts its actor (or, under max_running, queues it). A
message for a task (send, signal, cancel) goes to its live actor, which
handles it under its lock, or revives it; a finished task has no actor: the
lifecycle answers for it directly. A cancel of a task another live node
runs is an unfenced compare-and-set. Reads go to the store, but for what
this node holds already.
"""

from __future__ import annotations

import builtins
import contextvars
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

import storage
from storage import (
    INFLIGHT_STATES,
    TERMINAL_STATES,
    ConflictError,
    CreateResult,
    CreateTask,
    LeaseHeldError,
    NewEvent,
    Store,
    TaskRecord,
    TaskState,
    TaskWrite,
    decode,
    encode,
)
from storage.model import check_int, check_json, check_text

from ..core._errors import (
    ActorStoppedError,
    RuntimeClosedError,
    TaskCancelled,
    TaskExists,
    TaskFailed,
    TaskNotFound,
    TaskOwnedElsewhere,
    UnknownTaskName,
)
from ..core._info import TaskEvent, TaskInfo
from ..core._lifecycle import Command, Strategy, on_request, transition
from ..core._messages import CancelTask, Message, SendInput, SendSignal, Signal
from ._actor import ActorGone
from ._app import App
from ._events import AllEventsStream, EventStream, wait_or_poll
from ._fast import STATES, pending_data
from ._ids import default_node_id, new_task_id
from ._node import Node

if TYPE_CHECKING:
    from ._supervisor import Supervisor

__all__ = ["Runtime", "default_node_id", "new_task_id", "open_runtime"]

log = logging.getLogger("taskactors.runtime")

S = TaskState


class Runtime(Node):
    """A running taskactors node. Made by ``open_runtime``."""

    # -- submitting ----------------------------------------------------------
    async def submit(
        self,
        name: str,
        input: Any = None,
        *,
        task_id: str | None = None,
        user_id: str | None = None,
        thread_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        strategy: str | Strategy | None = None,
    ) -> TaskInfo:
        """Record a task as pending (durably), then start its actor.

        A caller-chosen ``task_id`` makes submit idempotent: submitting an id
        that exists returns the existing task unchanged.

        Raises:
            UnknownTaskName: no handler is registered under ``name``.
            TaskExists: task_id belongs to another user's task.
            TypeError: input or metadata is not JSON-serializable.
            RuntimeClosedError: the runtime is closing.
        """
        check_text(name=name, task_id=task_id, user_id=user_id, thread_id=thread_id)
        check_json(input=input, metadata=metadata)
        record, event = self._new_task(
            name, input, task_id, user_id, thread_id, metadata, strategy, None, None
        )
        if task_id is None:
            # A fresh id: nobody can revive or submit this task meanwhile.
            # (The store's put_task, inline: each waiting submit holds two
            # coroutines less.)
            pending = self.store.execute_nowait(CreateTask(record, (event,)))
            await pending.wait_quietly()
            result = pending.outcome_nowait()
            assert isinstance(result, CreateResult)
            return self._started(result, user_id)
        return await self._create(record, event, user_id)

    async def _create(self, record: TaskRecord, event: NewEvent, user_id: str | None) -> TaskInfo:
        """Create a task whose id its caller chose (guarded against a
        concurrent revive or submit of that id) and start it."""
        async with self._starting_guard(record.id):
            return self._started(await self.store.put_task(record, (event,)), user_id)

    async def submit_child(
        self,
        name: str,
        input: Any,
        *,
        task_id: str,
        user_id: str | None,
        thread_id: str | None,
        metadata: dict[str, Any] | None,
        strategy: str | Strategy | None,
        parent_id: str,
        root_id: str,
    ) -> TaskInfo:
        """``submit`` of a child task (for ``ctx.spawn``): listed under its parent."""
        record, event = self._new_task(
            name, input, task_id, user_id, thread_id, metadata, strategy, parent_id, root_id
        )
        return await self._create(record, event, user_id)

    def _new_task(
        self,
        name: str,
        input: Any,
        task_id: str | None,
        user_id: str | None,
        thread_id: str | None,
        metadata: dict[str, Any] | None,
        strategy: str | Strategy | None,
        parent_id: str | None,
        root_id: str | None,
    ) -> tuple[TaskRecord, NewEvent]:
        """The record of a new pending task, and its first event."""
        self._check_open()
        spec = self.app.spec(name)
        chosen = Strategy(strategy) if strategy is not None else spec.strategy
        task_id = task_id or new_task_id()
        now = self.store.clock.now()
        record = TaskRecord(
            id=task_id,
            name=name,
            state=S.PENDING,
            input=encode(input),
            created_at=now,
            updated_at=now,
            user_id=user_id,
            thread_id=thread_id,
            parent_id=parent_id,
            root_id=root_id or task_id,
            metadata=encode(metadata) if metadata else "{}",
            strategy=chosen.value,
            owner=self.node_id,
            lease_expires=now + self.lease,
            epoch=1,
            last_seq=1,  # its first event's (the store then keeps this very record)
        )
        return record, NewEvent("state", pending_data(name))

    def _started(self, result: CreateResult, user_id: str | None) -> TaskInfo:
        """Start the actor of a task just created, or answer for the existing one."""
        if not result.created:
            existing = result.record
            if user_id is not None and existing.user_id != user_id:
                raise TaskExists(existing.id)
            return TaskInfo.from_record(existing)
        self._start_fresh(result.record)
        return TaskInfo.from_record(result.record)

    # -- messages ------------------------------------------------------------
    async def send(self, task_id: str, input: Any, *, user_id: str | None = None) -> TaskInfo:
        """Send a Request (new input) to a task; what it does depends on the
        task's state and strategy (answer an ask, queue, interrupt, ...).

        Raises:
            TaskNotFound, RequestRejected, InvalidTransition (finished task),
            TaskOwnedElsewhere, TypeError (input not JSON-serializable).
        """
        check_text(task_id=task_id, user_id=user_id)
        check_json(input=input)
        encode(input)
        return await self._deliver(task_id, user_id, SendInput(input))

    async def signal(
        self, task_id: str, signal: Signal | str, *, user_id: str | None = None
    ) -> TaskInfo:
        """Send STOP, PAUSE or RESUME to a task.

        PAUSE takes effect at the handler's next safe point (the returned
        info may still say running); PAUSE of a paused task is a no-op.

        Raises:
            TaskNotFound, InvalidTransition (e.g. RESUME of a running task),
            TaskOwnedElsewhere.
        """
        check_text(task_id=task_id, user_id=user_id)
        chosen = Signal(signal)
        return await self._deliver(task_id, user_id, SendSignal(chosen))

    async def cancel(
        self, task_id: str, *, reason: str | None = None, user_id: str | None = None
    ) -> TaskInfo:
        """Cancel a task and its children; recorded before this returns.

        The handler is cancelled at once, inside its current step. Cancel of a
        cancelled task is a no-op.

        Raises:
            TaskNotFound; NotCancelable: the task completed, failed or was rejected.
        """
        check_text(task_id=task_id, reason=reason, user_id=user_id)
        return await self._deliver(task_id, user_id, CancelTask(reason))

    async def _deliver(self, task_id: str, user_id: str | None, message: Message) -> TaskInfo:
        self._check_open()
        live = self._actors.get(task_id)
        if live is None:
            await self._load(task_id, user_id)
        elif user_id is not None and live.record.user_id != user_id:
            # (a live actor holds the record: no read, so a burst of cancels
            # does not queue on the reader threads; a task's user never changes)
            raise TaskNotFound(task_id)
        for _ in range(8):
            try:
                actor = await self._actor_for(task_id)
            except LeaseHeldError as exc:
                if isinstance(message, CancelTask):
                    return await self._cancel_remote(task_id, message.reason)
                raise TaskOwnedElsewhere(task_id, exc.owner) from None
            except UnknownTaskName:
                # An orphan (its handler is not registered here) can still be
                # cancelled: that needs no handler.
                if isinstance(message, CancelTask):
                    return await self._cancel_remote(task_id, message.reason)
                raise
            if actor is None:
                return self._answer_finished(await self._load(task_id, user_id), message)
            try:
                return await actor.deliver(message)
            except (ActorGone, ActorStoppedError):
                self._check_open()
                continue
        raise ActorStoppedError(f"task {task_id}: its actor kept stopping; try again")

    def _answer_finished(self, record: TaskRecord, message: Message) -> TaskInfo:
        """What the lifecycle says to a message for a task with no actor (finished)."""
        if isinstance(message, CancelTask):
            transition(record.state, Command.CANCEL, record.id)
        elif isinstance(message, SendSignal):
            command = {
                Signal.PAUSE: Command.PAUSE,
                Signal.RESUME: Command.RESUME,
                Signal.STOP: Command.STOP,
            }[message.signal]
            transition(record.state, command, record.id)
        elif isinstance(message, SendInput):
            on_request(record.state, Strategy(record.strategy), record.id)
        return TaskInfo.from_record(record)

    async def _cancel_remote(self, task_id: str, reason: str | None) -> TaskInfo:
        """Cancel a task another live node runs: an unfenced compare-and-set.

        The owner's actor is refused at its next write and stops.
        """
        while True:
            record = await self._load(task_id, None)
            if transition(record.state, Command.CANCEL, task_id) is record.state:
                return TaskInfo.from_record(record)
            data: dict[str, Any] = {"from": record.state.value, "to": S.CANCELLED.value}
            if reason:
                data["reason"] = reason
            try:
                result = await self.store.write(
                    TaskWrite(
                        task_id,
                        expect=frozenset({record.state}),
                        state=S.CANCELLED,
                        events=(NewEvent("state", encode(data)),),
                        inbox_clear=True,
                    )
                )
            except ConflictError:
                continue
            await self.store.publish_event(f"taskactors.cancel.{task_id}", reason or "")
            await self.cancel_children(task_id)
            return TaskInfo.from_record(result.record)

    # -- reading ---------------------------------------------------------------
    async def get(self, task_id: str, *, user_id: str | None = None) -> TaskInfo:
        """The task's current info.

        Raises:
            TaskNotFound: no such task (or it belongs to another user).
        """
        check_text(task_id=task_id, user_id=user_id)
        return TaskInfo.from_record(await self._load(task_id, user_id))

    async def list(
        self,
        *,
        user_id: str | None = None,
        thread_id: str | None = None,
        states: Iterable[TaskState | str] | None = None,
        parent_id: str | None = None,
        name: str | None = None,
        limit: int | None = None,
    ) -> list[TaskInfo]:
        """Tasks matching every given filter, oldest first."""
        check_text(user_id=user_id, thread_id=thread_id, parent_id=parent_id, name=name)
        check_int(limit=limit)
        self._check_open()
        records = await self.store.list_tasks(
            user_id=user_id,
            thread_id=thread_id,
            parent_id=parent_id,
            states=[TaskState(s) for s in states] if states is not None else None,
            name=name,
            limit=limit,
        )
        return [TaskInfo.from_record(r) for r in records]

    async def history(
        self, task_id: str, *, after: int = 0, limit: int | None = None, user_id: str | None = None
    ) -> builtins.list[TaskEvent]:
        """The task's committed events with seq > after, in order."""
        check_text(task_id=task_id, user_id=user_id)
        check_int(after=after, limit=limit)
        await self._load(task_id, user_id)
        events = await self.store.read_events(task_id, after, limit)
        return [TaskEvent.from_stored(e) for e in events]

    @asynccontextmanager
    async def subscribe(
        self,
        task_id: str,
        *,
        after: int = 0,
        user_id: str | None = None,
        buffer: int | None = None,
        resume_on_lag: bool = False,
    ) -> AsyncIterator[EventStream]:
        """Watch a task's events: seq after+1, after+2, ... (history, then live).

        Iteration ends after the terminal event (at once for a finished task
        whose history is replayed). A subscriber that falls ``buffer`` events
        behind gets ``SubscriptionLagged(resume_after=N)`` (subscribe again
        with after=N), or with ``resume_on_lag`` reads the gap back from the
        store; it never slows the task or the other subscribers.

        Raises:
            TaskNotFound: no such task (or it belongs to another user).
        """
        check_text(task_id=task_id, user_id=user_id)
        check_int(after=after)
        await self._load(task_id, user_id)
        stream = EventStream(
            self.hub,
            self.store,
            task_id,
            after,
            capacity=buffer,
            resume_on_lag=resume_on_lag,
            remote=self._remote,
        )
        try:
            await stream._open()
            yield stream
        finally:
            stream.close()

    @asynccontextmanager
    async def subscribe_all(
        self, *, user_id: str | None = None, buffer: int | None = None
    ) -> AsyncIterator[AllEventsStream]:
        """Watch the live events of every task (of ``user_id`` when given).

        Only events committed after the call are seen; the stream never ends
        by itself. A subscriber that falls ``buffer`` events behind gets
        ``SubscriptionLagged``: catch up through ``history`` per task.
        """
        check_text(user_id=user_id)
        stream = AllEventsStream(self.hub, self.store, user_id, buffer)
        try:
            yield stream
        finally:
            stream.close()

    async def wait(
        self,
        task_id: str,
        *,
        user_id: str | None = None,
        states: Iterable[TaskState | str] | None = None,
    ) -> TaskInfo:
        """Wait until the task is in one of ``states`` (default: finished)."""
        check_text(task_id=task_id, user_id=user_id)
        wanted = frozenset(TaskState(s) for s in states) if states is not None else TERMINAL_STATES
        reached, _ = await self._wait_for(task_id, user_id, wanted)
        if isinstance(reached, TaskRecord):
            return TaskInfo.from_record(reached)
        return await self.get(task_id)

    async def _wait_for(
        self, task_id: str, user_id: str | None, wanted: frozenset[TaskState]
    ) -> tuple[TaskRecord | TaskState | None, str | None]:
        """Wait until the task is in a state of ``wanted`` or finished: its
        record if it is now, else the state it entered (None: it finished
        in another state); and the result it completed with, if its actor
        here said so at the commit (JSON text; else None).

        The watch of its state changes begins before the task is read, so
        nothing committed after the read is missed and no history is read;
        the task's other events are not even decoded (every ``rt.result``
        comes here).

        Raises:
            TaskNotFound: no such task (or it belongs to another user).
            RuntimeClosedError: the runtime closed meanwhile.
        """
        watch = self.hub.watch_states(task_id)
        try:
            record = self._held_record(task_id, user_id) or await self._load(task_id, user_id)
            if record.state in wanted or record.state.terminal:
                return record, None
            after = record.last_seq  # (what the record says happened already)
            while True:
                for seq, value in watch.take():
                    if seq > after:
                        state = STATES[value]
                        if state in wanted:
                            return state, watch.result
                        if state.terminal:
                            return None, None
                if watch.closed:
                    raise RuntimeClosedError("the runtime closed while this wait went on")
                if await wait_or_poll(watch, self._remote(task_id)):
                    # Run by another process, maybe: its commits are not heard here.
                    record = await self._load(task_id, user_id)
                    if record.state in wanted or record.state.terminal:
                        return record, None
                    after = max(after, record.last_seq)
        finally:
            self.hub.unwatch_states(watch)

    async def result(self, task_id: str, *, user_id: str | None = None) -> Any:
        """Wait for the task to finish and return its result.

        Raises:
            TaskFailed: it failed (carries the original type name, message, traceback).
            TaskCancelled: it was cancelled or rejected.
            TaskNotFound: no such task (or it belongs to another user).
        """
        check_text(task_id=task_id, user_id=user_id)
        reached, text = await self._wait_for(task_id, user_id, TERMINAL_STATES)
        if reached is S.COMPLETED and text is not None:
            return decode(text)  # (what the store keeps: the same text)
        record = reached if isinstance(reached, TaskRecord) else None
        state = record.state if record is not None else reached
        if state is None:  # (it finished: a terminal state is wanted)
            record = await self._load(task_id, user_id)
            state = record.state
        if state is S.COMPLETED:
            return await self.store.get_result(task_id)
        if state is S.FAILED:
            stored = await self.store.get_exception(task_id)
            if stored is not None:
                raise TaskFailed.from_record(task_id, stored)
        if record is None:  # (the error text is the record's)
            record = await self._load(task_id, user_id)
        if record.state is S.FAILED:
            raise TaskFailed(task_id, "Error", record.error or "failed")
        raise TaskCancelled(task_id, record.error)

    async def usage(
        self, thread_id: str, *, include_active: bool = False, user_id: str | None = None
    ) -> dict[str, Any]:
        """Token usage of a thread (see Store.aggregate_tokens_by_thread); with
        ``user_id``, of that user's tasks only."""
        check_text(thread_id=thread_id, user_id=user_id)
        self._check_open()
        return await self.store.aggregate_tokens_by_thread(
            thread_id, include_active, user_id=user_id
        )

    def statistics(self) -> dict[str, Any]:
        """Live actors, tasks waiting for a run slot (max_running) with no
        actor, orphaned tasks, store batches and writes, watches."""
        return {
            "actors": len(self._actors),
            "waiting": len(self.run_slots.waiting) if self.run_slots is not None else 0,
            "orphaned": len(self.orphaned),
            **self.store.statistics(),
            **self.hub.statistics(),
        }

    # -- for the actors ------------------------------------------------------------
    async def cancel_children(self, task_id: str) -> None:
        """Cancel every child of a task that is still in flight (for its actors)."""
        children = await self.store.list_tasks(parent_id=task_id, states=list(INFLIGHT_STATES))
        for child in children:
            try:
                await self.cancel(child.id, reason=f"parent {task_id} ended")
            except (TaskNotFound, RuntimeClosedError, ActorStoppedError, TaskOwnedElsewhere):
                pass
            except Exception:
                log.exception("task %s: could not cancel child %s", task_id, child.id)

    # -- its life: open_runtime ------------------------------------------------------
    async def _serve(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        remove_listener = self.store.add_commit_listener(self.hub.publish)
        try:
            await self.store.register_node(self.node_id, self.lease, {"kind": "taskactors"})
            await self._look_for_others()
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._context = contextvars.copy_context()
                await self._scan()
                nursery.start_soon(self._renew_loop)
                nursery.start_soon(self._scan_loop)
                task_status.started()
                await self._closed.wait()
                self._closing = True
                nursery.cancel_scope.cancel()
        finally:
            self._closing = True
            remove_listener()
            self.hub.close()
            if not self._aborted:
                with trio.CancelScope(shield=True):
                    try:
                        await self.store.release_tasks(self.node_id)
                        await self.store.remove_node(self.node_id)
                    except storage.StorageError:
                        log.exception("could not release this node's tasks on close")

    def _close(self) -> None:
        self._closing = True
        self._closed.set()


if TYPE_CHECKING:

    def _a_runtime_is_a_supervisor(runtime: Runtime) -> Supervisor:
        return runtime  # (checked by mypy: the actors see a Runtime as one)


@asynccontextmanager
async def open_runtime(
    app: App,
    store: str | Store = "memory://",
    *,
    node_id: str | None = None,
    lease: float = 30.0,
    max_running: int | None = None,
    subscriber_buffer: int = 4096,
) -> AsyncIterator[Runtime]:
    """Run a taskactors node for the duration of the block.

    On opening, every in-flight task this node owns (or that no live node
    owns) resumes from its journal. On leaving (normally, by an exception or
    by cancellation), every actor is cancelled, running tasks stay
    ``running`` in the store with their journal, leases are released and the
    store is closed if it was given as a URL.

    Args:
        app: the handlers.
        store: a store URL (``memory://``, ``sqlite:///path``) or an open Store.
        node_id: this node's name; runtimes sharing a store need distinct ones
            (see ``default_node_id``). The default is this process's own, so
            two processes on one host never take each other's tasks. Give a
            stable one (to one process at a time) for a restarted process to
            take its tasks back at once, not when their leases run out.
        lease: seconds a node owns its tasks without renewing (renewed every lease/3).
        max_running: at most this many handler runs at once; the others wait
            for a slot, oldest first. A task submitted here waits ``pending``
            with no actor at all (the store holds it; see ``RunSlots``).
            None: no bound.
        subscriber_buffer: events a subscriber may fall behind before it lags.

    Raises:
        ValueError: max_running is below 1.
    """
    if max_running is not None and max_running < 1:
        raise ValueError(f"max_running must be at least 1 (or None: no bound), not {max_running}")
    async with AsyncExitStack() as stack:
        if isinstance(store, str):
            store = await stack.enter_async_context(storage.open(store))
        runtime = Runtime(
            app,
            store,
            node_id=node_id or default_node_id(),
            lease=lease,
            max_running=max_running,
            subscriber_buffer=subscriber_buffer,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(runtime._serve)
            try:
                yield runtime
            finally:
                runtime._close()
