"""Live event fan-out: committed events to subscribers, never slowing a task.

Theory of operation
-------------------
The storage actor calls ``EventHub.publish`` with each batch's events right
after the batch commits (and before any writer is answered), so the hub only
ever sees committed events, in commit order. Each subscriber has a ``Watch``:
a bounded buffer that ``publish`` fills without waiting. A watch whose
buffer is full is marked *lagged* and stops buffering: the task and the other
subscribers never wait for it.

``EventStream`` joins history and live events without a gap: it registers
its watch first, then reads the history after ``after`` from the store, then
drains the watch, skipping what it already yielded (an event committed
between the two steps shows up in both; it is yielded once, by seq). A
lagged stream either raises ``SubscriptionLagged(resume_after=last seq)``
or, with ``resume_on_lag``, reads the missing events back from the store and
goes on: either way nothing is lost.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import trio

from storage import StoredEvent

from ._errors import RuntimeClosedError, SubscriptionLagged
from ._info import TaskEvent

if TYPE_CHECKING:
    from storage import Store


class Watch:
    """One subscriber's bounded buffer of live events."""

    def __init__(
        self, task_id: str | None, predicate: Callable[[TaskEvent], bool] | None, capacity: int
    ) -> None:
        self.task_id = task_id
        self.predicate = predicate
        self.capacity = capacity
        self.buffer: collections.deque[TaskEvent] = collections.deque()
        self.lagged = False
        #: Set when the hub closes (the runtime is closing).
        self.closed = False
        self._wakeup = trio.Event()

    def offer(self, event: TaskEvent) -> None:
        if self.lagged:
            return
        if self.predicate is not None and not self.predicate(event):
            return
        if len(self.buffer) >= self.capacity:
            self.lagged = True
            self.buffer.clear()
        else:
            self.buffer.append(event)
        self._wakeup.set()

    def close(self) -> None:
        self.closed = True
        self._wakeup.set()

    async def wait(self) -> None:
        """Wait until something was offered since the last wait (or the hub closed)."""
        if not self.buffer and not self.lagged and not self.closed:
            await self._wakeup.wait()
        self._wakeup = trio.Event()


class EventHub:
    """Fans committed events out to watches, by task and to global watches."""

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._by_task: dict[str, set[Watch]] = {}
        self._global: set[Watch] = set()
        self._closed = False

    def publish(self, events: Sequence[StoredEvent]) -> None:
        """Offer committed events to every interested watch (never blocks)."""
        by_task = self._by_task
        everyone = self._global
        for stored in events:
            watches = by_task.get(stored.task_id)
            if not watches and not everyone:
                continue
            # Decoded once here, shared by every subscriber.
            event = TaskEvent.from_stored(stored)
            if watches:
                for watch in watches:
                    watch.offer(event)
            for watch in everyone:
                watch.offer(event)

    def close(self) -> None:
        """Wake every watch with "closed"; new watches start closed."""
        self._closed = True
        for watches in self._by_task.values():
            for watch in watches:
                watch.close()
        for watch in self._global:
            watch.close()

    def watch(
        self,
        task_id: str | None,
        predicate: Callable[[TaskEvent], bool] | None = None,
        capacity: int | None = None,
    ) -> Watch:
        """Register a watch for one task, or for every task the predicate accepts."""
        watch = Watch(task_id, predicate, capacity or self.capacity)
        if self._closed:
            watch.close()
        if task_id is None:
            self._global.add(watch)
        else:
            self._by_task.setdefault(task_id, set()).add(watch)
        return watch

    def unwatch(self, watch: Watch) -> None:
        if watch.task_id is None:
            self._global.discard(watch)
            return
        watches = self._by_task.get(watch.task_id)
        if watches is not None:
            watches.discard(watch)
            if not watches:
                del self._by_task[watch.task_id]

    def statistics(self) -> dict[str, int]:
        return {
            "task_watches": sum(len(w) for w in self._by_task.values()),
            "global_watches": len(self._global),
        }


