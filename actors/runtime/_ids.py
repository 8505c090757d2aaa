"""Node ids and task ids."""

from __future__ import annotations

import os
import socket
import time


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
