"""The bounded, coalescing send queue of one websocket connection.

Theory of operation
-------------------
Everything a connection sends goes through its ``Outbox``, in order, and one
writer task takes it out (``get``) and writes it to the socket. Two kinds of
entries share the queue:

- *control frames*: replies, ``end`` and ``lagged``. They are never dropped.
  Their number is bounded by the connection itself: its reader waits for
  ``wait_control_room`` before it reads the next request, and each
  subscription sends at most one ``end`` or ``lagged``.
- *event batches*: the events of one subscription that wait to be sent.
  Events are offered as text, one or several at a time (a committed batch
  is encoded once for all its subscribers and offered whole). Events
  offered while their subscription's last batch is still queued (and not
  full) join that batch, so events that pile up while the writer is busy
  leave as one ``events`` frame: batching happens exactly when a client
  falls behind, which is what lets fan-out reach high rates.

Events are bounded per connection: ``offer_event`` refuses events that would
take the count waiting past ``max_pending`` (unless none wait: a batch
larger than that still goes, alone), and the subscription's task then waits
in ``wait_room``. While it waits, the runtime keeps buffering that
subscription's live events in its own bounded watch; when that overflows,
the subscription lags (the runtime's ``SubscriptionLagged``) and the server
sends ``lagged``. So a client that stops reading costs a bounded amount of
memory and never slows a task or another client.

Nothing here touches a socket; the waits are trio events.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import attrs
import trio

from ..runtime._events import Wakeup


@attrs.define(eq=False)
class _Batch:
    """Events of one subscription that leave as one frame."""

    sub: str
    #: Texts of one or more comma-separated events each.
    parts: list[str] = attrs.field(factory=list)
    #: Events in ``parts``.
    count: int = 0
    #: Characters in ``parts``, plus one per part.
    size: int = 0


@attrs.frozen
class OutboxStatistics:
    """What waits in an outbox."""

    #: Events waiting in batches.
    pending_events: int
    #: Control frames (replies, end, lagged) waiting.
    pending_control: int
    #: Entries (frames to be) in the queue.
    queued_frames: int


class Outbox:
    """The ordered frames one connection is about to send.

    Args:
        make_frame: builds the frame of a batch (``events_frame(sub, parts, count)``).
        max_pending: most events waiting at once.
        max_control: ``wait_control_room`` waits while this many control frames wait.
        max_batch: a batch takes no more events once it holds this many.
        max_batch_size: a batch takes no text that would take it past this
            many characters (a bigger text offered alone still leaves alone).
    """

    def __init__(
        self,
        make_frame: Callable[[str, list[str], int], str],
        *,
        max_pending: int,
        max_control: int = 32,
        max_batch: int = 1 << 16,
        max_batch_size: int = 1 << 20,
    ) -> None:
        if max_pending < 1 or max_control < 1 or max_batch < 1:
            raise ValueError("outbox limits must be >= 1")
        self._make_frame = make_frame
        self.max_pending = max_pending
        self.max_control = max_control
        self.max_batch = max_batch
        self.max_batch_size = max_batch_size
        self._queue: collections.deque[str | _Batch] = collections.deque()
        #: sub -> its last batch while that is still queued and may grow.
        self._open: dict[str, _Batch] = {}
        self._pending_events = 0
        self._pending_control = 0
        #: The writer's (it alone waits for frames).
        self._filled = Wakeup()
        self._drained = trio.Event()
        #: Tasks waiting on ``_drained``.
        self._drain_waiters = 0
        self._closed = False

    # -- producers ---------------------------------------------------------------
    def put_control(self, frame: str, sub: str | None = None) -> None:
        """Queue a frame that must not be dropped (a reply, ``end``, ``lagged``).

        ``sub`` names the subscription the frame belongs to: its later
        events go after it, never into a batch queued before it.
        """
        if self._closed:
            return
        if sub is not None:
            self._open.pop(sub, None)
        self._queue.append(frame)
        self._pending_control += 1
        self._filled.set()

    def offer_event(self, sub: str, text: str, count: int = 1) -> bool:
        """Queue ``count`` encoded events of subscription ``sub`` if there is room.

        Args:
            sub: the subscription.
            text: the events' JSON texts, comma-separated (``EncodedEvents.text``).
            count: how many events ``text`` holds.

        Returns:
            False if they would take the events waiting past ``max_pending``
            while some wait already (nothing was queued); True otherwise
            (also after ``close``, when the events are dropped).
        """
        if self._closed:
            return True
        pending = self._pending_events
        if pending and pending + count > self.max_pending:
            return False
        batch = self._open.get(sub)
        if batch is None or (
            # batch.size counts a comma per part: joined, the batch would be this long.
            batch.count >= self.max_batch or batch.size + len(text) > self.max_batch_size
        ):
            batch = self._open[sub] = _Batch(sub)
            self._queue.append(batch)
        batch.parts.append(text)
        batch.count += count
        batch.size += len(text) + 1
        self._pending_events = pending + count
        self._filled.set()
        return True

    def discard(self, sub: str) -> None:
        """Drop every queued event of subscription ``sub`` (it was unsubscribed)."""
        self._open.pop(sub, None)
        kept: collections.deque[str | _Batch] = collections.deque()
        for entry in self._queue:
            if isinstance(entry, _Batch) and entry.sub == sub:
                self._pending_events -= entry.count
            else:
                kept.append(entry)
        self._queue = kept
        self._wake_drained()

    async def wait_room(self, count: int = 1) -> None:
        """Wait until an offer of ``count`` events would fit (at once after ``close``).

        Cancellation: safe; nothing is queued or lost by waiting.
        """
        while (
            self._pending_events
            and self._pending_events + count > self.max_pending
            and not self._closed
        ):
            await self._wait_drained()
        await trio.lowlevel.checkpoint()

    async def wait_control_room(self) -> None:
        """Wait until fewer than ``max_control`` control frames wait.

        The connection's reader calls it before reading the next request, so
        a client that sends requests without reading replies is paced by its
        own socket. Cancellation: safe.
        """
        while self._pending_control >= self.max_control and not self._closed:
            await self._wait_drained()
        await trio.lowlevel.checkpoint()

    # -- the writer ----------------------------------------------------------------
    async def get(self) -> str:
        """Wait for the next frame and take it out of the queue.

        Cancellation: safe; a frame is removed only when it is returned.

        Raises:
            trio.ClosedResourceError: the outbox was closed.
        """
        while not self._queue:
            if self._closed:
                raise trio.ClosedResourceError("the outbox is closed")
            await self._filled.wait()
        entry = self._queue.popleft()
        if isinstance(entry, str):
            self._pending_control -= 1
            frame = entry
        else:
            if self._open.get(entry.sub) is entry:
                del self._open[entry.sub]
            self._pending_events -= entry.count
            frame = self._make_frame(entry.sub, entry.parts, entry.count)
        self._wake_drained()
        return frame

    def close(self) -> None:
        """Drop everything queued; later frames are dropped; waiters return."""
        self._closed = True
        self._queue.clear()
        self._open.clear()
        self._pending_events = 0
        self._pending_control = 0
        self._filled.set()
        self._wake_drained()

    def _wake_drained(self) -> None:
        # A fresh event only when someone waits: the writer calls this per frame.
        if self._drain_waiters:
            self._drained.set()
            self._drained = trio.Event()

    async def _wait_drained(self) -> None:
        self._drain_waiters += 1
        try:
            await self._drained.wait()
        finally:
            self._drain_waiters -= 1

    def statistics(self) -> OutboxStatistics:
        """How many events and control frames wait."""
        return OutboxStatistics(self._pending_events, self._pending_control, len(self._queue))
