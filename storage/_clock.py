"""The runtime's one clock.

Durations (timeouts, heartbeats, leases, TTLs, backoff) run on trio's clock,
so tests under ``autojump_clock`` never sleep for real. Stored timestamps
come from the same clock, anchored to wall time when the clock is made:
``now() = wall_anchor + (trio.current_time() - trio_anchor)``.
"""

from __future__ import annotations

import sys
import time

import trio


class Clock:
    """Wall time that advances with trio's clock. Make it inside trio.run."""

    def __init__(self, wall_anchor: float | None = None) -> None:
        self._wall = time.time() if wall_anchor is None else wall_anchor
        self._trio = trio.current_time()

    def now(self) -> float:
        """Seconds since the epoch, on trio's clock."""
        return self._wall + (trio.current_time() - self._trio)

    def deadline(self, at: float) -> float:
        """The trio deadline (for CancelScope/sleep_until) of a wall timestamp."""
        return self._trio + (at - self._wall)


def on_virtual_time() -> bool:
    """Whether trio runs on a virtual clock (trio.testing.MockClock).

    On a virtual clock (``autojump_clock``) waiting for a worker thread looks
    like idleness, and the clock would jump over real work: timeouts and
    leases would fire while a write is in flight. Blocking calls then run
    inline, so tests are deterministic.
    """
    # (not imported here: trio.testing imports pytest, a tenth of a second
    # at every start; a MockClock exists only if someone imported it)
    testing = sys.modules.get("trio.testing")
    return testing is not None and isinstance(trio.lowlevel.current_clock(), testing.MockClock)