class EventStream:
    """A task's events after ``after``: history, then live; ends after the terminal event.

    Iterate with ``async for``. Made by ``Runtime.subscribe``, which closes it.
    """

    def __init__(
        self,
        hub: EventHub,
        store: Store,
        task_id: str,
        after: int = 0,
        *,
        capacity: int | None = None,
        resume_on_lag: bool = False,
    ) -> None:
        self.task_id = task_id
        #: Seq of the last event yielded.
        self.last_seq = after
        self._hub = hub
        self._store = store
        self._capacity = capacity
        self._resume_on_lag = resume_on_lag
        self._watch: Watch | None = None
        self._backlog: collections.deque[TaskEvent] = collections.deque()
        self._ended = False
        self._closed = False

    async def _open(self) -> None:
        self._watch = self._hub.watch(self.task_id, capacity=self._capacity)
        history = await self._store.read_events(self.task_id, self.last_seq)
        self._backlog.extend(TaskEvent.from_stored(stored) for stored in history)
        if not self._backlog:
            # Subscribed at or past the end of a finished task: nothing will come.
            record = await self._store.get_task(self.task_id)
            if record is not None and record.state.terminal and record.last_seq <= self.last_seq:
                self._ended = True
                self.close()

    def close(self) -> None:
        self._closed = True
        if self._watch is not None:
            self._hub.unwatch(self._watch)
            self._watch = None

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> TaskEvent:
        while True:
            if self._ended or self._closed:
                raise StopAsyncIteration
            while self._backlog:
                event = self._backlog.popleft()
                if event.seq <= self.last_seq:
                    continue
                if event.seq != self.last_seq + 1:
                    # Only possible if events were lost upstream: refuse to paper over it.
                    raise RuntimeError(
                        f"gap in task {self.task_id} events: {self.last_seq} then {event.seq}"
                    )
                self.last_seq = event.seq
                if event.terminal:
                    self._ended = True
                    self.close()
                return event
            watch = self._watch
            assert watch is not None
            if watch.lagged:
                if not self._resume_on_lag:
                    self.close()
                    raise SubscriptionLagged(self.task_id, self.last_seq)
                self._hub.unwatch(watch)
                await self._open()
                continue
            if watch.buffer:
                self._backlog.extend(watch.buffer)
                watch.buffer.clear()
                continue
            if watch.closed:
                self.close()
                raise RuntimeClosedError("the runtime closed while this stream waited")
            await watch.wait()


class AllEventsStream:
    """Live events of every task (optionally of one user), from now on.

    Never ends by itself. A stream that falls behind its buffer raises
    ``SubscriptionLagged(None, 0)``: read each task's history to catch up.
    """

    def __init__(
        self, hub: EventHub, store: Store, user_id: str | None, capacity: int | None
    ) -> None:
        self._hub = hub
        self._store = store
        self._user_id = user_id
        self._watch = hub.watch(None, capacity=capacity)
        self._backlog: collections.deque[TaskEvent] = collections.deque()
        #: task id -> user id, for the tasks seen so far.
        self._owners: dict[str, str | None] = {}

    def close(self) -> None:
        self._hub.unwatch(self._watch)

    def __aiter__(self) -> AllEventsStream:
        return self

    async def _visible(self, event: TaskEvent) -> bool:
        if self._user_id is None:
            return True
        if event.task_id not in self._owners:
            record = await self._store.get_task(event.task_id)
            self._owners[event.task_id] = record.user_id if record is not None else None
        return self._owners[event.task_id] == self._user_id

    async def __anext__(self) -> TaskEvent:
        while True:
            while self._backlog:
                event = self._backlog.popleft()
                if await self._visible(event):
                    return event
            watch = self._watch
            if watch.lagged:
                raise SubscriptionLagged(None, 0)
            if watch.buffer:
                self._backlog.extend(watch.buffer)
                watch.buffer.clear()
                continue
            if watch.closed:
                raise RuntimeClosedError("the runtime closed while this stream waited")
            await watch.wait()
