"""Scenario c: cancel latency with N live actors (10,000; quick: 1,000).

N tasks are started on SQLite, each blocked inside a durable step (an async
function waiting on a trio Event). Then S of them are cancelled one after
the other; for each:
- scope: from calling ``rt.cancel`` to the step function's
  ``except trio.Cancelled`` running (the handler's cancel scope fired);
- durable: from calling ``rt.cancel`` to it returning (the ``cancelled``
  state is committed before it returns).
Then a burst: B cancels at once (one trio task each), the same two latencies.
Baselines: trio's own cancel latency with as many tasks alive, and one
SQLite single-row transaction (its p50), both of this run.
"""

from __future__ import annotations

import time
from typing import Any

import trio

import actors

from ._common import (
    SQLITE_TXN_LATENCY,
    TRIO_CANCEL_P50,
    TRIO_CANCEL_P99,
    Bench,
    log,
    percentile,
    wait_with_progress,
)

app = actors.App()


class _Shared:
    """What the handlers and the measuring code share (one trio.run at a time)."""

    def __init__(self) -> None:
        self.blocked = 0
        self.all_blocked = trio.Event()
        self.expected = 0
        self.never = trio.Event()
        self.fired: dict[str, float] = {}


shared: _Shared | None = None


async def _block(task_id: str) -> None:
    assert shared is not None
    shared.blocked += 1
    if shared.blocked >= shared.expected:
        shared.all_blocked.set()
    try:
        await shared.never.wait()
    except trio.Cancelled:
        shared.fired[task_id] = time.perf_counter()
        raise


@app.task("blocked")
async def blocked(ctx: actors.TaskContext, request: actors.Request) -> None:
    await ctx.step("block", _block, ctx.task_id)


async def _run(alive: int, samples: int, burst: int, path: str) -> dict[str, Any]:
    global shared
    shared = _Shared()
    shared.expected = alive
    async with actors.open_runtime(app, store=f"sqlite:///{path}", node_id="bench") as rt:
        ids: list[str] = []

        async def submit() -> None:
            ids.append((await rt.submit("blocked")).id)

        async with trio.open_nursery() as nursery:
            for _ in range(alive):
                nursery.start_soon(submit)
        if not await wait_with_progress(shared.all_blocked, lambda: shared.blocked):
            raise RuntimeError(f"the run stalled: {shared.blocked} of {alive} tasks started")
        live = rt.statistics()["actors"]

        scope: list[float] = []
        durable: list[float] = []
        for task_id in ids[:samples]:
            started = time.perf_counter()
            await rt.cancel(task_id)
            durable.append(time.perf_counter() - started)
            scope.append(shared.fired[task_id] - started)

        burst_scope: list[float] = []
        burst_durable: list[float] = []
        chosen = ids[samples : samples + burst]
        began: dict[str, float] = {}

        async def cancel(task_id: str) -> None:
            began[task_id] = time.perf_counter()
            await rt.cancel(task_id)
            burst_durable.append(time.perf_counter() - began[task_id])

        async with trio.open_nursery() as nursery:
            for task_id in chosen:
                nursery.start_soon(cancel, task_id)
        burst_scope = [shared.fired[t] - began[t] for t in chosen]
        shared.never.set()
    return {
        "live_actors": live,
        "scope": scope,
        "durable": durable,
        "burst_scope": burst_scope,
        "burst_durable": burst_durable,
    }


def run(b: Bench) -> None:
    alive = b.size(10_000, 1_000)
    samples = b.size(500, 200)
    burst = b.size(1_000, 200)
    log(f"c: {alive} live actors, {samples} sequential cancels, a burst of {burst}")
    result = trio.run(_run, alive, samples, burst, str(b.path("c.db")))
    extra = {"alive": alive, "live_actors": result["live_actors"], "samples": samples}
    ms = 1e3
    scope, durable = result["scope"], result["durable"]
    b.emit(
        "c",
        "cancel_scope_p50",
        percentile(scope, 50) * ms,
        "ms",
        baseline=TRIO_CANCEL_P50,
        better="lower",
        **extra,
    )
    b.emit(
        "c",
        "cancel_scope_p99",
        percentile(scope, 99) * ms,
        "ms",
        baseline=TRIO_CANCEL_P99,
        better="lower",
        target=("<", 2),
        **extra,
    )
    b.emit(
        "c",
        "cancel_durable_p50",
        percentile(durable, 50) * ms,
        "ms",
        baseline=SQLITE_TXN_LATENCY,
        better="lower",
        **extra,
    )
    b.emit(
        "c",
        "cancel_durable_p99",
        percentile(durable, 99) * ms,
        "ms",
        baseline=SQLITE_TXN_LATENCY,
        better="lower",
        target=("<", 20),
        **extra,
    )
    extra["samples"] = burst
    for name, values in (("scope", result["burst_scope"]), ("durable", result["burst_durable"])):
        for p in (50, 99):
            b.emit(
                "c",
                f"burst_cancel_{name}_p{p}",
                percentile(values, p) * ms,
                "ms",
                baseline=TRIO_CANCEL_P99 if name == "scope" else SQLITE_TXN_LATENCY,
                better="lower",
                **extra,
            )
