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
see ``_protocol.EventEncoder``) makes it once for everyone.

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
"""

from __future__ import annotations

import collections
import operator
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Final

import attrs
import trio

from storage import StoredEvent, decode

from ..core._errors import RuntimeClosedError, SubscriptionLagged
from ..core._info import TaskEvent

if TYPE_CHECKING:
    from storage import Store

#: Events read from the store per query while a stream replays history.
HISTORY_PAGE: Final = 1000
#: Least number of events the hub's window keeps (see ``EventHub``).
MIN_RETAIN: Final = 16_384
#: Full history pages the hub keeps for streams that replay the same history.
CACHED_PAGES: Final = 16
#: Seconds (on trio's clock) between two reads of a task that another
#: process may be running: on a shared store (a SQLite file) its commits
#: reach this process's reads, never its hub (see ``EventStream``).
REMOTE_POLL: Final = 0.5


@attrs.define(eq=False)
class EventBatch:
    """Committed events of one task with consecutive seqs, shared by all who receive them.

    Made by the hub (one per task and committed batch) and by streams
    reading history. Never changes; what is derived from it (the decoded
    events, the first terminal event) is computed once, on first use.

    The events are kept as columns of plain values (tuples of strings and
    floats), which the garbage collector stops tracking: a window of
    thousands of recent events costs it one object per batch, not one per
    event (see ``Wakeup`` for why that matters).
    """

    task_id: str
    #: Seq of the first event; the others follow without gaps.
    first: int
    kinds: tuple[str, ...]
    ats: tuple[float, ...]
    #: Each event's data as stored: JSON text.
    datas: tuple[str, ...]
    _events: tuple[TaskEvent, ...] | None = attrs.field(default=None, init=False)
    _terminal: int | None = attrs.field(default=None, init=False)

    @classmethod
    def from_stored(cls, task_id: str, stored: Sequence[StoredEvent]) -> EventBatch:
        """A batch of stored events of ``task_id`` (consecutive seqs, at least one)."""
        return cls(
            task_id,
            stored[0].seq,
            tuple(map(_KIND, stored)),
            tuple(map(_AT, stored)),
            tuple(map(_DATA, stored)),
        )

    @property
    def last(self) -> int:
        """Seq of the last event."""
        return self.first + len(self.kinds) - 1

    @property
    def seqs(self) -> range:
        """The events' seqs."""
        return range(self.first, self.first + len(self.kinds))

    def __len__(self) -> int:
        return len(self.kinds)

    @property
    def events(self) -> tuple[TaskEvent, ...]:
        """The events, decoded (once for every holder of the batch)."""
        if self._events is None:
            task_id = self.task_id
            self._events = tuple(
                TaskEvent(task_id, seq, kind, at, decode(data))
                for seq, kind, at, data in zip(
                    self.seqs, self.kinds, self.ats, self.datas, strict=True
                )
            )
        return self._events

    def _slice(self, start: int, stop: int) -> EventBatch:
        return EventBatch(
            self.task_id,
            self.first + start,
            self.kinds[start:stop],
            self.ats[start:stop],
            self.datas[start:stop],
        )

    def after(self, seq: int) -> EventBatch | None:
        """The events with seq > ``seq`` (this batch if all are), or None if none is."""
        if seq < self.first:
            return self
        if seq >= self.last:
            return None
        return self._slice(seq - self.first + 1, len(self.kinds))

    def through_terminal(self) -> tuple[EventBatch, bool]:
        """The events up to the first terminal one, and whether there is one."""
        count = len(self.kinds)
        if self._terminal is None:
            terminal = count
            for index, kind in enumerate(self.kinds):
                # Only a "state" event can be terminal: decode just those.
                if kind == "state" and _is_terminal(decode(self.datas[index])):
                    terminal = index
                    break
            self._terminal = terminal
        if self._terminal == count:
            return self, False
        if self._terminal == count - 1:
            return self, True
        return self._slice(0, self._terminal + 1), True


_KIND = operator.attrgetter("kind")
_AT = operator.attrgetter("at")
_DATA = operator.attrgetter("data")


def _is_terminal(data: object) -> bool:
    """Whether a "state" event's data moves its task into a terminal state."""
    return TaskEvent("", 0, "state", 0.0, data).terminal


def _after(batches: Sequence[EventBatch], seq: int) -> list[EventBatch]:
    """The events of ``batches`` with seq > ``seq``."""
    return [tail for batch in batches if (tail := batch.after(seq)) is not None]


