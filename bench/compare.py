"""Scenario a on two checkouts, run by turns: ``python -m bench.compare REF``.

Options: ``--pairs N`` (default 8), ``--tasks N`` (default 10,000).

This machine's speed drifts by a quarter from one minute to the next (see
README, Performance), so a change worth a few percent is lost between two
separate runs. This runs our part of scenario a (``bench.throughput``:
``max_running=500``, CPython's default collector) on REF (a git revision,
checked out in a temporary worktree) and on this tree by turns, each in a
child process of its own, and prints one JSON line per pair, then the
medians and the median of the pairs' ratios (this / REF). CPU is the child
process's whole CPU time (its threads and start-up; not the SQLite writer
process's, a process of its own since it left the worker thread).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ._common import log, run_child, scratch

ROOT = Path(__file__).resolve().parent.parent


def _run(tree: Path, tasks: int, folder: Path, label: str) -> dict[str, Any]:
    path = folder / f"{label}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    args = {"n": tasks, "path": str(path), "gc": None, "max_running": 500}
    return run_child("bench.throughput", args, cwd=tree)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("ref", help="the git revision to compare this tree with")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--tasks", type=int, default=10_000)
    options = parser.parse_args(argv)
    ref, pairs, tasks = options.ref, options.pairs, options.tasks
    with tempfile.TemporaryDirectory(prefix="taskactors-compare-") as folder:
        tree = Path(folder) / "ref"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "--quiet", str(tree), ref],
            cwd=ROOT,
            check=True,
        )
        try:
            rows: list[dict[str, Any]] = []
            with scratch() as work:
                for pair in range(1, pairs + 1):
                    log(f"pair {pair} of {pairs}: {ref}, then this tree")
                    before = _run(tree, tasks, work, "ref")
                    after = _run(ROOT, tasks, work, "this")
                    row = {
                        "pair": pair,
                        "ref_tasks_per_s": round(before["tasks_per_s"]),
                        "this_tasks_per_s": round(after["tasks_per_s"]),
                        "ratio": round(after["tasks_per_s"] / before["tasks_per_s"], 3),
                        "ref_cpu_s": before.get("process_cpu_s"),
                        "this_cpu_s": after.get("process_cpu_s"),
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT)
    ref_rates = [row["ref_tasks_per_s"] for row in rows]
    this_rates = [row["this_tasks_per_s"] for row in rows]
    summary: dict[str, Any] = {
        "name": "compare",
        "ref": ref,
        "pairs": pairs,
        "tasks": tasks,
        "ref_median_tasks_per_s": statistics.median(ref_rates),
        "this_median_tasks_per_s": statistics.median(this_rates),
        "median_ratio": statistics.median(row["ratio"] for row in rows),
        "ratio_of_medians": round(statistics.median(this_rates) / statistics.median(ref_rates), 3),
    }
    cpus = [(row["ref_cpu_s"], row["this_cpu_s"]) for row in rows]
    if all(a is not None and b is not None for a, b in cpus):
        summary["ref_median_cpu_s"] = round(statistics.median(a for a, _ in cpus), 2)
        summary["this_median_cpu_s"] = round(statistics.median(b for _, b in cpus), 2)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
