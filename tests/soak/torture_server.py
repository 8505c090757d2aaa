"""SIGKILL torture of ``taskactors serve`` on SQLite, driven over the websocket (issue #17, 5).

Usage: python -m tests.soak.torture_server [--tasks N] [--steps N] [--kills N] [--seed N]

A ``taskactors serve`` subprocess (app ``tests.soak.torture_app:app``, a
tokens file, a stable node id) is SIGKILLed after a seeded random number of
step bodies began (read from its stdout: a condition, never a timer), then
started again on the same port, ``--kills`` times. Meanwhile a client
(``actors.client.open_client``) submits tasks with its own task ids,
re-submits every one whose submit was not acknowledged when the server
died, and watches each task with raw subscriptions, subscribing again with
``after`` = the last seq it got. At the end (the server stopped with
SIGTERM): every task exists once, every result is right, each task's events
reached the client exactly once and in order (seq 1..n, no gap, nothing
doubled, ending ``completed``), and the step log holds no committed step run
again (as in ``torture_sqlite.py``). Prints one JSON object of figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import attrs
import trio

import actors
import actors.client

from .torture_app import app, expected_result
from .torture_sqlite import (
    ROOT,
    Ledger,
    check_histories,
    committed_steps,
    read_histories,
    read_log,
)

TOKEN, USER = "torture-token", "tortured"
TASKACTORS = Path(sys.executable).with_name("taskactors")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@attrs.define
class Tracked:
    task_id: str
    acknowledged: bool = False
    submits: int = 0
    events: list[dict[str, Any]] = attrs.field(factory=list)
    finished: bool = False


async def drive_task(client: actors.client.Client, task: Tracked, steps: int, pause: float) -> None:
    """Submit until acknowledged, then watch to the end, resuming after the last seq."""
    if not task.acknowledged:
        task.submits += 1
        await client.submit(
            "torture", {"steps": steps, "pause": pause}, task_id=task.task_id, thread_id="t"
        )
        task.acknowledged = True
    while not task.finished:
        after = task.events[-1]["seq"] if task.events else 0
        try:
            async with client.subscribe(task.task_id, after=after) as events:
                async for event in events:
                    task.events.append(event)
            task.finished = True
        except actors.SubscriptionLagged:
            continue


async def client_round(url: str, tasks: list[Tracked], steps: int, pause: float) -> None:
    """One server lifetime of the client: ends when every task finished or the
    connection dropped (then the round's other calls are abandoned)."""
    try:
        async with (
            actors.client.open_client(url, token=TOKEN, connect_timeout=10) as client,
            trio.open_nursery() as nursery,
        ):
            for task in tasks:
                if not task.finished:
                    nursery.start_soon(guard, drive_task(client, task, steps, pause))
    except (actors.client.ClientConnectionError, actors.client.UnavailableError):
        return


async def guard(call: Any) -> None:
    """A task's drive, ended quietly when the server dies under it."""
    try:
        await call
    except (actors.client.ClientConnectionError, actors.client.UnavailableError):
        return


async def serve_round(
    argv: list[str],
    env: dict[str, str],
    kill_at: int | None,
    client: Any,
    errors: IO[bytes],
) -> bool:
    """Run the server until the client is done (then SIGTERM) or until ``kill_at``
    bodies began (then SIGKILL). Returns whether it was killed."""
    # (Its stderr, with the writer process's complaints about a dead parent, goes
    # to a file: ``errors``.)
    process = await trio.lowlevel.open_process(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=errors
    )
    assert process.stdout is not None
    killed = False
    buffer = b""
    began = 0
    ready = trio.Event()

    async def read_output(cancel_scope: trio.CancelScope) -> None:
        nonlocal buffer, began, killed
        assert process.stdout is not None
        async for chunk in process.stdout:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if b"listening on" in line:
                    ready.set()
                began += line.startswith(b"ran ")
                if kill_at is not None and ready.is_set() and began >= kill_at and not killed:
                    process.kill()
                    killed = True
        cancel_scope.cancel()  # the server is gone: abandon the client's calls

    with trio.fail_after(180):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_output, nursery.cancel_scope)
            await ready.wait()
            if kill_at == 0:
                process.kill()
                killed = True
            await client()
            if not killed:
                process.send_signal(signal.SIGTERM)
            await process.wait()
        await process.wait()  # (also when its death cancelled the client's calls)
    return killed


