"""Scenario b: event-heavy tasks, committed events per second.

T tasks (100) each emit K events (10,000; quick: 500) with ``ctx.emit``, in
chunks of 100 with a checkpoint between chunks (a task streaming output
yields to trio now and then), on SQLite (WAL, synchronous=FULL). Counted
by a commit listener on the store: an event counts once its batch is
committed. Two variants:
- ``emit``: nothing but emits, as above (what the issue asks);
- ``paced`` (full run only): the same, plus a durable step after every
  1,000 events; a durable call waits for the task's queued events to
  commit, so this variant has backpressure.
Each variant runs in a child process: a run that stalls (no event committed
for 30 s) reports what it committed and exits at once, instead of waiting
for its backlog to drain. Baseline: SQLite's batched-insert rate (rows/s in
transactions of 100) of this run.
"""

from __future__ import annotations

import os
import time
from typing import Any

import trio

import actors

from ._common import (
    SQLITE_BATCHED,
    Bench,
    ChildError,
    child_args,
    log,
    report,
    run_child,
    wait_with_progress,
)

app = actors.App()
CHUNK = 100
PACE = 1_000


async def _nothing() -> None:
    pass


@app.task("chatty")
async def chatty(ctx: actors.TaskContext, request: actors.Request) -> int:
    count, paced = request.input
    for i in range(count):
        ctx.emit("tick", {"i": i})
        if i % CHUNK == CHUNK - 1:
            await trio.lowlevel.checkpoint()
        if paced and i % PACE == PACE - 1:
            await ctx.step(f"paced-{i}", _nothing)
    return int(count)


async def _run(tasks: int, per_task: int, paced: bool, path: str) -> dict[str, Any]:
    async with actors.open_runtime(app, store=f"sqlite:///{path}", node_id="bench") as rt:
        await rt.result((await rt.submit("chatty", [10, paced])).id)  # warm up
        ticks = 0
        completed = 0
        last_commit = 0.0
        all_done = trio.Event()

        def on_commit(events: Any) -> None:
            nonlocal ticks, completed, last_commit
            last_commit = time.perf_counter()
            for event in events:
                if event.kind == "tick":
                    ticks += 1
                elif event.kind == "state" and '"to":"completed"' in event.data:
                    completed += 1
            if completed >= tasks:
                all_done.set()

        before = rt.store.statistics()
        rt.store.add_commit_listener(on_commit)
        started = time.perf_counter()
        ids: list[str] = []

        async def submit() -> None:
            ids.append((await rt.submit("chatty", [per_task, paced])).id)

        async with trio.open_nursery() as nursery:
            for _ in range(tasks):
                nursery.start_soon(submit)
        finished = await wait_with_progress(all_done, lambda: ticks)
        after = rt.store.statistics()
        elapsed = (time.perf_counter() if finished else last_commit) - started
        result = {
            "elapsed": elapsed,
            "ticks": ticks,
            "events_per_s": ticks / elapsed,
            "batches": after["batches"] - before["batches"],
            "writes": after["writes"] - before["writes"],
            "finished": finished,
            "completed": completed,
            "live_actors": rt.statistics()["actors"],
        }
        if not finished:
            # Stuck: say so and leave without draining the queued writes.
            report(result)
            os._exit(0)
    return result


def run(b: Bench) -> None:
    tasks = 100
    per_task = b.size(10_000, 500)
    variants = [False] if b.quick else [False, True]
    for paced in variants:
        name = "paced" if paced else "emit"
        log(f"b ({name}): {tasks} tasks x {per_task} events (child process)")
        args = {"tasks": tasks, "per_task": per_task, "paced": paced, "path": str(b.path("b.db"))}
        try:
            result = run_child("bench.events", args)
        except ChildError as exc:
            b.error("b", f"committed_events_per_s.{name}", str(exc))
            continue
        expected = tasks * per_task
        b.emit(
            "b",
            "committed_events_per_s" if not paced else "committed_events_per_s.paced",
            result["events_per_s"],
            "events/s",
            baseline=SQLITE_BATCHED,
            target=(">=", 100_000),
            tasks=tasks,
            events_per_task=per_task,
            events=result["ticks"],
            expected=expected,
            finished=result["finished"],
            tasks_completed=result["completed"],
            live_actors_at_end=result["live_actors"],
            elapsed_s=result["elapsed"],
            events_per_commit=result["ticks"] / max(result["batches"], 1),
            writes=result["writes"],
        )


def main() -> None:
    args = child_args()
    report(trio.run(_run, args["tasks"], args["per_task"], args["paced"], args["path"]))


if __name__ == "__main__":
    main()
