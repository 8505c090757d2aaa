"""Live event fan-out: committed events to subscribers, never slowing a task.

Theory of operation
-------------------
The storage actor calls ``EventHub.publish`` with each batch's events right
after the batch commits (and before any writer is answered), so the hub only
ever sees committed events, in commit order. It cuts them into
``EventBatch``es, one per task: runs of one task's events with consecutive
seqs. One batch object is shared by every subscriber of its task, so fan-out
costs O(1) per subscriber and committed batch, whatever the batch's length:
the events are decoded at most once (when a consumer first asks), and a
consumer that needs another form of them (the websocket server's JSON text,
see ``server._frames.EventEncoder``) makes it once for everyone.

Each subscriber has a ``Watch``: a bounded buffer of batches that
``publish`` fills without waiting. A watch holds at most ``capacity`` events
(or, when it is empty, one batch of any size: the batch is shared, it costs
the watch nothing more). One that would hold more is marked *lagged* and
stops buffering: the task and the other subscribers never wait for it.

The hub also keeps a window of the latest batches of every watched task (at
most ``retain`` events over all tasks, oldest dropped first, and only while
they are contiguous). A stream that opens, or reopens after a lag, with
``after`` inside that window takes its backlog from memory rather than from
the store: a subscriber that fell behind a busy task catches up for the
price of a few references.

``EventStream`` joins history and live events without a gap: it registers
its watch first, then takes the events after ``after`` from the window or,
when they are older, from the store (a page at a time, so a long history
never sits in memory whole; the hub keeps the last full pages, so streams
that replay the same history read each page once), then drains the watch,
skipping what it already yielded (an event committed between the two steps
shows up in both; it is yielded once, by seq). While it still reads history,
a lagged watch is
simply registered again before the next read: what the watch dropped, the
store has. A stream that lags once live either raises
``SubscriptionLagged(resume_after=last seq)`` or, with ``resume_on_lag``,
reads the missing events back and goes on: either way nothing is lost.

Three modules: ``_batches`` (``EventBatch``, the watches and their
``Wakeup``), ``_hub`` (``EventHub``), and this one, the streams; every name
stays importable from here.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..core._errors import RuntimeClosedError, SubscriptionLagged
from ..core._info import TaskEvent
from ._batches import REMOTE_POLL as REMOTE_POLL
from ._batches import EventBatch as EventBatch
from ._batches import StateWatch as StateWatch
from ._batches import Wakeup as Wakeup
from ._batches import Watch as Watch
from ._batches import wait_or_poll as wait_or_poll
from ._hub import CACHED_PAGES as CACHED_PAGES
from ._hub import HISTORY_PAGE as HISTORY_PAGE
from ._hub import MIN_RETAIN as MIN_RETAIN
from ._hub import EventHub as EventHub

if TYPE_CHECKING:
    from storage import Store


class EventStream:
    """A task's events after ``after``: history, then live; ends after the terminal event.

    Iterate with ``async for`` (one event at a time), or call
    ``next_batch`` (every event ready, as shared batches); use one or the
    other. Made by ``Runtime.subscribe``, which closes it.
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
        remote: Callable[[str], bool] | None = None,
    ) -> None:
        self.task_id = task_id
        #: Seq of the last event yielded.
        self.last_seq = after
        self._hub = hub
        self._store = store
        self._capacity = capacity
        self._resume_on_lag = resume_on_lag
        self._watch: Watch | None = None
        #: Seq of the last event taken out of the backlog.
        self._cursor = after
        self._backlog: collections.deque[EventBatch] = collections.deque()
        #: Events of a batch not yielded yet (one-at-a-time iteration).
        self._events: collections.deque[TaskEvent] = collections.deque()
        self._history_done = False
        self._ended = False
        self._closed = False
        #: The consumer's sink while it waits in ``next_batch`` (see there).
        self._sink: Callable[[EventBatch], bool] | None = None
        self._push_fn = self._push
        #: Whether the task's commits may be made elsewhere, unheard here
        #: (None: never); then a wait lasts at most REMOTE_POLL, and the
        #: store is read again (``_wait``).
        self._remote = remote
        #: Set when the next history read must come from the store, not the
        #: hub's window (which holds only what was committed here).
        self._from_store = False
        #: The cursor at which a gap was last filled from the store (a
        #: second gap there is a real loss: see ``next_batch``).
        self._gap_read = -1

    async def _open(self) -> None:
        self._watch = self._hub.watch(self.task_id, capacity=self._capacity)
        await self._read_history()
        if not self._backlog:
            # Subscribed at or past the end of a finished task: nothing will come.
            record = await self._store.get_task(self.task_id)
            if record is not None and record.state.terminal and record.last_seq <= self._cursor:
                self._ended = True
                self.close()

    async def _read_history(self) -> None:
        """Queue the next events: all of them from the hub's window, or a page of history.

        The watch is registered before, so what comes after is in the watch.
        """
        retained = None
        if self._from_store:
            self._from_store = False
        else:
            retained = self._hub.retained(self.task_id, self._cursor)
        if retained is not None:
            self._backlog.extend(retained)
            self._history_done = True
            return
        page, full = await self._hub.history(self._store, self.task_id, self._cursor)
        self._backlog.extend(page)
        self._history_done = not full

    def _rewatch(self) -> None:
        """Replace a lagged watch (the new one first, so the task's window stays)."""
        assert self._watch is not None
        lagged, self._watch = self._watch, self._hub.watch(self.task_id, capacity=self._capacity)
        self._hub.unwatch(lagged)

    def close(self) -> None:
        self._closed = True
        if self._watch is not None:
            self._hub.unwatch(self._watch)
            self._watch = None

    async def next_batch(
        self, *, sink: Callable[[EventBatch], bool] | None = None
    ) -> EventBatch | None:
        """The next events, seq ``last_seq + 1`` on, as one batch; None once ended.

        Returns at once with what is ready, else waits for the next commit.

        Args:
            sink: while this waits with nothing ready, each live batch that
                comes is first offered to ``sink(batch)``, synchronously, at
                commit time: if it returns True the batch is the sink's (as
                if returned, without waking the caller), else it is returned
                as usual. It is called with nothing else in hand, so batches
                reach the caller and the sink in order; it must not block. A
                sink that raises is taken as refusing: the caller then gets
                the batch and meets the error itself. After the sink took
                the terminal event, this returns None.

        Raises:
            SubscriptionLagged: the stream fell ``capacity`` events behind
                (without ``resume_on_lag``); subscribe again after ``resume_after``.
            RuntimeClosedError: the runtime closed while the stream waited.

        Cancellation: safe; nothing is lost.
        """
        while not (self._ended or self._closed):
            batch = self._take_backlog()
            if batch is not None:
                return batch
            if self._backlog:
                await self._fill_gap()
                continue
            watch = self._watch
            assert watch is not None
            if not self._history_done:
                if watch.lagged:
                    self._rewatch()  # what it dropped, the store has
                await self._read_history()
                continue
            if self._take_live(watch):
                continue
            await self._wait_live(watch, sink)
        return None

    def _take_backlog(self) -> EventBatch | None:
        """The next new events of the backlog (those seen already are dropped).

        Returns:
            None when the backlog is empty, or when it starts with a gap that
            the store may fill (its batch is left in front: ``_fill_gap``).

        Raises:
            RuntimeError: a gap the store cannot explain (events lost upstream).
        """
        backlog = self._backlog
        while backlog:
            batch = backlog[0]
            if batch.first > self._cursor + 1:
                if self._remote is not None and self._gap_read != self._cursor:
                    return None
                # Only possible if events were lost upstream: refuse to paper over it.
                raise RuntimeError(
                    f"gap in task {self.task_id} events: {self._cursor} then {batch.first}"
                )
            backlog.popleft()
            tail = batch.after(self._cursor)
            if tail is not None:  # (else seen already: history and live overlap)
                return self._yielded(tail)
        return None

    def _yielded(self, batch: EventBatch) -> EventBatch:
        """``batch`` up to its terminal event, now the last yielded; the stream
        ends with a terminal event."""
        batch, terminal = batch.through_terminal()
        self._cursor = self.last_seq = batch.last
        if terminal:
            self._ended = True
            self.close()
        return batch

    async def _fill_gap(self) -> None:
        """Read the events before the backlog's first batch from the store: they
        were committed elsewhere, then the task moved to this node (once per
        cursor: a second gap there is a real loss, see ``_take_backlog``)."""
        rest = list(self._backlog)
        self._backlog.clear()
        self._from_store = True
        try:
            await self._read_history()
            self._gap_read = self._cursor
        finally:
            self._backlog.extend(rest)  # (after the page: in seq order)

    def _take_live(self, watch: Watch) -> bool:
        """Move what the live watch holds into the backlog; False if there is
        nothing to do but wait.

        Raises:
            SubscriptionLagged: the watch lagged (without ``resume_on_lag``).
            RuntimeClosedError: the hub closed.
        """
        if watch.lagged:
            if not self._resume_on_lag:
                self.close()
                raise SubscriptionLagged(self.task_id, self._cursor)
            self._rewatch()
            self._history_done = False
            return True
        if watch.buffer:
            self._backlog.extend(watch.take())
            return True
        if watch.closed:
            self.close()
            raise RuntimeClosedError("the runtime closed while this stream waited")
        return False

    async def _wait_live(self, watch: Watch, sink: Callable[[EventBatch], bool] | None) -> None:
        """Wait for the next live batch, offering it to ``sink`` meanwhile (see ``next_batch``)."""
        if sink is None:
            await self._wait(watch)
            return
        self._sink, watch.sink = sink, self._push_fn
        try:
            await self._wait(watch)
        finally:
            self._sink = watch.sink = None

    async def _wait(self, watch: Watch) -> None:
        """Wait for the next live batch (see ``wait_or_poll``)."""
        remote = self._remote is not None and self._remote(self.task_id)
        if await wait_or_poll(watch, remote):
            self._read_store()

    def _read_store(self) -> None:
        """Have the next round read the events after the cursor from the store."""
        self._history_done = False
        self._from_store = True

    def _push(self, batch: EventBatch) -> bool:
        """The watch's sink while the consumer waits: see ``next_batch``."""
        assert self._sink is not None and not self._backlog
        tail = batch.after(self._cursor)
        if tail is None:
            return True  # seen already (history and live overlap)
        if tail.first > self._cursor + 1:
            return False  # a gap: next_batch raises it
        # Called by the hub at commit time: an error here must not keep the
        # batch from the other subscribers. The caller gets the batch from
        # next_batch instead, and meets the error there.
        try:
            tail, terminal = tail.through_terminal()
            if not self._sink(tail):
                return False
        except Exception:
            return False
        self._cursor = self.last_seq = tail.last
        if terminal:
            self._ended = True
            assert self._watch is not None
            self._watch.wake()
        return True

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> TaskEvent:
        if not self._events:
            last_seq = self.last_seq
            batch = await self.next_batch()
            if batch is None:
                raise StopAsyncIteration
            self.last_seq = last_seq
            self._events.extend(batch.events)
        event = self._events.popleft()
        self.last_seq = event.seq
        return event


