"""Helpers for testing task code and the runtime on trio's clock.

Everything here is public: use it in your own tests (with pytest-trio's
``autojump_clock`` fixture every timer, TTL, lease and backoff of the runtime
runs on trio's virtual clock).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ._runtime import Runtime

__all__ = ["stop_heartbeats"]


@contextmanager
def stop_heartbeats(runtime: Runtime) -> Iterator[None]:
    """Make ``runtime`` stop renewing its leases, as if its node hung.

    Its tasks' leases then expire after ``lease`` seconds; another runtime on
    the same store may claim them, and this runtime's later writes for them
    are refused (its actors stop). Renewal resumes on exit.
    """
    runtime._renewing = False
    try:
        yield
    finally:
        runtime._renewing = True
