"""SIGKILL torture of a runtime embedded on SQLite (issue #17, point 5).

Usage: python -m tests.soak.torture_sqlite [--tasks N] [--steps N] [--kills N] [--seed N]

A child process (``torture_child.py``) runs ``--tasks`` tasks of ``--steps``
durable steps; each step body appends ``task,step,run`` to a log with fsync
before it returns (``torture_app.py``). The driver SIGKILLs the child after a
seeded random number of step bodies began (reading the child's stdout: a
condition, never a timer), reads what the store committed, restarts the
child, and so on ``--kills`` times; then it lets the last child finish and
checks:

- every result is right;
- every history is contiguous (seq 1..n), each step completed exactly once
  and the task ended ``completed``;
- no step whose ``step_completed`` was committed before a kill ran again
  after it (the log against the journal);
- the bodies that ran again after a kill are among those in flight at the
  kill (logged, not committed), so their number is at most that many;
- no body ran twice within one process.

It prints one JSON object of figures (kills, tasks, bodies, re-runs, max
re-runs per kill, seconds, problems) and exits 1 if there is a problem.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs
import trio

import storage

from .torture_app import expected_result

ROOT = Path(__file__).parents[2]
#: Seconds one child may take to reach its kill point or to finish.
CHILD_TIMEOUT = 120.0

Step = tuple[str, int]


@attrs.define
class LogLine:
    task_id: str
    step: int
    run: int


def read_log(path: Path) -> list[LogLine]:
    if not path.exists():
        return []
    lines = []
    for text in path.read_text().splitlines():
        task_id, step, run = text.split(",")
        lines.append(LogLine(task_id, int(step), int(run)))
    return lines


async def read_histories(db: Path, task_ids: Iterable[str]) -> dict[str, list[Any]]:
    async with storage.open(f"sqlite:///{db}") as store:
        return {task_id: await store.read_events(task_id) for task_id in task_ids}


def committed_steps(histories: dict[str, list[Any]]) -> set[Step]:
    """The steps whose completion the store holds."""
    done = set()
    for task_id, events in histories.items():
        for event in events:
            if event.kind == "step_completed":
                done.add((task_id, json.loads(event.data)["index"]))
    return done


@attrs.define
class Ledger:
    """The step log against the store's journal, kill by kill."""

    #: Per kill: the steps in flight (logged, not committed) when it landed.
    in_flight: list[set[Step]] = attrs.field(factory=list)
    #: Per kill: the steps committed when it landed.
    committed: list[set[Step]] = attrs.field(factory=list)
    problems: list[str] = attrs.field(factory=list)

    def after_kill(self, log: list[LogLine], committed: set[Step]) -> None:
        logged = {(line.task_id, line.step) for line in log}
        self.committed.append(committed)
        self.in_flight.append(logged - committed)
        if committed - logged:
            self.problems.append(f"committed but never logged: {sorted(committed - logged)[:5]}")

    def check(self, log: list[LogLine]) -> dict[str, int]:
        """Check the whole log; return the re-run figures."""
        per_run = Counter((line.task_id, line.step, line.run) for line in log)
        twice = [key for key, count in per_run.items() if count > 1]
        if twice:
            self.problems.append(f"bodies run twice in one process: {twice[:5]}")
        reruns_per_kill = []
        for kill, (in_flight, committed) in enumerate(
            zip(self.in_flight, self.committed, strict=True)
        ):
            run = kill + 1  # the incarnation started after this kill
            before = {(line.task_id, line.step) for line in log if line.run <= kill}
            again = [
                (line.task_id, line.step)
                for line in log
                if line.run == run and (line.task_id, line.step) in before
            ]
            ran_committed = sorted(set(again) & committed)
            if ran_committed:
                self.problems.append(
                    f"kill {kill}: committed steps ran again in run {run}: {ran_committed[:5]}"
                )
            stray = sorted(set(again) - in_flight - committed)
            if stray:
                self.problems.append(f"kill {kill}: re-runs not in flight at the kill: {stray[:5]}")
            if len(again) > len(in_flight):
                self.problems.append(
                    f"kill {kill}: {len(again)} re-runs, more than the {len(in_flight)} in flight"
                )
            reruns_per_kill.append(len(again))
        # Later re-runs (a step in flight at two kills in a row) count once per kill above.
        return {
            "reruns": sum(reruns_per_kill),
            "max_reruns_per_kill": max(reruns_per_kill, default=0),
            "max_in_flight_at_kill": max((len(s) for s in self.in_flight), default=0),
        }


