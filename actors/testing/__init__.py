"""Test your task code on trio's clock: fixtures, fault injection, simulation.

Everything here is public and documented in the README ("Testing your
tasks"). Installing taskactors registers a pytest plugin (entry point
``pytest11``) with the fixtures ``taskactors_store``,
``taskactors_sqlite_store`` and ``taskactors_runtime``.

With pytest-trio's ``autojump_clock`` fixture every timer of the runtime
(timeouts, retry backoff, heartbeats, leases, TTLs) runs on trio's virtual
clock, and the stores run inline, so a test of an hour-long task with ten
retries takes milliseconds and is deterministic.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import trio
import trio.testing

import storage

from ..runtime._app import App
from ..runtime._faults import CrashPoint, Point
from ..runtime._runtime import Runtime, open_runtime
from ._simulation import (
    SimulationFailure,
    SimulationReport,
    run_simulation,
    simulation_app,
    soak,
)

__all__ = [
    "CrashPoint",
    "Point",
    "SimulationFailure",
    "SimulationReport",
    "crash_at",
    "fail_writes",
    "hang_writes",
    "open_test_runtime",
    "run_simulation",
    "simulation_app",
    "soak",
    "steal_lease",
    "stop_heartbeats",
    "wait_idle",
]


@asynccontextmanager
async def open_test_runtime(
    app: App, store: str | storage.Store = "memory://", **options: Any
) -> AsyncIterator[Runtime]:
    """``open_runtime`` with test defaults (node_id "test-node").

    Give it an open ``storage.Store`` (the ``taskactors_store`` fixture) to
    reopen a second runtime on the same data after a crash or a restart.
    """
    options.setdefault("node_id", "test-node")
    async with open_runtime(app, store, **options) as runtime:
        yield runtime


async def wait_idle(runtime: Runtime) -> None:
    """Wait until every actor is blocked and the storage actor has nothing queued.

    Use it under ``autojump_clock`` (the stores then run inline, so nothing
    hides in a worker thread). Note that the virtual clock may jump while you
    wait, exactly as it would for any other idle trio program.
    """
    while True:
        await trio.testing.wait_all_tasks_blocked()
        if runtime.store.idle:
            return


@contextmanager
def stop_heartbeats(runtime: Runtime) -> Iterator[None]:
    """Make ``runtime`` stop renewing its leases, as if its node hung.

    Its tasks' leases then expire after ``lease`` seconds; another runtime on
    the same store may claim them, and this runtime's later writes for them
    are refused (its actors stop). Renewal resumes on exit.
    """
    with runtime.pause_lease_renewal():
        yield


def crash_at(
    runtime: Runtime, when: Point, *, step: str | None = None, task_id: str | None = None
) -> CrashPoint:
    """Crash ``runtime`` when a step reaches ``when``.

    ``when`` is ``"before_step"`` (the body is about to run),
    ``"after_body"`` (the body ran, its result is not stored) or
    ``"after_store"`` (the result is durable). The crash is what a killed
    process leaves: every actor stops at once, nothing more is written, the
    leases stay held; calls on the runtime then raise RuntimeClosedError.
    Reopen a runtime on the same store (same node_id: it takes its tasks back
    at once) to see what runs again. Fires once; ``await point.wait()``.
    """
    return CrashPoint(when, step, task_id).arm(runtime)


def fail_writes(
    store: storage.Store, count: int, error: storage.StorageError | None = None
) -> None:
    """Make the next ``count`` store writes fail (default: BackendUnavailableError)."""
    writer = store._writer
    writer.fail_next = count
    writer.fail_error = error


def hang_writes(store: storage.Store, seconds: float) -> None:
    """Make the storage actor hang for ``seconds`` (trio's clock) before its next batch.

    Writes queue up meanwhile and are applied afterwards, in order.
    """
    store._writer.hang_until = trio.current_time() + seconds


async def steal_lease(
    store: storage.Store, task_id: str, *, node_id: str = "thief", lease: float = 3600
) -> storage.TaskRecord:
    """Claim a task for another node, as if it took the task over.

    The epoch grows: the runtime that ran the task is refused at its next
    write for it and its actor stops.
    """
    record: storage.TaskRecord = await store.execute(
        storage.ClaimTask(task_id, node_id, store.clock.now() + lease, force=True)
    )
    return record
