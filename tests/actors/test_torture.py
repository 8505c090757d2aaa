"""SIGKILL torture, small (issue #17, point 5): ``make soak`` runs the long one.

A child embedding the runtime on SQLite is killed three times at seeded
random points (after a number of step bodies began: it waits on the child's
output, never on a timer) and restarted; ``tests/soak/torture_sqlite.py``
then checks results, histories and the step log against the journal.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import trio

from tests.soak.torture_sqlite import Ledger, LogLine

ROOT = Path(__file__).parents[2]


async def test_three_sigkills_lose_nothing_and_rerun_no_committed_step(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "tests.soak.torture_sqlite", "--dir", str(tmp_path)]
    argv += ["--tasks", "6", "--steps", "3", "--kills", "3", "--seed", "3"]
    with trio.fail_after(90):
        done = await trio.run_process(argv, cwd=ROOT, capture_stdout=True, check=False)
    figures = json.loads(done.stdout.decode().splitlines()[-1])
    assert figures["problems"] == []
    assert figures["kills"] == 3 and done.returncode == 0
    assert figures["max_reruns_per_kill"] <= figures["max_in_flight_at_kill"]


def test_the_ledger_catches_a_committed_step_that_ran_again() -> None:
    ledger = Ledger()
    first = [LogLine("t", 0, 0), LogLine("t", 1, 0)]
    ledger.after_kill(first, committed={("t", 0)})
    ledger.check([*first, LogLine("t", 0, 1), LogLine("t", 1, 1)])
    assert ledger.problems == [
        "kill 0: committed steps ran again in run 1: [('t', 0)]",
        "kill 0: 2 re-runs, more than the 1 in flight",
    ]


def test_the_ledger_allows_rerunning_the_bodies_in_flight() -> None:
    ledger = Ledger()
    first = [LogLine("t", 0, 0), LogLine("u", 0, 0)]
    ledger.after_kill(first, committed=set())
    figures = ledger.check([*first, LogLine("t", 0, 1), LogLine("u", 0, 1)])
    assert ledger.problems == []
    assert figures == {"reruns": 2, "max_reruns_per_kill": 2, "max_in_flight_at_kill": 2}
