"""Scenario d: memory per live idle actor, and of tasks waiting for input.

Each measurement runs in its own child process, so RSS is clean:
- live idle actors: N tasks (100,000; quick: 10,000) on SQLite, each blocked
  inside a durable step (an async function waiting on a trio Event): RSS
  added per task, measured after the runtime opened and one task ran;
- waiting for input: N tasks that call ``ctx.ask`` at once and so sit in
  ``input_required``: RSS added in total and per task, and how many actors
  are still alive (the runtime passivates them: none should be).
Submits run 500 at a time. Before each reading: ``gc.collect()`` and
``malloc_trim(0)`` (the baseline gets the same treatment).
Baseline: trio's own RSS per idle task blocked on a channel, of this run.
"""

from __future__ import annotations

from typing import Any

import trio

import actors

from ._common import (
    TRIO_IDLE_RSS,
    Bench,
    ChildError,
    child_args,
    log,
    report,
    rss_bytes,
    run_children,
    wait_with_progress,
)
from .baselines import trim_memory

app = actors.App()
SUBMITTERS = 500


class _Shared:
    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.reached = trio.Event()
        self.never = trio.Event()

    def arrived(self) -> None:
        self.count += 1
        if self.count >= self.expected:
            self.reached.set()


shared: _Shared | None = None


async def _block() -> None:
    assert shared is not None
    shared.arrived()
    await shared.never.wait()


@app.task("idle")
async def idle(ctx: actors.TaskContext, request: actors.Request) -> None:
    await ctx.step("block", _block)


@app.task("asking")
async def asking(ctx: actors.TaskContext, request: actors.Request) -> Any:
    assert shared is not None
    shared.arrived()
    return await ctx.ask({"question": "go on?"})


async def _child(kind: str, n: int, path: str) -> dict[str, Any]:
    global shared
    name = "idle" if kind == "actors" else "asking"
    async with actors.open_runtime(app, store=f"sqlite:///{path}", node_id="bench") as rt:
        shared = _Shared(1)
        if kind == "actors":
            shared.never.set()  # the warm-up task finishes
        warm = await rt.submit(name)
        await shared.reached.wait()
        if kind == "actors":
            await rt.wait(warm.id)
        else:
            await rt.wait(warm.id, states=["input_required"])
        await trio.sleep(0.2)
        shared = _Shared(n)
        trim_memory()
        before = rss_bytes()
        queue = iter(range(n))

        async def submitter() -> None:
            for _ in queue:
                await rt.submit(name)

        async with trio.open_nursery() as nursery:
            for _ in range(SUBMITTERS):
                nursery.start_soon(submitter)
        if not await wait_with_progress(shared.reached, lambda: shared.count):
            raise RuntimeError(f"the run stalled: {shared.count} of {n} tasks started")
        if kind == "input":
            # Wait until every task is recorded as input_required and passivated.
            while rt.statistics()["actors"] > 0:  # noqa: ASYNC110 (a statistic: no event)
                await trio.sleep(0.05)
        await trio.sleep(0.2)
        trim_memory()
        after = rss_bytes()
        live = rt.statistics()["actors"]
        waiting = len(await rt.list(states=["input_required"])) if kind == "input" else None
        shared.never.set()
    return {
        "n": n,
        "rss_added": after - before,
        "per_task": (after - before) / n,
        "live_actors": live,
        "input_required": waiting,
        "rss_before": before,
    }


def run(b: Bench) -> None:
    n = b.size(100_000, 10_000)
    log(f"d: {n} live idle actors, and {n} tasks in input_required (two child processes)")
    # Each measurement has a process of its own (so its RSS is its own): run both at once.
    actors_result, input_result = run_children(
        [
            ("bench.memory", {"kind": "actors", "n": n, "path": str(b.path("d-actors.db"))}),
            ("bench.memory", {"kind": "input", "n": n, "path": str(b.path("d-input.db"))}),
        ]
    )
    if isinstance(actors_result, ChildError):
        b.error("d", "rss_per_live_idle_actor", str(actors_result))
    else:
        b.emit(
            "d",
            "rss_per_live_idle_actor",
            actors_result["per_task"],
            "bytes/actor",
            baseline=TRIO_IDLE_RSS,
            better="lower",
            target=("<", 8192),
            n=n,
            live_actors=actors_result["live_actors"],
            rss_added_mb=actors_result["rss_added"] / 2**20,
        )
    if isinstance(input_result, ChildError):
        b.error("d", "rss_added_by_input_required_tasks", str(input_result))
        return
    # The target is for 100,000 tasks; a quick run's 10,000 carry the fixed
    # costs (SQLite's page cache, allocator arenas) almost alone: no target.
    b.emit(
        "d",
        "rss_added_by_input_required_tasks",
        input_result["rss_added"] / 2**20,
        "MB",
        baseline=TRIO_IDLE_RSS,
        baseline_value=b.baselines.get(TRIO_IDLE_RSS, 0) * n / 2**20 or None,
        better="lower",
        target=None if b.quick else ("<", 100),
        n=n,
        per_task_bytes=input_result["per_task"],
        live_actors=input_result["live_actors"],
        input_required=input_result["input_required"],
        baseline_note="trio idle-task RSS x n",
    )


def main() -> None:
    args = child_args()
    report(trio.run(_child, args["kind"], args["n"], args["path"]))


if __name__ == "__main__":
    main()
