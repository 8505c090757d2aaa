"""The event hub: committed events fanned out to watches, never slowing a task.

See the theory of operation in ``_events.py``: the hub is its first half
(publish, the window of recent batches, the cache of history pages).
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import trio

from storage import StoredEvent, decode

from ._batches import EventBatch, StateWatch, Watch, consecutive_runs, tails_after

if TYPE_CHECKING:
    from storage import Store

#: Events read from the store per query while a stream replays history.
HISTORY_PAGE: Final = 1000
#: Least number of events the hub's window keeps (see ``EventHub``).
MIN_RETAIN: Final = 16_384
#: Full history pages the hub keeps for streams that replay the same history.
CACHED_PAGES: Final = 16


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
            for batch in consecutive_runs(task_id, run):
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
            entry = tuple(consecutive_runs(task_id, stored)) if stored else ()
            if len(stored) < HISTORY_PAGE:
                # The end of the history so far: it grows, so it is not kept.
                return tails_after(entry, after), False
            self._pages[key] = entry
            while len(self._pages) > CACHED_PAGES:
                oldest = next(iter(self._pages))
                if isinstance(self._pages[oldest], trio.Event):
                    break  # being read: the cache is over its size until then
                del self._pages[oldest]
        else:
            self._pages.move_to_end(key)
        return tails_after(entry, after), True

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
