"""The event hub and its streams: shared batches, bounded watches, the window, history pages.

A fake store stands in for the real one: it holds committed events, counts
the reads, and publishes each commit to the hub the way the storage actor
does, so every interleaving of commits and reads is under the test's control.
"""

from __future__ import annotations

from typing import Any, cast

import pytest
import trio
import trio.testing

from actors import SubscriptionLagged
from actors.runtime._events import (
    HISTORY_PAGE,
    REMOTE_POLL,
    AllEventsStream,
    EventBatch,
    EventHub,
    EventStream,
)
from storage import Store, StoredEvent, TaskState


class FakeStore:
    """Committed events per task; ``commit`` publishes to the hub like the storage actor."""

    def __init__(self, hub: EventHub) -> None:
        self.hub = hub
        self.events: dict[str, list[StoredEvent]] = {}
        self.reads = 0
        #: Called inside each read, before it answers (to commit "concurrently").
        self.during_read: list[Any] = []
        self.terminal: set[str] = set()

    def commit(self, task_id: str, count: int, *, kind: str = "tick") -> list[StoredEvent]:
        history = self.events.setdefault(task_id, [])
        batch = [
            StoredEvent(task_id, len(history) + i + 1, kind, 1.5, f'{{"i":{len(history) + i}}}')
            for i in range(count)
        ]
        history.extend(batch)
        self.hub.publish(batch)
        return batch

    def commit_elsewhere(self, task_id: str, count: int) -> None:
        """Events committed by another process: stored, never published here."""
        history = self.events.setdefault(task_id, [])
        last = len(history)
        history.extend(
            StoredEvent(task_id, last + i, "tick", 1.5, "{}") for i in range(1, count + 1)
        )

    def finish(self, task_id: str) -> None:
        history = self.events.setdefault(task_id, [])
        event = StoredEvent(task_id, len(history) + 1, "state", 2.0, '{"to":"completed"}')
        history.append(event)
        self.terminal.add(task_id)
        self.hub.publish([event])

    async def read_events(
        self, task_id: str, after: int = 0, limit: int | None = None
    ) -> list[StoredEvent]:
        self.reads += 1
        await trio.lowlevel.checkpoint()
        if self.during_read:
            self.during_read.pop(0)()
        found = [e for e in self.events.get(task_id, []) if e.seq > after]
        return found[:limit] if limit is not None else found

    async def get_task(self, task_id: str) -> Any:
        await trio.lowlevel.checkpoint()

        class Record:
            state = TaskState.COMPLETED if task_id in self.terminal else TaskState.RUNNING
            last_seq = len(self.events.get(task_id, []))
            user_id = None

        return Record()


def open_stream(store: FakeStore, task_id: str, after: int = 0, **options: Any) -> EventStream:
    return EventStream(store.hub, cast(Store, store), task_id, after, **options)


async def drain(stream: EventStream) -> list[int]:
    """Seqs of the batches a stream yields until it ends or waits for a commit.

    Needs the autojump clock: the stream's store reads pass, its wait for
    the next commit is where the clock jumps and the drain stops.
    """
    seqs: list[int] = []
    while True:
        with trio.move_on_after(1):
            batch = await stream.next_batch()
            if batch is None:
                return seqs
            seqs.extend(batch.seqs)
            continue
        return seqs


# -- the hub ------------------------------------------------------------------------------
def test_one_batch_object_reaches_every_watch_of_its_task() -> None:
    hub = EventHub(capacity=100)
    first, second, everyone = hub.watch("t1"), hub.watch("t1"), hub.watch(None)
    other = hub.watch("t2")
    events = [
        StoredEvent("t1", 1, "tick", 1.0, "1"),
        StoredEvent("t2", 1, "tick", 1.0, "1"),
        StoredEvent("t1", 2, "tick", 1.0, "2"),
    ]
    hub.publish(events)
    (batch,) = first.take()
    assert second.take() == [batch] and [b.task_id for b in everyone.buffer] == ["t1", "t2"]
    assert everyone.buffer[0] is batch
    assert (batch.first, batch.last, len(batch), batch.datas) == (1, 2, 2, ("1", "2"))
    assert [b.first for b in other.take()] == [1]


def test_a_watch_takes_one_batch_of_any_size_when_empty_and_lags_past_its_capacity() -> None:
    hub = EventHub(capacity=4)
    watch = hub.watch("t")
    store = FakeStore(hub)
    store.commit("t", 10)  # more than the capacity, but the watch was empty
    assert watch.pending == 10 and not watch.lagged
    watch.take()
    store.commit("t", 3)
    store.commit("t", 1)
    assert watch.pending == 4 and not watch.lagged
    store.commit("t", 1)
    assert watch.lagged and not watch.buffer


