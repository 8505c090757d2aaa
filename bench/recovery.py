"""Scenario f: a new process resumes N in-flight tasks (10,000; quick: 1,000).

A first child process starts N tasks on a SQLite file; each records steps
one and two, then blocks inside step three. When all are blocked the process
dies at once (``os._exit``: no cleanup, leases not released). A second child
process, with the same node id, opens a runtime on the file; the handlers
now finish step three at once. Figures, in that second process:
- open: ``open_runtime`` entered to its block starting (it claims and
  starts every in-flight task it owns before it yields);
- resumed: to every task's handler being back inside step three (steps one
  and two replayed from the journal);
- completed: to every task's ``completed`` state being committed.
And the wall time of the whole second process (interpreter start, imports
and closing included).
Baseline: reading the same state with plain ``sqlite3`` (every in-flight
task row and its journal), of this run.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from typing import Any

import trio

import actors
import storage

from ._common import Bench, ChildError, child_args, log, report, run_child, wait_with_progress

app = actors.App()
NODE = "bench-recovery"


class _Shared:
    def __init__(self, expected: int, block: bool) -> None:
        self.expected = expected
        self.block = block
        self.entered = 0
        self.all_entered = trio.Event()


shared: _Shared | None = None


async def _step(value: int) -> int:
    return value + 1


async def _last_step(value: int) -> int:
    assert shared is not None
    shared.entered += 1
    if shared.entered >= shared.expected:
        shared.all_entered.set()
    if shared.block:
        await trio.sleep_forever()
    return value + 1


@app.task("resumable")
async def resumable(ctx: actors.TaskContext, request: actors.Request) -> int:
    value = await ctx.step("one", _step, 0)
    value = await ctx.step("two", _step, value)
    return int(await ctx.step("three", _last_step, value))


async def _crash(n: int, path: str) -> None:
    global shared
    shared = _Shared(n, block=True)
    async with actors.open_runtime(app, store=f"sqlite:///{path}", node_id=NODE) as rt:
        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(rt.submit, "resumable")
        if not await wait_with_progress(shared.all_entered, lambda: shared.entered):
            raise RuntimeError(f"the run stalled: {shared.entered} of {n} tasks started")
        # Every task recorded steps one and two; die without any cleanup.
        report({"crashed": n})
        os._exit(0)


async def _resume(n: int, path: str) -> dict[str, Any]:
    global shared
    shared = _Shared(n, block=False)
    completed = 0
    all_completed = trio.Event()

    def on_commit(events: Any) -> None:
        nonlocal completed
        for event in events:
            if event.kind == "state" and '"to":"completed"' in event.data:
                completed += 1
        if completed >= n:
            all_completed.set()

    entered = time.perf_counter()
    # The store is opened here so that the listener sees the commits made
    # while open_runtime resumes the tasks.
    async with storage.open(f"sqlite:///{path}") as store:
        store.add_commit_listener(on_commit)
        async with actors.open_runtime(app, store=store, node_id=NODE):
            opened = time.perf_counter()
            completed_during_open = completed
            if not await wait_with_progress(shared.all_entered, lambda: shared.entered):
                raise RuntimeError(f"stalled: {shared.entered} of {n} tasks resumed")
            resumed = time.perf_counter()
            if not await wait_with_progress(all_completed, lambda: completed):
                raise RuntimeError(f"stalled: {completed} of {n} tasks completed")
            done = time.perf_counter()
    return {
        "n": n,
        "open_s": opened - entered,
        "resumed_s": resumed - entered,
        "completed_s": done - entered,
        "completed_during_open": completed_during_open,
    }


def _raw_read(path: str) -> dict[str, Any]:
    started = time.perf_counter()
    connection = sqlite3.connect(path)
    tasks = connection.execute(
        "SELECT * FROM tasks WHERE state IN ('pending', 'running') ORDER BY created_at, id"
    ).fetchall()
    journal = connection.execute(
        'SELECT * FROM journal WHERE task_id IN (SELECT id FROM tasks WHERE state IN ("pending",'
        ' "running")) ORDER BY task_id, "index"'
    ).fetchall()
    connection.close()
    return {"s": time.perf_counter() - started, "tasks": len(tasks), "journal": len(journal)}


def run(b: Bench) -> None:
    n = b.size(10_000, 1_000)
    path = str(b.path("f.db"))
    log(f"f: {n} tasks in flight, then a crash")
    crashed = run_child("bench.recovery", {"phase": "crash", "n": n, "path": path})
    if crashed.get("crashed") != n:
        raise ChildError(f"the first process did not start {n} tasks: {crashed}")
    # Read the state once with plain sqlite3 (the floor), from a copy, so the
    # runtime finds the file exactly as the crash left it.
    copy = str(b.path("f-copy.db"))
    for suffix in ("", "-wal"):
        if os.path.exists(path + suffix):
            with open(path + suffix, "rb") as source, open(copy + suffix, "wb") as target:
                target.write(source.read())
    raw = _raw_read(copy)
    log(f"f: a new process resumes {n} tasks")
    started = time.perf_counter()
    child = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.recovery",
            json.dumps({"phase": "resume", "n": n, "path": path}),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    wall = time.perf_counter() - started
    lines = [line for line in child.stdout.splitlines() if line.startswith("{")]
    if child.returncode != 0 or not lines:
        tail = " | ".join(child.stderr.strip().splitlines()[-6:])
        raise ChildError(f"the resuming process exited with {child.returncode}: {tail}")
    result = json.loads(lines[-1])
    extra = {"n": n, "raw_tasks_read": raw["tasks"], "raw_journal_rows": raw["journal"]}
    b.emit(
        "f",
        "resume_all_s",
        result["resumed_s"],
        "s",
        baseline="raw_sqlite_read_of_inflight_state",
        baseline_value=raw["s"],
        better="lower",
        target=("<", 3 * n / 10_000),
        open_s=result["open_s"],
        completed_during_open=result["completed_during_open"],
        **extra,
    )
    b.emit(
        "f",
        "resume_and_complete_all_s",
        result["completed_s"],
        "s",
        baseline="raw_sqlite_read_of_inflight_state",
        baseline_value=raw["s"],
        better="lower",
        **extra,
    )
    b.emit(
        "f",
        "resume_process_wall_s",
        wall,
        "s",
        baseline="raw_sqlite_read_of_inflight_state",
        baseline_value=raw["s"],
        better="lower",
        **extra,
    )


def main() -> None:
    args = child_args()
    if args["phase"] == "crash":
        trio.run(_crash, args["n"], args["path"])
    else:
        report(trio.run(_resume, args["n"], args["path"]))


if __name__ == "__main__":
    main()
