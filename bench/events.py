"""Scenario b: event-heavy tasks, committed events per second.

T tasks (100) each emit K events (10,000; quick: 500) with ``ctx.emit``, in
chunks of 100 with a checkpoint between chunks (a task streaming output
yields to trio now and then), on SQLite (WAL, synchronous=FULL). Counted
by a commit listener on the store: an event counts once its batch is
committed. Baseline: SQLite's batched-insert rate (rows/s in transactions of
100) of this run.
"""

from __future__ import annotations

import time
from typing import Any

import trio

import actors

from ._common import SQLITE_BATCHED, Bench, log, wait_with_progress

app = actors.App()
CHUNK = 100


@app.task("chatty")
async def chatty(ctx: actors.TaskContext, request: actors.Request) -> int:
    count = int(request.input)
    for i in range(count):
        ctx.emit("tick", {"i": i})
        if i % CHUNK == CHUNK - 1:
            await trio.lowlevel.checkpoint()
    return count


async def _run(tasks: int, per_task: int, path: str) -> dict[str, Any]:
    async with actors.open_runtime(app, store=f"sqlite:///{path}", node_id="bench") as rt:
        await rt.result((await rt.submit("chatty", 10)).id)  # warm up
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
        remove = rt.store.add_commit_listener(on_commit)
        started = time.perf_counter()
        try:
            ids: list[str] = []

            async def submit() -> None:
                ids.append((await rt.submit("chatty", per_task)).id)

            async with trio.open_nursery() as nursery:
                for _ in range(tasks):
                    nursery.start_soon(submit)
            finished = await wait_with_progress(all_done, lambda: ticks)
        finally:
            remove()
        after = rt.store.statistics()
        states: dict[str, int] = {}
        for task_id in ids:
            state = (await rt.get(task_id)).state.value
            states[state] = states.get(state, 0) + 1
        live = rt.statistics()["actors"]
    elapsed = (last_commit if not finished else time.perf_counter()) - started
    return {
        "elapsed": elapsed,
        "ticks": ticks,
        "events_per_s": ticks / elapsed,
        "batches": after["batches"] - before["batches"],
        "writes": after["writes"] - before["writes"],
        "finished": finished,
        "states": states,
        "live_actors": live,
    }


def run(b: Bench) -> None:
    tasks = 100
    per_task = b.size(10_000, 500)
    log(f"b: {tasks} tasks x {per_task} events")
    result = trio.run(_run, tasks, per_task, str(b.path("b.db")))
    expected = tasks * per_task
    b.emit(
        "b",
        "committed_events_per_s",
        result["events_per_s"],
        "events/s",
        baseline=SQLITE_BATCHED,
        target=(">=", 100_000),
        tasks=tasks,
        events_per_task=per_task,
        events=result["ticks"],
        complete=result["ticks"] == expected,
        finished=result["finished"],
        task_states=result["states"],
        live_actors_at_end=result["live_actors"],
        elapsed_s=result["elapsed"],
        events_per_commit=result["ticks"] / max(result["batches"], 1),
    )