def test_the_window_keeps_the_latest_contiguous_events_of_watched_tasks_only() -> None:
    hub = EventHub(capacity=10, retain=25)
    store = FakeStore(hub)
    store.commit("unwatched", 5)
    hub.watch("t")
    assert hub.retained("unwatched", 0) is None
    for _ in range(4):
        store.commit("t", 10)
    ready = hub.retained("t", 24)
    assert ready is not None  # the last two batches (21..40) fit in 25 events
    assert [seq for b in ready for seq in b.seqs] == list(range(25, 41))
    assert hub.retained("t", 15) is None  # 11..20 were forgotten: read the store
    assert hub.retained("t", 40) is None  # nothing after 40
    assert hub.statistics()["retained_events"] == 20


def test_a_hole_in_a_tasks_events_empties_its_window() -> None:
    hub = EventHub(capacity=10)
    hub.watch("t")
    hub.publish([StoredEvent("t", seq, "tick", 1.0, "0") for seq in (1, 2)])
    hub.publish([StoredEvent("t", seq, "tick", 1.0, "0") for seq in (5, 6)])
    assert hub.retained("t", 0) is None
    ready = hub.retained("t", 4)
    assert ready is not None and [b.first for b in ready] == [5]


def test_a_batch_cuts_at_a_seq_and_after_its_terminal_event() -> None:
    events = [StoredEvent("t", seq, "tick", 1.0, "0") for seq in (3, 4, 5)]
    batch = EventBatch.from_stored("t", events)
    assert batch.after(2) is batch and batch.after(5) is None
    tail = batch.after(3)
    assert tail is not None and (tail.first, tail.last) == (4, 5)
    assert batch.through_terminal() == (batch, False)
    done = StoredEvent("t", 6, "state", 1.0, '{"to":"completed"}')
    late = StoredEvent("t", 7, "usage", 1.0, "{}")
    cut, terminal = EventBatch.from_stored("t", [*events, done, late]).through_terminal()
    assert terminal and cut.last == 6
    assert [event.seq for event in cut.events] == [3, 4, 5, 6]


