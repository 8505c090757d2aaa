"""Committed events in shared batches, and the watches that buffer them for one subscriber.

``EventBatch`` is a run of one task's committed events with consecutive
seqs, kept as columns of plain values and shared by everyone who receives
it; ``Watch`` is a subscriber's bounded buffer of batches, which the hub
(``_hub.EventHub``) fills without waiting; ``StateWatch`` follows only a
task's state changes; ``Wakeup`` is the reusable wake-up call under both.
See the theory of operation in ``_events.py``.
"""

from __future__ import annotations

import collections
import operator
from collections.abc import Callable, Iterator, Sequence
from typing import Final

import attrs
import trio

from storage import StoredEvent, decode

from ..core._info import TaskEvent

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


def tails_after(batches: Sequence[EventBatch], seq: int) -> list[EventBatch]:
    """The events of ``batches`` with seq > ``seq``."""
    return [tail for batch in batches if (tail := batch.after(seq)) is not None]


def consecutive_runs(task_id: str, stored: Sequence[StoredEvent]) -> Iterator[EventBatch]:
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
