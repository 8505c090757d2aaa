"""RunSlots: at most N handler runs at once, and no actor for a task that waits.

Theory of operation
-------------------
``open_runtime(max_running=N)`` bounds the handler runs of a node. A run
takes a slot before its task moves to ``running`` and gives it back when
the run is over, like a ``trio.CapacityLimiter``. What differs is where a
task waits for a slot:

* A task just submitted, when no slot is free, gets no actor at all: its
  record joins ``waiting`` (oldest first), and the store holds the rest, as
  for a passivated task. Ten thousand tasks submitted at once cost ten
  thousand records, not ten thousand actors, trio tasks and coroutines that
  the garbage collector would scan over and over (issue #5: at 10,000
  concurrent 3-step tasks on SQLite, full collections were the largest
  cost of the run).
* An actor that needs a slot (a task revived by a message or resumed after
  a restart, a second run of the same actor) parks until one is free. It is
  served before the waiting records: it holds memory already.

A slot freed by a run goes straight to the next in line: the parked actor,
or else a new actor started for the oldest waiting record (the slot travels
with it, so no third party can take it meanwhile). A message for a waiting
task (a cancel, a signal, a Request) starts its actor at once, without a
slot: the message is handled, and the run, if any, waits for a slot like
any other.

Waiting tasks stay ``pending`` and owned by this node, their leases renewed
with the others; when the node closes they are released with the rest, and
the next node that opens on the store starts them.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import trio

from storage import TaskRecord


class RunSlots:
    """At most ``total`` runs at once; see the module docstring.

    Args:
        total: the number of slots (at least 1: ``open_runtime`` checks).
        start: starts the actor of a waiting task, handing it a slot; False
            if it could not (the runtime is closing), and the slot is free.
    """

    __slots__ = ("_lot", "_start", "free", "waiting")

    def __init__(self, total: int, start: Callable[[TaskRecord], bool]) -> None:
        self.free = total
        self._start = start
        self._lot = trio.lowlevel.ParkingLot()
        #: Tasks submitted here that wait for a slot, oldest first (id ->
        #: record). An OrderedDict: a dict drained from its front keeps the
        #: holes at its front, and finding the first key then walks them all
        #: (100,000 waiting tasks took 3.7 s to start, against 15 ms).
        self.waiting: collections.OrderedDict[str, TaskRecord] = collections.OrderedDict()

    def take_nowait(self) -> bool:
        """Take a slot for a task just submitted, if one is free and nobody is in line."""
        if self.free and not self._lot and not self.waiting:
            self.free -= 1
            return True
        return False

    async def acquire(self) -> None:
        """Wait for a slot (for an actor). A checkpoint.

        Cancellation: while parked, the actor leaves the line holding nothing;
        once handed a slot, it holds it (give it back with ``release``).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.free and not self._lot:
            self.free -= 1
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        await self._lot.park()

    def release(self) -> None:
        """Give a slot back: to the parked actor first, else to the oldest waiting task."""
        if self._lot:
            self._lot.unpark()
            return
        if self.waiting and self._start(self.waiting.popitem(last=False)[1]):
            return
        self.free += 1
