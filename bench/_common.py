"""Shared helpers: the figure printer, percentiles, RSS, child processes, the machine."""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Baseline names, shared by the scenario that measures them and those that use them.
TRIO_SPAWN = "trio_spawn_rate"
TRIO_IDLE_RSS = "trio_idle_task_rss"
TRIO_CANCEL_P50 = "trio_cancel_latency_p50"
TRIO_CANCEL_P99 = "trio_cancel_latency_p99"
SQLITE_TXN = "sqlite_single_row_txn_rate"
SQLITE_TXN_LATENCY = "sqlite_single_row_txn_latency"
SQLITE_BATCHED = "sqlite_batched_rows_rate"
#: Seconds any wait of a scenario may take before it fails (instead of hanging).
TIMEOUT = 900


class ChildError(RuntimeError):
    """A child process failed; the message carries the end of its stderr."""


def log(message: str) -> None:
    """Progress for humans, on stderr (stdout is JSON lines only)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _tidy(value: Any) -> Any:
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return float(f"{value:.4g}")
    if isinstance(value, dict):
        return {k: _tidy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_tidy(v) for v in value]
    return value


def _meets(value: float, target: tuple[str, float]) -> bool:
    op, bound = target
    return value >= bound if op == ">=" else value < bound


@dataclass
class Bench:
    """One run: its size, its scratch folder and the baselines measured so far."""

    quick: bool
    workdir: Path
    baselines: dict[str, float] = field(default_factory=dict)
    figures: list[dict[str, Any]] = field(default_factory=list)

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def path(self, name: str) -> Path:
        """A fresh file path in the scratch folder (any older file is removed)."""
        path = self.workdir / name
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return path

    def emit(
        self,
        scenario: str,
        name: str,
        value: float | None,
        unit: str,
        *,
        baseline: str | None = None,
        baseline_value: float | None = None,
        better: str = "higher",
        target: tuple[str, float] | None = None,
        ratio_target: tuple[str, float] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Print one figure as a JSON line; ratio = value / baseline_value.

        ``baseline`` names a baseline of this run (its value is looked up
        unless ``baseline_value`` is given). ``target`` is (">=" or "<",
        bound) on the value, ``ratio_target`` the same on the ratio.
        """
        figure: dict[str, Any] = {"scenario": scenario, "name": name, "value": value}
        figure["unit"] = unit
        if baseline is not None:
            if baseline_value is None:
                baseline_value = self.baselines.get(baseline)
            figure["baseline"] = baseline
            figure["baseline_value"] = baseline_value
            figure["ratio"] = (
                value / baseline_value
                if value is not None and baseline_value not in (None, 0)
                else None
            )
            figure["better"] = better
        if target is not None:
            figure["target"] = f"{target[0]} {target[1]:g}"
            figure["meets"] = _meets(value, target) if value is not None else False
        if ratio_target is not None:
            ratio = figure.get("ratio")
            figure["ratio_target"] = f"{ratio_target[0]} {ratio_target[1]:g}"
            figure["ratio_meets"] = _meets(ratio, ratio_target) if ratio is not None else False
        figure.update(extra)
        figure = _tidy(figure)
        self.figures.append(figure)
        print(json.dumps(figure), flush=True)
        return figure

    def error(self, scenario: str, name: str, reason: str) -> None:
        """Print why a figure (or a whole scenario, or a peer) is missing."""
        figure = {"scenario": scenario, "name": name, "error": reason}
        self.figures.append(figure)
        print(json.dumps(figure), flush=True)


async def wait_with_progress(
    done: Any, progress: Callable[[], int], *, stall: float = 30.0
) -> bool:
    """Wait for ``done`` (a trio.Event); False if ``progress()`` stood still
    for ``stall`` seconds (a stuck run) or TIMEOUT passed."""
    import trio

    with trio.move_on_after(TIMEOUT):
        last, changed = progress(), trio.current_time()
        while not done.is_set():
            with trio.move_on_after(1):
                await done.wait()
            value = progress()
            if value != last:
                last, changed = value, trio.current_time()
            elif trio.current_time() - changed > stall:
                return False
        return True
    return False


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def rss_bytes() -> int:
    """Resident set size of this process, from /proc (Linux)."""
    with open("/proc/self/statm") as statm:
        resident = int(statm.read().split()[1])
    return resident * os.sysconf("SC_PAGE_SIZE")


def run_children(
    children: Sequence[tuple[str, dict[str, Any]]],
    *,
    timeout: float = 900,
    cwd: Path | None = None,
) -> list[dict[str, Any] | ChildError]:
    """Run several ``python -m module '<json args>'`` at once; the last JSON
    line each printed, or the ChildError saying why there is none. ``cwd``:
    the source tree they import (default: this one)."""
    root = cwd or Path(__file__).resolve().parent.parent
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", module, json.dumps(args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=root,
        )
        for module, args in children
    ]
    results: list[dict[str, Any] | ChildError] = []
    deadline = time.monotonic() + timeout
    for (module, _), process in zip(children, processes, strict=True):
        try:
            stdout, stderr = process.communicate(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            results.append(ChildError(f"{module} timed out after {timeout:g} s"))
            continue
        results.append(_parse_child(module, process.returncode, stdout, stderr))
    return results


def _parse_child(module: str, code: int, stdout: str, stderr: str) -> dict[str, Any] | ChildError:
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            if code == 0:
                result: dict[str, Any] = json.loads(line)
                return result
            break
    tail = " | ".join(stderr.strip().splitlines()[-6:])
    return ChildError(f"{module} exited with {code}: {tail}")


def run_child(
    module: str, args: dict[str, Any], *, timeout: float = 900, cwd: Path | None = None
) -> dict[str, Any]:
    """Run ``python -m module '<json args>'`` and return the last JSON line it printed.

    Raises:
        ChildError: it failed, timed out or printed no JSON object.
    """
    (result,) = run_children([(module, args)], timeout=timeout, cwd=cwd)
    if isinstance(result, ChildError):
        raise result
    return result


def child_args() -> dict[str, Any]:
    """The JSON argument a child process was given."""
    args: dict[str, Any] = json.loads(sys.argv[1])
    return args


def report(result: dict[str, Any]) -> None:
    """What a child prints last: its result, as one JSON line."""
    print(json.dumps(result), flush=True)


@contextmanager
def scratch() -> Iterator[Path]:
    """A scratch folder on the same disk as the system temp dir, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="taskactors-bench-") as folder:
        yield Path(folder)


def machine() -> dict[str, Any]:
    """The machine and versions a run was measured on."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ram = None
    try:
        with open("/proc/meminfo") as meminfo:
            ram = int(meminfo.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    import trio
    import trio_websocket

    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha1()
    for source in sorted([*root.glob("actors/*.py"), *root.glob("storage/*.py")]):
        digest.update(source.read_bytes())
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=root
        ).stdout.strip()
    except OSError:
        head = None
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gb": round(ram / 2**30, 1) if ram else None,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "trio": trio.__version__,
        "trio_websocket": getattr(trio_websocket, "__version__", None),
        "platform": platform.platform(),
        "git_head": head,
        #: The runtime measured: a digest of actors/*.py and storage/*.py as they were.
        "source_sha1": digest.hexdigest()[:12],
    }
