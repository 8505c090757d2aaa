"""Memory of ``taskactors serve`` under a long hostile fuzz (issue #17, point 6).

Usage: python -m tests.soak.memory_soak [--rounds N] [--frames N] [--tasks N] [--seed N]

Starts ``taskactors serve`` on SQLite with two users. Each round, user A
throws ``--frames`` hostile frames (the generator of
``tests/actors/test_hostile.py``: lone surrogates, huge integers, NaN, deep
nesting, other users' ids, binary frames...) while user B runs ``--tasks``
tasks and watches them to their end. The server's RSS (VmRSS of
/proc/PID/status, no psutil) is printed at start, after the warm-up rounds
and after every round; after the warm-up it must level off: the RSS at the
end may exceed the RSS after the warm-up by at most ``--tolerance-mb``
(default 8 MiB, or 5% if more). Prints one JSON line per round, then the
figures; exits 1 if the RSS kept growing or the server died.

Mind the warm-up: on this code the RSS grows about 2 KiB per finished task
until some 6,000 tasks are stored, then stays flat (B alone, 250 tasks a
round: +0.52 MiB a round for 22 rounds, then +0.6 MiB over 7 rounds), which
looks like the SQLite page caches of the reader connections (2 MiB each)
filling up as the store grows; so ``make soak`` warms up for 10 rounds.
With A's fuzz on the code before the fix of issue #17 it does not level
off (+8.2 MiB over rounds 10 to 19, +1.5 MiB a round in the last half; A
alone: +9.8 MiB over 9 rounds): check again once the fix is in.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import trio

import actors.client
from tests.actors.test_hostile import (
    TOKENS,
    Thrown,
    Watched,
    random_frame,
    run_b_task,
    start_targets,
    throw,
)

from .torture_sqlite import ROOT

TASKACTORS = Path(sys.executable).with_name("taskactors")
MIB = 1024 * 1024


def rss_bytes(pid: int) -> int:
    """VmRSS of a process, from /proc (bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise LookupError(f"no VmRSS for process {pid}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def wait_listening(process: trio.Process) -> None:
    """Read the server's stdout until it listens, then keep draining it."""
    assert process.stdout is not None
    buffer = b""
    async for chunk in process.stdout:
        buffer += chunk
        if b"listening on" in buffer:
            return
    raise RuntimeError("the server ended before it listened")


def completed(task: Watched) -> bool:
    return (
        task.error is None
        and bool(task.events)
        and task.events[-1]["data"].get("to") == "completed"
    )


async def one_round(
    url: str, rng: random.Random, targets: Any, frames: int, tasks: int, first: int
) -> dict[str, int]:
    thrown = Thrown()
    watched = [Watched(f"b-{first + i}", base=i) for i in range(tasks)]
    targets.others = frozenset(targets.others | {w.task_id for w in watched})
    async with trio.open_nursery() as nursery:
        hostile = (random_frame(rng, targets) for _ in range(frames))
        nursery.start_soon(throw, url, hostile, thrown, targets)
        async with (
            actors.client.open_client(url, token="token-b") as client,
            trio.open_nursery() as b,
        ):
            for task in watched:
                b.start_soon(run_b_task, client, task, targets.foreign)
    del targets.foreign[: max(0, len(targets.foreign) - 50)]  # aim at recent ones
    return {
        "frames": thrown.count,
        "problems": len(thrown.problems),
        "b_failed": sum(1 for w in watched if not completed(w)),
    }


async def run(
    workdir: Path,
    errors: IO[bytes],
    *,
    rounds: int,
    warmup: int,
    frames: int,
    tasks: int,
    seed: int,
    tolerance: int,
) -> dict[str, Any]:
    rng = random.Random(seed)
    tokens = workdir / "tokens.json"
    tokens.write_text(json.dumps(TOKENS))
    port = free_port()
    url = f"ws://127.0.0.1:{port}"
    argv = [str(TASKACTORS), "serve", "--store", f"sqlite:///{workdir}/memory.db"]
    argv += ["--port", str(port), "--app", "tests.soak.hostile_app:app", "--tokens", str(tokens)]
    process = await trio.lowlevel.open_process(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=errors
    )
    started = time.monotonic()
    samples: list[int] = []
    totals = {"frames": 0, "problems": 0, "b_failed": 0}
    try:
        with trio.fail_after(60):
            await wait_listening(process)
        start_rss = rss_bytes(process.pid)
        print(json.dumps({"round": "start", "rss_mib": round(start_rss / MIB, 2)}), flush=True)
        targets = await start_targets(url)
        for number in range(rounds):
            with trio.fail_after(600):
                figures = await one_round(url, rng, targets, frames, tasks, number * tasks)
            for key in totals:
                totals[key] += figures[key]
            if process.poll() is not None:
                raise RuntimeError(f"the server died in round {number}")
            samples.append(rss_bytes(process.pid))
            label = "warm-up" if number < warmup else "round"
            line = {"round": number, "phase": label, "rss_mib": round(samples[-1] / MIB, 2)}
            print(json.dumps({**line, **figures}), flush=True)
    finally:
        process.terminate()
        with trio.move_on_after(30):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
    after_warmup = samples[warmup - 1] if warmup else start_rss
    end = samples[-1]
    allowed = max(tolerance, after_warmup // 20)
    steady = samples[warmup:]
    per_round = (end - after_warmup) / max(1, len(steady))
    # The second half of the steady rounds alone: a cache filling up slows
    # down there, a leak does not.
    half = steady[len(steady) // 2 :]
    half_per_round = (half[-1] - half[0]) / max(1, len(half) - 1)
    levelled = end - after_warmup <= allowed
    return {
        "scenario": "serve_memory_under_fuzz",
        "seed": seed,
        "rounds": rounds,
        "warmup_rounds": warmup,
        "frames_per_round": frames,
        "tasks_per_round": tasks,
        "rss_start_mib": round(start_rss / MIB, 2),
        "rss_after_warmup_mib": round(after_warmup / MIB, 2),
        "rss_end_mib": round(end / MIB, 2),
        "rss_max_mib": round(max(samples) / MIB, 2),
        "growth_after_warmup_mib": round((end - after_warmup) / MIB, 2),
        "growth_per_round_kib": round(per_round / 1024, 1),
        "growth_per_round_last_half_kib": round(half_per_round / 1024, 1),
        "allowed_mib": round(allowed / MIB, 2),
        "hostile_reply_problems": totals["problems"],
        "b_tasks_failed": totals["b_failed"],
        "seconds": round(time.monotonic() - started, 2),
        "ok": levelled,
    }


def main(argv: list[str] | None = None) -> int:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=int(env("MEMORY_ROUNDS", "10")))
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--frames", type=int, default=int(env("MEMORY_FRAMES", "2000")))
    parser.add_argument("--tasks", type=int, default=int(env("MEMORY_TASKS", "50")))
    parser.add_argument("--seed", type=int, default=int(env("MEMORY_SEED", "6")))
    parser.add_argument("--tolerance-mb", type=float, default=8.0)
    args = parser.parse_args(argv)
    if args.warmup >= args.rounds:
        parser.error("--warmup must be less than --rounds")
    with tempfile.TemporaryDirectory(prefix="memory-soak-") as temp:
        workdir = Path(temp)
        with open(workdir / "server.err", "ab") as errors:
            figures = trio.run(
                lambda: run(
                    workdir,
                    errors,
                    rounds=args.rounds,
                    warmup=args.warmup,
                    frames=args.frames,
                    tasks=args.tasks,
                    seed=args.seed,
                    tolerance=int(args.tolerance_mb * MIB),
                )
            )
    print(json.dumps(figures), flush=True)
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