async def run(
    workdir: Path,
    errors: IO[bytes],
    *,
    tasks: int,
    steps: int,
    kills: int,
    seed: int,
    pause: float = 0.002,
) -> dict[str, Any]:
    """The whole run in ``workdir`` (the servers' stderr to ``errors``); its figures."""
    rng = random.Random(seed)
    db, log_path = workdir / "served.db", workdir / "steps.log"
    tokens = workdir / "tokens.json"
    tokens.write_text(json.dumps({TOKEN: USER}))
    port = free_port()
    url = f"ws://127.0.0.1:{port}"
    argv = [str(TASKACTORS), "serve", "--store", f"sqlite:///{db}", "--port", str(port)]
    argv += ["--app", "tests.soak.torture_app:app", "--tokens", str(tokens)]
    argv += ["--node-id", "torture-server"]
    tracked = [Tracked(f"s-{i}") for i in range(tasks)]
    ids = [task.task_id for task in tracked]
    ledger = Ledger()
    problems = ledger.problems
    started = time.monotonic()
    incarnation = 0
    while True:
        env = {**os.environ, "TORTURE_LOG": str(log_path), "TORTURE_RUN": str(incarnation)}
        committed = ledger.committed[-1] if ledger.committed else set()
        remaining = tasks * steps - len(committed)
        kill_at = rng.randrange(0, max(1, remaining)) if incarnation < kills else None

        async def client() -> None:
            await client_round(url, tracked, steps, pause)

        killed = await serve_round(argv, env, kill_at, client, errors)
        if killed:
            histories = await read_histories(db, ids)
            ledger.after_kill(read_log(log_path), committed_steps(histories))
        incarnation += 1
        if all(task.finished for task in tracked):
            break
        if incarnation > kills + 5:
            problems.append(f"not all finished after {incarnation} rounds")
            break
    seconds = time.monotonic() - started
    log = read_log(log_path)
    figures = ledger.check(log)
    for task in tracked:
        seqs = [event["seq"] for event in task.events]
        if seqs != list(range(1, len(seqs) + 1)):
            problems.append(f"{task.task_id}: the client got seqs {seqs}")
        last = task.events[-1] if task.events else {}
        if last.get("kind") != "state" or last.get("data", {}).get("to") != "completed":
            problems.append(f"{task.task_id}: the client's last event is {last}")
    histories = await read_histories(db, ids)
    check_histories(histories, steps, problems)
    for task in tracked:
        stored = len(histories[task.task_id])
        if task.events and len(task.events) != stored:
            problems.append(f"{task.task_id}: the client got {len(task.events)} of {stored} events")
    async with actors.open_runtime(app, f"sqlite:///{db}", node_id="torture-check") as rt:
        listed = await rt.list(user_id=USER)
        if sorted(info.id for info in listed) != sorted(ids):
            problems.append(f"the store holds {len(listed)} tasks of the user's, not the {tasks}")
        for task_id in ids:
            with trio.move_on_after(10):
                result = await rt.result(task_id, user_id=USER)
                if result != expected_result(task_id, steps):
                    problems.append(f"{task_id}: result {result!r}")
    return {
        "scenario": "taskactors_serve_sigkill",
        "seed": seed,
        "kills": len(ledger.in_flight),
        "tasks": tasks,
        "steps_per_task": steps,
        "submits": sum(task.submits for task in tracked),
        "resubmits": sum(task.submits - 1 for task in tracked),
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
    parser.add_argument("--kills", type=int, default=int(os.environ.get("TORTURE_KILLS", "10")))
    parser.add_argument("--seed", type=int, default=int(os.environ.get("TORTURE_SEED", "5")))
    parser.add_argument("--dir", type=Path, help="keep the files here (default: a temp dir)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="torture-serve-") as temp:
        workdir = args.dir or Path(temp)
        workdir.mkdir(parents=True, exist_ok=True)
        with open(workdir / "server.err", "ab") as errors:
            figures = trio.run(
                lambda: run(
                    workdir,
                    errors,
                    tasks=args.tasks,
                    steps=args.steps,
                    kills=args.kills,
                    seed=args.seed,
                )
            )
    print(json.dumps(figures), flush=True)
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
