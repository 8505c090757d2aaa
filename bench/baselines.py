"""Baselines measured in the same run: trio itself and SQLite itself.

- trio spawn rate: tasks started (``start_soon``) and finished per second;
- trio idle task RSS: bytes per task blocked on its own memory channel
  (a child process, so the RSS is clean);
- trio cancel latency with N tasks alive: ``scope.cancel()`` to the task's
  ``except Cancelled`` running, p50 and p99;
- SQLite (WAL, synchronous=FULL, plain ``sqlite3``): single-row transactions
  per second (and their mean latency), and rows per second inserted in
  transactions of 100 rows.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import sqlite3
import time

import trio
import trio.testing

from ._common import (
    SQLITE_BATCHED,
    SQLITE_TXN,
    SQLITE_TXN_LATENCY,
    TRIO_CANCEL_P50,
    TRIO_CANCEL_P99,
    TRIO_IDLE_RSS,
    TRIO_SPAWN,
    Bench,
    child_args,
    log,
    percentile,
    report,
    rss_bytes,
    run_child,
)


def trim_memory() -> None:
    """Collect garbage and give freed C heap back, so RSS shows what is live."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


async def _spawn_rate(n: int) -> float:
    async def nothing() -> None:
        pass

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(nothing)
    return n / (time.perf_counter() - started)


async def _cancel_latency(alive: int, samples: int) -> list[float]:
    """Seconds from scope.cancel() to the cancelled task's handler, per sample."""
    fired: dict[int, float] = {}
    done = [trio.Event() for _ in range(alive)]
    scopes = [trio.CancelScope() for _ in range(alive)]
    never = trio.Event()

    async def idle(i: int) -> None:
        with scopes[i]:
            try:
                await never.wait()
            except trio.Cancelled:
                fired[i] = time.perf_counter()
                raise
        done[i].set()

    latencies = []
    async with trio.open_nursery() as nursery:
        for i in range(alive):
            nursery.start_soon(idle, i)
        await trio.testing.wait_all_tasks_blocked()
        for i in range(samples):
            started = time.perf_counter()
            scopes[i].cancel()
            await done[i].wait()
            latencies.append(fired[i] - started)
        nursery.cancel_scope.cancel()
    return latencies


def _idle_rss_child(n: int) -> dict[str, float]:
    """In a child: RSS added by n trio tasks each blocked on its own channel."""

    async def main() -> dict[str, float]:
        channels = []

        async def idle(receive: trio.MemoryReceiveChannel[int]) -> None:
            await receive.receive()

        async with trio.open_nursery() as nursery:
            await trio.testing.wait_all_tasks_blocked()
            trim_memory()
            before = rss_bytes()
            for _ in range(n):
                send, receive = trio.open_memory_channel[int](0)
                channels.append(send)
                nursery.start_soon(idle, receive)
            await trio.testing.wait_all_tasks_blocked()
            trim_memory()
            after = rss_bytes()
            nursery.cancel_scope.cancel()
        return {"n": n, "rss_added": after - before, "per_task": (after - before) / n}

    return trio.run(main)


def _sqlite_connection(path: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = FULL")
    return connection


def _sqlite_single_row(path: str, n: int) -> list[float]:
    connection = _sqlite_connection(path)
    connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, task_id TEXT, data TEXT)")
    latencies = []
    for i in range(n):
        started = time.perf_counter()
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("INSERT INTO t (task_id, data) VALUES (?, ?)", (f"t{i}", '{"i":1}'))
        connection.execute("COMMIT")
        latencies.append(time.perf_counter() - started)
    connection.close()
    return latencies


def _sqlite_batched(path: str, rows: int, batch: int = 100) -> float:
    connection = _sqlite_connection(path)
    connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, task_id TEXT, data TEXT)")
    values = [(f"t{i}", '{"i":1}') for i in range(batch)]
    started = time.perf_counter()
    for _ in range(rows // batch):
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany("INSERT INTO t (task_id, data) VALUES (?, ?)", values)
        connection.execute("COMMIT")
    elapsed = time.perf_counter() - started
    connection.close()
    return (rows // batch) * batch / elapsed


def run(b: Bench) -> None:
    """Measure every baseline; each one is guarded on its own."""
    s = "baseline"
    try:
        n = b.size(100_000, 20_000)
        rate = max(trio.run(_spawn_rate, n) for _ in range(3))
        b.baselines[TRIO_SPAWN] = rate
        b.emit(s, TRIO_SPAWN, rate, "tasks/s", n=n, reference="~180,000/s (issue)")
    except Exception as exc:
        b.error(s, TRIO_SPAWN, repr(exc))
    try:
        n = b.size(100_000, 10_000)
        result = run_child("bench.baselines", {"child": "idle_rss", "n": n})
        b.baselines[TRIO_IDLE_RSS] = result["per_task"]
        b.emit(
            s,
            TRIO_IDLE_RSS,
            result["per_task"],
            "bytes/task",
            n=n,
            reference="~4.7 KB (issue)",
        )
    except Exception as exc:
        b.error(s, TRIO_IDLE_RSS, repr(exc))
    try:
        alive = b.size(10_000, 1_000)
        samples = b.size(2_000, 500)
        latencies = trio.run(_cancel_latency, alive, samples)
        p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
        b.baselines[TRIO_CANCEL_P50] = p50 * 1e3
        b.baselines[TRIO_CANCEL_P99] = p99 * 1e3
        b.emit(s, TRIO_CANCEL_P50, p50 * 1e3, "ms", alive=alive, samples=samples)
        b.emit(s, TRIO_CANCEL_P99, p99 * 1e3, "ms", alive=alive, samples=samples)
    except Exception as exc:
        b.error(s, "trio_cancel_latency", repr(exc))
    try:
        n = b.size(1_000, 200)
        latencies = _sqlite_single_row(str(b.path("single.db")), n)
        rate = len(latencies) / sum(latencies)
        b.baselines[SQLITE_TXN] = rate
        b.baselines[SQLITE_TXN_LATENCY] = percentile(latencies, 50) * 1e3
        b.emit(s, SQLITE_TXN, rate, "txn/s", n=n, reference="~5,000/s (issue)")
        b.emit(s, SQLITE_TXN_LATENCY, percentile(latencies, 50) * 1e3, "ms", stat="p50", n=n)
    except Exception as exc:
        b.error(s, SQLITE_TXN, repr(exc))
    try:
        rows = b.size(200_000, 20_000)
        rate = _sqlite_batched(str(b.path("batched.db")), rows)
        b.baselines[SQLITE_BATCHED] = rate
        b.emit(
            s, SQLITE_BATCHED, rate, "rows/s", rows=rows, batch=100, reference="~200,000/s (issue)"
        )
    except Exception as exc:
        b.error(s, SQLITE_BATCHED, repr(exc))
    log("baselines done")


def main() -> None:
    args = child_args()
    if args["child"] == "idle_rss":
        report(_idle_rss_child(args["n"]))


if __name__ == "__main__":
    main()