def _runs(task_id: str, stored: Sequence[StoredEvent]) -> Iterator[EventBatch]:
    """``stored`` (one task's events, in seq order) as batches of consecutive seqs."""
    if stored[-1].seq - stored[0].seq == len(stored) - 1:
        yield EventBatch.from_stored(task_id, stored)  # the usual case: one run
        return
    start = 0
    for index in range(1, len(stored)):
        if stored[index].seq != stored[index - 1].seq + 1:
            yield EventBatch.from_stored(task_id, stored[start:index])
            start = index
    yield EventBatch.from_stored(task_id, stored[start:])


class Wakeup:
    """A wake-up call for one waiting task, reused from wait to wait.

    ``set`` wakes the task waiting in ``wait``, or makes the next ``wait``
    return at once. It does what a fresh ``trio.Event`` per wait does, with
    no objects made per wait: waits that last a few milliseconds (a watch
    between commits, a writer between frames) would otherwise outlive young
    garbage collections, and the full collections they bring on stall every
    connection (issue #5: they set the fan-out latency's p99).
    """

    __slots__ = ("_abort_fn", "_set", "_task")

    def __init__(self) -> None:
        self._task: trio.lowlevel.Task | None = None
        self._set = False
        self._abort_fn = self._abort

    def set(self) -> None:
        """Wake the waiting task, or the next one to wait (never blocks)."""
        task = self._task
        if task is not None:
            self._task = None
            trio.lowlevel.reschedule(task)
        else:
            self._set = True

    async def wait(self) -> None:
        """Wait until ``set`` (at once if it was set since the last wait).

        Cancellation: safe.

        Raises:
            trio.BusyResourceError: another task waits already.
        """
        if self._set:
            self._set = False
            await trio.lowlevel.checkpoint()
            return
        if self._task is not None:
            raise trio.BusyResourceError("another task waits on this wake-up")
        self._task = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abort_fn)

    def _abort(self, raise_cancel: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        self._task = None
        return trio.lowlevel.Abort.SUCCEEDED


class Watch:
    """One subscriber's bounded buffer of live event batches.

    While its ``sink`` is set (by a consumer that waits with nothing in
    hand), a batch is first offered to the sink, synchronously: one it
    takes is not buffered and wakes nobody.
    """

    def __init__(self, task_id: str | None, capacity: int) -> None:
        self.task_id = task_id
        self.capacity = capacity
        self.buffer: collections.deque[EventBatch] = collections.deque()
        #: Events in ``buffer``.
        self.pending = 0
        self.lagged = False
        #: Set when the hub closes (the runtime is closing).
        self.closed = False
        #: Takes a batch (True) or leaves it to the buffer (False); must not raise.
        self.sink: Callable[[EventBatch], bool] | None = None
        self._wakeup = Wakeup()

    def offer(self, batch: EventBatch) -> None:
        if self.lagged:
            return
        if self.sink is not None and not self.buffer and self.sink(batch):
            return
        size = len(batch.kinds)
        if self.pending and self.pending + size > self.capacity:
            self.lagged = True
            self.buffer.clear()
            self.pending = 0
        else:
            self.buffer.append(batch)
            self.pending += size
        self._wakeup.set()

    def take(self) -> list[EventBatch]:
        """Everything buffered, oldest first; the buffer is left empty."""
        batches = list(self.buffer)
        self.buffer.clear()
        self.pending = 0
        return batches

    def close(self) -> None:
        self.closed = True
        self._wakeup.set()

    def wake(self) -> None:
        """End the current (or next) ``wait`` with nothing buffered."""
        self._wakeup.set()

    async def wait(self) -> None:
        """Wait until something is offered, the hub closes or ``wake``; at once if
        something was buffered. It may also return early: check again."""
        if not self.buffer and not self.lagged and not self.closed:
            await self._wakeup.wait()


class StateWatch:
    """A task's state changes as they commit, for a waiter (``rt.wait``,
    ``rt.result``): each committed state event of the task as (seq, state
    value), with no batch, window or decoding of its other events."""

    __slots__ = ("_wakeup", "changes", "closed", "result", "task_id")

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        #: (seq, state value) of the state events offered and not taken yet.
        self.changes: list[tuple[int, str]] = []
        #: The result (JSON text) the task completed with, when its actor
        #: said so at the commit (``EventHub.offer_result``).
        self.result: str | None = None
        #: Set when the hub closes (the runtime is closing).
        self.closed = False
        self._wakeup = Wakeup()

    def offer(self, seq: int, state: str) -> None:
        self.changes.append((seq, state))
        self._wakeup.set()

    def take(self) -> list[tuple[int, str]]:
        """The changes offered since the last take, oldest first."""
        changes, self.changes = self.changes, []
        return changes

    def close(self) -> None:
        self.closed = True
        self._wakeup.set()

    def wake(self) -> None:
        """End the current (or next) ``wait`` with no change."""
        self._wakeup.set()

    async def wait(self) -> None:
        """Wait until a change is offered, the hub closes or ``wake`` (at once
        if so). It may also return early: check again."""
        if not self.changes and not self.closed:
            await self._wakeup.wait()


async def wait_or_poll(watch: Watch | StateWatch, remote: bool) -> bool:
    """Wait on a watch; for a task whose commits may be made where this
    process does not hear them (``remote``), at most REMOTE_POLL. Whether the
    wait ran out: then the caller reads the task from the store again."""
    if not remote:
        await watch.wait()
        return False
    with trio.move_on_after(REMOTE_POLL) as poll:
        await watch.wait()
    return poll.cancelled_caught


class EventHub:
    """Fans committed events out to watches, by task and to global watches.

    Args:
        capacity: default capacity (in events) of a watch.
        retain: events of watched tasks kept in the window (default: the
            larger of 4 x capacity and ``MIN_RETAIN``).
    """

    def __init__(self, capacity: int = 4096, *, retain: int | None = None) -> None:
        self.capacity = capacity
        self.retain = retain if retain is not None else max(4 * capacity, MIN_RETAIN)
        self._by_task: dict[str, set[Watch]] = {}
        self._global: set[Watch] = set()
        self._states: dict[str, set[StateWatch]] = {}
        #: task id -> its latest batches, contiguous, for watched tasks only
        #: (from their first commit while watched).
        self._windows: dict[str, collections.deque[EventBatch]] = {}
        #: Every retained batch, oldest first (some may have left their window already).
        self._recent: collections.deque[EventBatch] = collections.deque()
        self._recent_events = 0
        #: (task id, page number) -> a full page of history, or the event set
        #: when a stream reading it is done; least recently used first.
        self._pages: collections.OrderedDict[
            tuple[str, int], tuple[EventBatch, ...] | trio.Event
        ] = collections.OrderedDict()
        self._closed = False

    def publish(self, events: Sequence[StoredEvent]) -> None:
        """Offer committed events to every interested watch (never blocks).

        The store calls it once per committed batch, in commit order.
        """
        if self._states:
            self._offer_states(events)
        by_task = self._by_task
        everyone = self._global
        if not by_task and not everyone:
            return
        runs: dict[str, list[StoredEvent]] = {}
        for stored in events:
            if everyone or stored.task_id in by_task:
                run = runs.get(stored.task_id)
                if run is None:
                    runs[stored.task_id] = [stored]
                else:
                    run.append(stored)
        for task_id, run in runs.items():
            watches = by_task.get(task_id, ())
            for batch in _runs(task_id, run):
                if watches:
                    window = self._windows.get(task_id)
                    if window is None:
                        # Made at the task's first commit while watched: a
                        # watched task that stays quiet costs no window.
                        window = self._windows[task_id] = collections.deque()
                    self._retain(window, batch)
                for watch in watches:
                    watch.offer(batch)
                for watch in everyone:
                    watch.offer(batch)

    def _retain(self, window: collections.deque[EventBatch], batch: EventBatch) -> None:
        if window and window[-1].last + 1 != batch.first:
            window.clear()  # what a window holds must be contiguous
        window.append(batch)
        recent = self._recent
        recent.append(batch)
        self._recent_events += len(batch.kinds)
        while self._recent_events > self.retain and len(recent) > 1:
            old = recent.popleft()
            self._recent_events -= len(old.kinds)
            owner = self._windows.get(old.task_id)
            if owner and owner[0] is old:
                owner.popleft()

    def retained(self, task_id: str, after: int) -> list[EventBatch] | None:
        """The task's events with seq > ``after`` from the window, if it has them all.

        Returns:
            None unless the window holds seq ``after + 1`` (then every later
            event the hub has seen is in the batches returned).
        """
        window = self._windows.get(task_id)
        if not window or window[0].first > after + 1 or window[-1].last <= after:
            return None
        ready: list[EventBatch] = []
        for batch in reversed(window):
            tail = batch.after(after)
            if tail is None:
                break
            ready.append(tail)
        ready.reverse()
        return ready

    async def history(
        self, store: Store, task_id: str, after: int
    ) -> tuple[list[EventBatch], bool]:
        """A task's stored events after ``after``, to the end of their page.

        History is read in pages of ``HISTORY_PAGE`` seqs (1-1000, 1001-2000,
        ...), and the hub keeps the last ``CACHED_PAGES`` full ones: streams
        that replay the same history (subscribers that lagged together) read
        each page from the store once, and share its batches and their text.

        Returns:
            The batches, and whether the page was full (more may follow).

        Cancellation: safe; a page being read for others is read again by them.
        """
        number = after // HISTORY_PAGE
        key = (task_id, number)
        while isinstance(entry := self._pages.get(key), trio.Event):
            await entry.wait()  # another stream reads it
        if entry is None:
            loading = self._pages[key] = trio.Event()
            try:
                stored = await store.read_events(task_id, number * HISTORY_PAGE, HISTORY_PAGE)
            finally:
                del self._pages[key]
                loading.set()
            entry = tuple(_runs(task_id, stored)) if stored else ()
            if len(stored) < HISTORY_PAGE:
                # The end of the history so far: it grows, so it is not kept.
                return _after(entry, after), False
            self._pages[key] = entry
            while len(self._pages) > CACHED_PAGES:
                oldest = next(iter(self._pages))
                if isinstance(self._pages[oldest], trio.Event):
                    break  # being read: the cache is over its size until then
                del self._pages[oldest]
        else:
            self._pages.move_to_end(key)
        return _after(entry, after), True

    def _offer_states(self, events: Sequence[StoredEvent]) -> None:
        states = self._states
        for stored in events:
            if stored.kind == "state":
                watches = states.get(stored.task_id)
                if watches:
                    state = decode(stored.data)["to"]
                    for watch in watches:
                        watch.offer(stored.seq, state)

    def wake_all(self) -> None:
        """Wake every task's watches and state watches with nothing new: their
        waiters look again at how to wait (see ``Runtime._look_for_others``)."""
        for watches in self._by_task.values():
            for watch in watches:
                watch.wake()
        for state_watches in self._states.values():
            for state_watch in state_watches:
                state_watch.wake()

    def close(self) -> None:
        """Wake every watch with "closed"; new watches start closed."""
        self._closed = True
        for watches in self._by_task.values():
            for watch in watches:
                watch.close()
        for watch in self._global:
            watch.close()
        for state_watches in self._states.values():
            for state_watch in state_watches:
                state_watch.close()

    def offer_result(self, task_id: str, text: str) -> None:
        """Give the state watches of a task the result it completed with
        (its actor calls this at the commit of its completion, before any
        watcher runs): ``rt.result`` then needs no read of it."""
        for watch in self._states.get(task_id, ()):
            watch.result = text

    def watch_states(self, task_id: str) -> StateWatch:
        """Register a watch of one task's state changes (see StateWatch)."""
        watch = StateWatch(task_id)
        if self._closed:
            watch.close()
        self._states.setdefault(task_id, set()).add(watch)
        return watch

    def unwatch_states(self, watch: StateWatch) -> None:
        watches = self._states.get(watch.task_id)
        if watches is not None:
            watches.discard(watch)
            if not watches:
                del self._states[watch.task_id]

    def watch(self, task_id: str | None, capacity: int | None = None) -> Watch:
        """Register a watch for one task, or (``task_id`` None) for every task."""
        watch = Watch(task_id, capacity or self.capacity)
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
                # Its batches leave the window; _recent drops them in turn.
                self._windows.pop(watch.task_id, None)

    def statistics(self) -> dict[str, int]:
        return {
            "task_watches": sum(len(w) for w in self._by_task.values()),
            "global_watches": len(self._global),
            "state_watches": sum(len(w) for w in self._states.values()),
            "retained_events": self._recent_events,
        }


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
        while True:
            if self._ended or self._closed:
                return None
            while self._backlog:
                batch = self._backlog.popleft()
                if batch.first > self._cursor + 1:
                    if self._remote is not None and self._gap_read != self._cursor:
                        # Committed elsewhere, then here (the task moved to
                        # this node): the store has what came between.
                        rest = [batch, *self._backlog]
                        self._backlog.clear()
                        self._from_store = True
                        try:
                            await self._read_history()
                            self._gap_read = self._cursor
                        finally:
                            self._backlog.extend(rest)  # (after the page: in seq order)
                        continue
                    # Only possible if events were lost upstream: refuse to paper over it.
                    raise RuntimeError(
                        f"gap in task {self.task_id} events: {self._cursor} then {batch.first}"
                    )
                tail = batch.after(self._cursor)
                if tail is None:
                    continue  # seen already (history and live overlap)
                tail, terminal = tail.through_terminal()
                self._cursor = self.last_seq = tail.last
                if terminal:
                    self._ended = True
                    self.close()
                return tail
            watch = self._watch
            assert watch is not None
            if not self._history_done:
                if watch.lagged:
                    self._rewatch()  # what it dropped, the store has
                await self._read_history()
                continue
            if watch.lagged:
                if not self._resume_on_lag:
                    self.close()
                    raise SubscriptionLagged(self.task_id, self._cursor)
                self._rewatch()
                self._history_done = False
                continue
            if watch.buffer:
                self._backlog.extend(watch.take())
                continue
            if watch.closed:
                self.close()
                raise RuntimeClosedError("the runtime closed while this stream waited")
            if sink is None:
                await self._wait(watch)
                continue
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