def check_histories(histories: dict[str, list[Any]], steps: int, problems: list[str]) -> None:
    for task_id, events in histories.items():
        seqs = [event.seq for event in events]
        if seqs != list(range(1, len(seqs) + 1)):
            problems.append(f"{task_id}: history not contiguous: {seqs}")
        completed = [json.loads(e.data)["index"] for e in events if e.kind == "step_completed"]
        if completed != list(range(steps)):
            problems.append(f"{task_id}: steps completed {completed}, not 0..{steps - 1} once each")
        last = json.loads(events[-1].data) if events else {}
        if not events or events[-1].kind != "state" or last.get("to") != "completed":
            problems.append(f"{task_id}: ends with {events[-1].kind if events else None} {last}")


class Child:
    """One incarnation of the child, read line by line."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self.deadline = time.monotonic() + CHILD_TIMEOUT

    def lines(self) -> Iterable[str]:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if time.monotonic() > self.deadline:
                raise TimeoutError("the child took too long")
            yield line.strip()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)
        if self.process.stdout is not None:
            self.process.stdout.close()


def run(
    workdir: Path, *, tasks: int, steps: int, kills: int, seed: int, pause: float = 0.002
) -> dict[str, Any]:
    """The whole torture run in ``workdir``; its figures (``problems`` empty: passed)."""
    rng = random.Random(seed)
    db, log_path = workdir / "torture.db", workdir / "steps.log"
    task_ids = [f"t-{i}" for i in range(tasks)]
    ledger = Ledger()
    problems = ledger.problems
    started = time.monotonic()
    results: dict[str, Any] | None = None
    incarnation = 0
    while results is None:
        env = {**os.environ, "TORTURE_LOG": str(log_path), "TORTURE_RUN": str(incarnation)}
        argv = [sys.executable, "-m", "tests.soak.torture_child", str(db)]
        child = Child([*argv, str(tasks), str(steps), str(pause)], env)
        remaining = tasks * steps - len(ledger.committed[-1] if ledger.committed else ())
        # Kill after this many bodies began in this incarnation (0: at once, at
        # its first line), unless the kills are spent.
        kill_at = rng.randrange(0, max(1, remaining)) if incarnation < kills else None
        began = 0
        killed = False
        try:
            for line in child.lines():
                if line.startswith("done "):
                    results = json.loads(line[len("done ") :])
                    break
                began += line.startswith("ran ")
                if kill_at is not None and began >= kill_at:
                    child.kill()
                    killed = True
                    break
        finally:
            if not killed:
                child.kill()
        if killed:
            histories = trio.run(read_histories, db, task_ids)
            ledger.after_kill(read_log(log_path), committed_steps(histories))
        elif results is None:
            problems.append(
                f"run {incarnation} ended without results (exit {child.process.returncode})"
            )
            break
        incarnation += 1
    seconds = time.monotonic() - started
    log = read_log(log_path)
    figures = ledger.check(log)
    if results is not None:
        for task_id in task_ids:
            if results.get(task_id) != expected_result(task_id, steps):
                problems.append(f"{task_id}: result {results.get(task_id)!r}")
    histories = trio.run(read_histories, db, task_ids)
    check_histories(histories, steps, problems)
    missing = {(t, s) for t in task_ids for s in range(steps)} - {(x.task_id, x.step) for x in log}
    if missing:
        problems.append(f"steps never run: {sorted(missing)[:5]}")
    return {
        "scenario": "sqlite_embedded_sigkill",
        "seed": seed,
        "kills": len(ledger.in_flight),
        "tasks": tasks,
        "steps_per_task": steps,
        "bodies_run": len(log),
        **figures,
        "seconds": round(seconds, 2),
        "ok": not problems,
        "problems": problems[:50],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=int(os.environ.get("TORTURE_TASKS", "40")))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--kills", type=int, default=int(os.environ.get("TORTURE_KILLS", "20")))
    parser.add_argument("--seed", type=int, default=int(os.environ.get("TORTURE_SEED", "5")))
    parser.add_argument("--dir", type=Path, help="keep the files here (default: a temp dir)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="torture-") as temp:
        workdir = args.dir or Path(temp)
        workdir.mkdir(parents=True, exist_ok=True)
        figures = run(workdir, tasks=args.tasks, steps=args.steps, kills=args.kills, seed=args.seed)
    print(json.dumps(figures), flush=True)
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