class AllEventsStream:
    """Live events of every task (optionally of one user), from now on.

    Never ends by itself. A stream that falls behind its buffer raises
    ``SubscriptionLagged(None, 0)``: read each task's history to catch up.
    Iterate with ``async for`` (one event at a time), or call
    ``next_batch``; use one or the other.
    """

    def __init__(
        self, hub: EventHub, store: Store, user_id: str | None, capacity: int | None
    ) -> None:
        self._hub = hub
        self._store = store
        self._user_id = user_id
        self._watch = hub.watch(None, capacity=capacity)
        self._backlog: collections.deque[EventBatch] = collections.deque()
        self._events: collections.deque[TaskEvent] = collections.deque()
        #: task id -> user id, for the tasks seen so far.
        self._owners: dict[str, str | None] = {}

    def close(self) -> None:
        self._hub.unwatch(self._watch)

    async def _visible(self, task_id: str) -> bool:
        if self._user_id is None:
            return True
        if task_id not in self._owners:
            record = await self._store.get_task(task_id)
            self._owners[task_id] = record.user_id if record is not None else None
        return self._owners[task_id] == self._user_id

    async def next_batch(self) -> EventBatch:
        """The next live events of one visible task, as one batch.

        Raises:
            SubscriptionLagged: the stream fell behind its buffer.
            RuntimeClosedError: the runtime closed while the stream waited.

        Cancellation: safe.
        """
        while True:
            while self._backlog:
                batch = self._backlog.popleft()
                if await self._visible(batch.task_id):
                    return batch
            watch = self._watch
            if watch.lagged:
                raise SubscriptionLagged(None, 0)
            if watch.buffer:
                self._backlog.extend(watch.take())
                continue
            if watch.closed:
                raise RuntimeClosedError("the runtime closed while this stream waited")
            await watch.wait()

    def __aiter__(self) -> AllEventsStream:
        return self

    async def __anext__(self) -> TaskEvent:
        if not self._events:
            self._events.extend((await self.next_batch()).events)
        return self._events.popleft()
