"""The runtime: open_runtime(app, store=...) and the Runtime API.

Theory of operation
-------------------
The runtime is a node: it registers itself in the store, renews its lease
and its tasks' leases on trio's clock, and scans for tasks it may own (its
own after a restart, unowned ones, and those of nodes whose lease expired),
claiming each (the epoch grows) and starting its actor. Every actor lives in
the runtime's nursery; the table ``_actors`` maps task ids to live actors.

A message for a task (send, signal, cancel) goes to its live actor, or
revives it: claim, read its journal and inbox, start an actor, deliver. A
finished task has no actor: the lifecycle answers for it directly.

Leaving ``open_runtime`` cancels every actor (a running task stays
``running`` in the store: its journal is its checkpoint), releases this
node's leases so the next open resumes them at once, and closes the store if
the runtime opened it.
"""

from __future__ import annotations

import builtins
import contextlib
import contextvars
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import trio

import storage
from storage import (
    INFLIGHT_STATES,
    TERMINAL_STATES,
    ClaimTask,
    ConflictError,
    CreateResult,
    CreateTask,
    LeaseHeldError,
    NewEvent,
    RecordNotFoundError,
    Store,
    TaskRecord,
    TaskState,
    TaskWrite,
    decode,
    encode,
    quote,
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
from ._actor import ActorGone, TaskActor
from ._app import App
from ._events import AllEventsStream, EventHub, EventStream, wait_or_poll
from ._faults import CrashPoint, Observer, Point
from ._slots import RunSlots

log = logging.getLogger("taskactors.runtime")

S = TaskState
#: Tasks claimed and started together by a scan. Large: the actors of one
#: chunk run (and write) while the next chunk is claimed, and each chunk
#: after the first waited behind them (issue #5, scenario f: 10,000 tasks
#: resumed in 2.6-3.0 s with chunks of 2,000, 1.5-1.7 s with one chunk).
_SCAN_CHUNK = 10_000


def default_node_id() -> str:
    """The node id of a runtime opened without one: ``<host name>-<pid>``.

    Distinct for every process: a node scans for the tasks it owns and takes
    them back at once (what a restarted node with a stable id wants), so two
    live processes with one id, two workers of a web server say, would take
    each other's running tasks at every scan and run their steps twice at
    the same time. A process that crashed leaves its tasks leased; the next
    node resumes them when their leases run out (``lease``); a clean close
    releases them at once.
    """
    return f"{socket.gethostname()}-{os.getpid()}"


def new_task_id() -> str:
    """A fresh task id: 32 hex digits of a UUIDv7 (RFC 9562).

    Its first 48 bits are the wall clock in milliseconds, so ids sort by
    creation time; the store's indexes keyed by task id (events, journal)
    then take the rows of tasks made together side by side, which makes a
    batch of writes touch a few pages instead of one per task (issue #5).
    """
    global _random, _random_at
    if _random_at >= len(_random):
        # One call to the OS for 512 ids (a call per id cost 2% of scenario a).
        _random, _random_at = os.urandom(10 * 512), 0
    bits = int.from_bytes(_random[_random_at : _random_at + 10])
    _random_at += 10
    value = (time.time_ns() // 1_000_000) << 80 | bits
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # variant 10
    return f"{value:032x}"


#: Random bytes for the next ids (10 each), and where the next id's start.
_random = b""
_random_at = 0


def _forget_random() -> None:
    # A forked child must not give the ids its parent gives.
    global _random
    _random = b""


os.register_at_fork(after_in_child=_forget_random)


#: A state's value -> the state (a lookup, where TaskState(value) is a call).
_STATES = {state.value: state for state in TaskState}


class Runtime:
    """A running taskactors node. Made by ``open_runtime``."""

    def __init__(
        self,
        app: App,
        store: Store,
        *,
        node_id: str,
        lease: float,
        max_running: int | None,
        subscriber_buffer: int,
    ) -> None:
        self.app = app
        self.store = store
        self.node_id = node_id
        self.lease = lease
        self.hub = EventHub(subscriber_buffer)
        #: The bound of max_running (None: unbounded); see RunSlots.
        self._slots = (
            RunSlots(max_running, self._start_waiting) if max_running is not None else None
        )
        self._actors: dict[str, TaskActor] = {}
        self._starting: dict[str, trio.Event] = {}
        #: Tasks in flight whose handler is not registered here (id -> record).
        self.orphaned: dict[str, TaskRecord] = {}
        self._nursery: trio.Nursery | None = None
        #: What every actor's task starts from: a copy of the context the
        #: runtime was opened in (see ``_start_actor``).
        self._context: contextvars.Context | None = None
        #: Whether other processes may commit to this store (unheard here).
        #: A backend that does not say is taken to be shared: its waits then
        #: also read the store now and then, rather than hang.
        self._shared = bool(getattr(store.backend, "shared", True))
        #: Whether another live node was registered on the store at the last
        #: look (at open, then at each scan): only then can a task's commits
        #: be made where this node does not hear them.
        self._others = False
        self._closing = False
        self._closed = trio.Event()
        #: Off while a test makes this node look hung (actors.testing.stop_heartbeats).
        self._renewing = True
        #: Fault injection (actors.testing): armed crash points and step observers.
        self._crash_points: builtins.list[CrashPoint] = []
        self._observers: builtins.list[Observer] = []
        self._crashed = False

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

    async def _submit_child(
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
        """``submit`` of a child task (ctx.spawn): listed under its parent."""
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
        # (hand-built: the runtime's own events need no encoder)
        return record, NewEvent("state", f'{{"to":"pending","name":{quote(name)}}}')

    def _started(self, result: CreateResult, user_id: str | None) -> TaskInfo:
        """Start the actor of a task just created, or answer for the existing one."""
        if not result.created:
            existing = result.record
            if user_id is not None and existing.user_id != user_id:
                raise TaskExists(existing.id)
            return TaskInfo.from_record(existing)
        self._start_fresh(result.record)
        return TaskInfo.from_record(result.record)

    def _start_fresh(self, record: TaskRecord) -> None:
        """Start the actor of a task that never ran (pending, no journal, no
        inbox), or, under max_running with no slot free, queue its record."""
        slots = self._slots
        if slots is None:
            self._start_actor(record, (), ())
        elif slots.take_nowait():
            self._start_actor(record, (), ()).holds_slot = True
        else:
            slots.waiting[record.id] = record  # no actor until a slot frees

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
            await self._cancel_children(task_id)
            return TaskInfo.from_record(result.record)

    # -- reading ---------------------------------------------------------------
    async def _load(self, task_id: str, user_id: str | None) -> TaskRecord:
        self._check_open()
        record = await self.store.get_task(task_id)
        if record is None or (user_id is not None and record.user_id != user_id):
            raise TaskNotFound(task_id)
        return record

    def _remote(self, task_id: str) -> bool:
        """Whether the task's commits may be made where this node does not
        hear them: the store is shared with other processes, another live
        node was seen on it, and no actor here runs the task nor waits for a
        run slot. A wait on such a task reads it again every REMOTE_POLL
        seconds."""
        return (
            self._shared
            and self._others
            and not (
                task_id in self._actors
                or (self._slots is not None and task_id in self._slots.waiting)
            )
        )

    async def _look_for_others(self) -> None:
        """Note whether another live node shares the store (see ``_remote``):
        a process alone on its store polls nothing."""
        if self._shared:
            nodes = await self.store.list_nodes()
            others = any(node.node_id != self.node_id for node in nodes)
            if others and not self._others:
                self.hub.wake_all()  # the waits on tasks run elsewhere start to poll
            self._others = others

    def _held_record(self, task_id: str, user_id: str | None) -> TaskRecord | None:
        """The task as this node holds it (committed: its actor's last write,
        or the record of a task waiting for a run slot), if it does and the
        user may see it; None to read it from the store."""
        self._check_open()
        actor = self._actors.get(task_id)
        record = actor.record if actor is not None else None
        if record is None and self._slots is not None:
            record = self._slots.waiting.get(task_id)
        if record is None or (user_id is not None and record.user_id != user_id):
            return None
        return record

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
                        state = _STATES[value]
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
            "waiting": len(self._slots.waiting) if self._slots is not None else 0,
            "orphaned": len(self.orphaned),
            **self.store.statistics(),
            **self.hub.statistics(),
        }

    # -- actors ------------------------------------------------------------------
    @asynccontextmanager
    async def _starting_guard(self, task_id: str) -> AsyncIterator[None]:
        while task_id in self._starting:
            await self._starting[task_id].wait()
        event = trio.Event()
        self._starting[task_id] = event
        try:
            yield
        finally:
            del self._starting[task_id]
            event.set()

    async def _actor_for(self, task_id: str) -> TaskActor | None:
        """The live actor of a task, reviving it if needed; None if it is finished.

        Raises:
            LeaseHeldError: another live node owns the task.
        """
        while True:
            actor = self._actors.get(task_id)
            if actor is not None:
                return actor
            if self._slots is not None and task_id in self._slots.waiting:
                # Waiting for a slot, without an actor: it gets one for the
                # message now (its run, if any, still waits for a slot).
                return self._start_actor(self._slots.waiting.pop(task_id), (), ())
            if task_id in self._starting:
                await self._starting[task_id].wait()
                continue
            async with self._starting_guard(task_id):
                return await self._revive(task_id)

    async def _revive(self, task_id: str) -> TaskActor | None:
        record = await self.store.get_task(task_id)
        if record is None:
            raise TaskNotFound(task_id)
        if record.state.terminal:
            return None
        if record.name not in self.app:
            self.orphaned[task_id] = record
            raise UnknownTaskName(record.name)
        try:
            record = await self.store.claim_task(task_id, self.node_id, self.lease, INFLIGHT_STATES)
        except ConflictError:
            return None  # it finished meanwhile
        journal = await self.store.read_journal(task_id)
        inbox = await self.store.list_inbox(task_id)
        return self._start_actor(record, journal, inbox)

    def _start_actor(self, record: TaskRecord, journal: Any, inbox: Any) -> TaskActor:
        # Closing (or crashed) while this claim was in flight: start nothing.
        self._check_open()
        assert self._nursery is not None
        actor = TaskActor(self, self.app.spec(record.name), record, journal, inbox)
        actor.boot()
        self._actors[record.id] = actor
        # A task spawned by trio starts from a copy of its spawner's
        # context, and an actor is started by whoever comes first: a
        # submitter, a message's sender, or the actor whose run slot it
        # takes, whose handler's context variables it would then see. Every
        # actor starts from the runtime's context instead: a task runs the
        # same whether it started at once, waited for a slot, or was
        # resumed by another process.
        assert self._context is not None
        self._context.run(self._nursery.start_soon, actor.serve)
        return actor

    def _start_waiting(self, record: TaskRecord) -> bool:
        """Start the actor of a task that waited for a slot, handing it the slot."""
        if self._closing:
            return False
        self._start_actor(record, (), ()).holds_slot = True
        return True

    def _forget(self, actor: TaskActor) -> None:
        if self._actors.get(actor.task_id) is actor:
            del self._actors[actor.task_id]

    def _actor_crashed(self, actor: TaskActor) -> None:
        if self._nursery is not None and not self._closing:
            self._nursery.start_soon(self._release_quietly, actor.task_id)

    async def _release_quietly(self, task_id: str) -> None:
        try:
            await self.store.release_tasks(self.node_id, [task_id])
        except storage.StorageError:
            log.exception("task %s: could not release it after its actor crashed", task_id)

    async def _cancel_children(self, task_id: str) -> None:
        children = await self.store.list_tasks(parent_id=task_id, states=list(INFLIGHT_STATES))
        for child in children:
            try:
                await self.cancel(child.id, reason=f"parent {task_id} ended")
            except (TaskNotFound, RuntimeClosedError, ActorStoppedError, TaskOwnedElsewhere):
                pass
            except Exception:
                log.exception("task %s: could not cancel child %s", task_id, child.id)

    # -- fault injection -------------------------------------------------------------
    @property
    def _faults_armed(self) -> bool:
        """Whether a test armed a crash point or a step observer."""
        return bool(self._crash_points or self._observers)

    async def _fault_point(self, point: Point, task_id: str, step: str, index: int) -> None:
        """See actors.runtime._faults; a no-op unless a test armed something."""
        if not (self._crash_points or self._observers):
            return
        for observer in builtins.list(self._observers):
            await observer(point, task_id, step, index)
        for crash in self._crash_points:
            if crash.matches(point, task_id, step):
                self._crash_points.remove(crash)
                crash.fire(task_id, step, index)
                self._crash()
                await trio.sleep_forever()

    def _crash(self) -> None:
        """Stop at once, as if the process died: no more writes, leases kept."""
        if self._crashed:
            return
        self._crashed = True
        self._closing = True
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
        self.hub.close()
        self._closed.set()

    # -- node duties ---------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closing:
            raise RuntimeClosedError("the runtime is closing")

    async def _scan(self) -> None:
        """Claim and start every task this node may own and does not run yet.

        In bulk: the claims of a few thousand tasks share a few commits, and
        their journals and inboxes come in a few queries, so resuming ten
        thousand tasks costs a handful of transactions, not four round trips
        each (issue #5, scenario f).
        """
        # (Oldest first: under max_running, the tasks that waited longest run first.)
        records = await self.store.list_claimable(self.node_id)
        wanted: builtins.list[str] = []
        for record in records:
            if record.id in self._actors or record.id in self._starting:
                continue
            if self._slots is not None and record.id in self._slots.waiting:
                continue  # ours, waiting for a slot
            if record.name not in self.app:
                if record.id not in self.orphaned:
                    log.warning(
                        "task %s: no handler named %r here; left as it is", record.id, record.name
                    )
                self.orphaned[record.id] = record
                continue
            wanted.append(record.id)
        for start in range(0, len(wanted), _SCAN_CHUNK):
            if self._closing:
                return
            await self._revive_many(wanted[start : start + _SCAN_CHUNK])

    async def _revive_many(self, task_ids: builtins.list[str]) -> None:
        """Claim tasks, read their journals and inboxes in bulk, start their actors."""
        guards = {task_id: trio.Event() for task_id in task_ids if task_id not in self._starting}
        self._starting.update(guards)
        try:
            claims = [
                (
                    task_id,
                    self.store.execute_nowait(
                        ClaimTask(
                            task_id,
                            self.node_id,
                            self.store.clock.now() + self.lease,
                            INFLIGHT_STATES,
                        ),
                        # Ahead of the writes of the tasks resumed so far:
                        # the next ones start sooner (a claim is fenced by
                        # state and lease, whatever waits before it).
                        urgent=True,
                    ),
                )
                for task_id in guards
            ]
            claimed: builtins.list[TaskRecord] = []
            for task_id, pending in claims:
                await pending.wait_quietly()
                try:
                    record = pending.outcome_nowait()
                except (LeaseHeldError, ConflictError, RecordNotFoundError):
                    continue  # another node has it, or it finished meanwhile
                except storage.StorageError:
                    log.exception("task %s: could not claim it", task_id)
                    continue
                assert isinstance(record, TaskRecord)
                claimed.append(record)
            ids = [record.id for record in claimed]
            journals = await self.store.read_journals(ids)
            inboxes = await self.store.list_inboxes(ids)
            fresh: builtins.list[TaskRecord] = []
            slots = self._slots
            for record in claimed:
                journal, inbox = journals[record.id], inboxes[record.id]
                if record.state is S.PENDING and not journal and not inbox:
                    fresh.append(record)
                    continue
                # A run that was under way: its actor first, and a slot if free.
                actor = self._start_actor(record, journal, inbox)
                if slots is not None and slots.take_nowait():
                    actor.holds_slot = True
            for record in fresh:
                self._start_fresh(record)  # under max_running, maybe only queued
        finally:
            for task_id, event in guards.items():
                del self._starting[task_id]
                event.set()

    async def _renew_loop(self) -> None:
        while True:
            await trio.sleep(self.lease / 3)
            if not self._renewing:
                continue
            try:
                await self.store.renew_leases(self.node_id, self.lease)
                await self._end_runs_cancelled_elsewhere()
            except storage.StorageError:
                log.exception("could not renew leases")

    async def _end_runs_cancelled_elsewhere(self) -> None:
        """Stop the runs of the tasks another node cancelled while this one
        runs them, and let go of them.

        A cancel from another node is a compare-and-set that leaves this node
        the owner (see ``_cancel_remote``): the run here would go on until
        its next write, which the store refuses, however long its step.
        Checked with each lease renewal: a run stops within ``lease / 3``.
        """
        for record in await self.store.list_tasks(owner=self.node_id, states=[S.CANCELLED]):
            actor = self._actors.get(record.id)
            if actor is not None:
                # (in a task of its own: the renewals never wait for an actor's lock)
                assert self._nursery is not None
                self._nursery.start_soon(actor.cancelled_elsewhere, record)
                continue
            # No actor: one stopped at a refused write, or the task waited
            # for a run slot. Nothing here runs it any more.
            if self._slots is not None:
                self._slots.waiting.pop(record.id, None)
            with contextlib.suppress(storage.StorageError):
                await self.store.write(TaskWrite(record.id, epoch=record.epoch, release=True))

    async def _scan_loop(self) -> None:
        while True:
            await trio.sleep(self.lease / 2)
            try:
                await self._look_for_others()
                await self._scan()
            except storage.StorageError:
                log.exception("could not scan for tasks to own")

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
            if not self._crashed:
                with trio.CancelScope(shield=True):
                    try:
                        await self.store.release_tasks(self.node_id)
                        await self.store.remove_node(self.node_id)
                    except storage.StorageError:
                        log.exception("could not release this node's tasks on close")

    def _close(self) -> None:
        self._closing = True
        self._closed.set()


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