# -- streams ------------------------------------------------------------------------------
async def test_a_stream_inside_the_window_reads_nothing_from_the_store(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = EventHub(capacity=100)
    store = FakeStore(hub)
    keeper = hub.watch("t")  # another subscriber keeps the task's window
    store.commit("t", 30)
    stream = open_stream(store, "t", after=12)
    await stream._open()
    store.commit("t", 5)
    assert await drain(stream) == list(range(13, 36))
    assert store.reads == 0
    assert keeper.pending == 35


async def test_history_is_read_in_pages_and_joins_live_events_without_gap_or_duplicate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = EventHub(capacity=50, retain=10)
    store = FakeStore(hub)
    total = 2 * HISTORY_PAGE + 10
    for _ in range(total // 10):
        store.commit("t", 10)  # before anyone watched: only the store has them
    stream = open_stream(store, "t", after=3)
    # Commits land while pages are read: the watch holds them, or lags
    # (harmless while history is read: the store has what it dropped).
    store.during_read = [lambda: store.commit("t", 30) for _ in range(5)]
    await stream._open()
    seen = await drain(stream)
    last = len(store.events["t"])
    assert seen == list(range(4, last + 1))
    assert store.reads >= 3


async def test_a_live_stream_that_lags_says_where_to_resume_or_resumes_by_itself(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = EventHub(capacity=5)
    store = FakeStore(hub)
    store.commit("t", 3)
    strict = open_stream(store, "t", capacity=5)
    lenient = open_stream(store, "t", capacity=5, resume_on_lag=True)
    await strict._open()
    await lenient._open()
    assert await drain(strict) == [1, 2, 3]
    assert await drain(lenient) == [1, 2, 3]
    for _ in range(4):
        store.commit("t", 2)
    with pytest.raises(SubscriptionLagged) as lagged:
        await strict.next_batch()
    assert lagged.value.resume_after == 3
    assert await drain(lenient) == list(range(4, 12))


async def test_a_stream_ends_after_the_terminal_event_per_event_or_per_batch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = EventHub(capacity=100)
    store = FakeStore(hub)
    store.commit("t", 3)
    by_event = open_stream(store, "t")
    by_batch = open_stream(store, "t", after=2)
    await by_event._open()
    await by_batch._open()
    store.finish("t")
    assert [event.seq async for event in by_event] == [1, 2, 3, 4]
    assert by_event.last_seq == 4
    assert await drain(by_batch) == [3, 4]
    past_the_end = open_stream(store, "t", after=4)
    await past_the_end._open()
    assert await past_the_end.next_batch() is None
    live = open_stream(store, "u")
    await live._open()
    store.hub.publish(
        [
            StoredEvent("u", 1, "tick", 1.0, "{}"),
            StoredEvent("u", 2, "state", 1.0, '{"to":"failed"}'),
            StoredEvent("u", 3, "usage", 1.0, "{}"),  # a batch goes no further than its end
        ]
    )
    assert await drain(live) == [1, 2]


async def test_a_stream_on_a_task_run_elsewhere_reads_the_store_and_fills_gaps_from_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = EventHub(capacity=100)
    store = FakeStore(hub)
    store.commit("t", 3)
    stream = open_stream(store, "t", remote=lambda task_id: True)
    await stream._open()
    assert await drain(stream) == [1, 2, 3]
    store.commit_elsewhere("t", 4)
    started = trio.current_time()
    assert await drain(stream) == [4, 5, 6, 7]  # read back at the next poll
    assert trio.current_time() - started <= REMOTE_POLL + 1  # (drain's own wait: 1 s)
    # Committed elsewhere, then here (the task moved): the gap is read back.
    store.commit_elsewhere("t", 2)
    store.commit("t", 2)
    assert await drain(stream) == [8, 9, 10, 11]
    store.finish("t")
    assert await drain(stream) == [12]
    assert await stream.next_batch() is None


async def test_a_gap_in_the_events_of_a_task_run_here_is_an_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = EventHub(capacity=100)
    store = FakeStore(hub)
    store.commit("t", 3)
    stream = open_stream(store, "t")  # not remote: every commit is heard here
    await stream._open()
    assert await drain(stream) == [1, 2, 3]
    store.commit_elsewhere("t", 2)
    store.commit("t", 1)
    with pytest.raises(RuntimeError, match="gap in task t events: 3 then 6"):
        await stream.next_batch()


async def test_an_all_events_stream_sees_every_tasks_batches_in_commit_order() -> None:
    hub = EventHub(capacity=100)
    store = FakeStore(hub)
    stream = AllEventsStream(hub, cast(Store, store), None, None)
    store.commit("a", 2)
    store.commit("b", 1)
    store.commit("a", 1)
    got = []
    for _ in range(3):
        batch = await stream.next_batch()
        got.append((batch.task_id, batch.first, batch.last))
    assert got == [("a", 1, 2), ("b", 1, 1), ("a", 3, 3)]
    store.commit("b", 2)
    assert [(event.task_id, event.seq) async for event in _take(stream, 2)] == [
        ("b", 2),
        ("b", 3),
    ]
    stream.close()


async def _take(stream: AllEventsStream, count: int) -> Any:
    for _ in range(count):
        yield await stream.__anext__()


async def test_a_sink_takes_live_batches_at_commit_time_in_order_with_the_rest() -> None:
    hub = EventHub(capacity=100)
    store = FakeStore(hub)
    stream = open_stream(store, "t")
    await stream._open()
    taken: list[list[int]] = []
    accept = True

    def sink(batch: EventBatch) -> bool:
        if batch.first == 9:
            raise RuntimeError("a bug in the sink")
        if accept:
            taken.append(list(batch.seqs))
        return accept

    returned: list[list[int]] = []

    async def consume() -> None:
        while (batch := await stream.next_batch(sink=sink)) is not None:
            returned.append(list(batch.seqs))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        store.commit("t", 3)  # taken by the sink, in the commit's call
        assert taken == [[1, 2, 3]] and returned == []
        accept = False
        store.commit("t", 2)  # refused: the consumer gets it
        store.commit("t", 1)  # queued behind it (the sink is not asked)
        await trio.testing.wait_all_tasks_blocked()
        assert returned == [[4, 5], [6]]
        accept = True
        store.commit("t", 2)
        store.commit("t", 1)  # raises in the sink: the consumer gets it
        await trio.testing.wait_all_tasks_blocked()
        assert returned == [[4, 5], [6], [9]] and taken[-1] == [7, 8]
        store.finish("t")  # the terminal event, taken by the sink: the stream ends
    assert taken[-1] == [10] and stream.last_seq == 10


async def test_streams_replaying_the_same_history_read_each_page_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = EventHub(capacity=10, retain=10)
    store = FakeStore(hub)
    for _ in range(25):
        store.commit("t", 100)  # 2,500 events, only in the store
    streams = [open_stream(store, "t", after=after) for after in (0, 7, 1500)]
    seen: dict[int, list[int]] = {}

    async def replay(stream: EventStream) -> None:
        after = stream.last_seq
        await stream._open()
        seen[after] = await drain(stream)

    async with trio.open_nursery() as nursery:
        for stream in streams:
            nursery.start_soon(replay, stream)
    assert seen == {
        0: list(range(1, 2501)),
        7: list(range(8, 2501)),
        1500: list(range(1501, 2501)),
    }
    # Pages 1-1000 and 1001-2000 once each; the last one (not full) by each stream.
    assert store.reads == 2 + 3


async def test_an_event_that_fails_at_commit_time_fails_its_consumer_not_the_others() -> None:
    hub = EventHub(capacity=100)
    store = FakeStore(hub)
    stream = open_stream(store, "t")
    await stream._open()
    other = hub.watch("t")
    failure: list[BaseException] = []

    async def consume() -> None:
        try:
            await stream.next_batch(sink=lambda batch: True)
        except ValueError as exc:
            failure.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        hub.publish([StoredEvent("t", 1, "state", 1.0, "{not json")])
        assert other.pending == 1  # the other subscriber got it all the same
    assert failure  # the consumer met the error itself
