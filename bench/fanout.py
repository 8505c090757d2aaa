"""Scenario e: websocket fan-out of the real server, and its baseline.

This process runs a runtime on SQLite and ``actors.serve_websocket`` (default
limits). One task waits (inside a step) for a go, then emits K events as
fast as it can (chunks of 100, a checkpoint between chunks, and a durable
step after every 1,000 events: it waits for the queued events to commit, so
the producer cannot run ahead of the store; see scenario b for a task that
does not pace itself). A child
process (``bench.fanout_client``) opens S connections, each subscribing to
that task with the protocol of the README (resubscribing after ``lagged``),
says ready; then the task goes, and the client reads until every
subscription ended. Figures, for S = 1 and S = 100:
- events/s delivered: events received by all subscribers together, divided
  by the time from the go to the last one received (and per subscriber);
- commit-to-client latency p50/p99: from the moment the event's batch
  committed (a commit listener in this process, called right after COMMIT
  returns, takes ``time.time()`` per seq) to the client receiving it (its
  ``time.time()``), for every event of every subscriber. The latency from
  the event's ``at`` stamp (taken when its batch starts, so it includes the
  batch's own apply time) is given too.
Then the latency at the target's load rather than at saturation: 100
subscribers, the producer held to 1,000 events/s (100,000 deliveries/s).
Baseline: a plain trio-websocket server sending small JSON messages, one
frame each, to S clients of the same client process, in the same run.
Each figure also gives ``committed_per_s`` (the producer's own rate: no
subscriber can get more) and ``client_cpu_s`` (the client process's CPU
time while it read: close to ``window_s``, the client was the limit).
"""

from __future__ import annotations

import contextlib
import functools
import json
import subprocess
import sys
import time
from array import array
from pathlib import Path
from typing import Any

import trio
import trio_websocket

import actors

from ._common import Bench, ChildError, log, percentile

app = actors.App()
CHUNK = 100
PACE = 1_000
#: Events emitted together by a producer held to a rate.
RATE_CHUNK = 10
ROOT = Path(__file__).resolve().parent.parent


class _Shared:
    def __init__(self) -> None:
        self.go = trio.Event()
        #: time.time() when the producer went.
        self.went = 0.0


shared: _Shared | None = None


async def _wait_for_go() -> None:
    assert shared is not None
    await shared.go.wait()
    shared.went = time.time()


async def _nothing() -> None:
    pass


@app.task("producer")
async def producer(ctx: actors.TaskContext, request: actors.Request) -> int:
    count, rate = request.input
    await ctx.step("go", _wait_for_go)
    # With a rate (events/s), emit RATE_CHUNK events every RATE_CHUNK / rate seconds.
    chunk = RATE_CHUNK if rate else CHUNK
    start = trio.current_time()
    for i in range(count):
        ctx.emit("tick", {"i": i})
        if i % chunk == chunk - 1:
            if rate:
                await trio.sleep_until(start + (i + 1) / rate)
            else:
                await trio.lowlevel.checkpoint()
        if i % PACE == PACE - 1:
            await ctx.step(f"paced-{i}", _nothing)
    return int(count)


async def _drive_client(args: dict[str, Any], go: trio.Event) -> dict[str, Any]:
    """Run the client process: wait for its ready, set go, return its result."""
    command = [sys.executable, "-m", "bench.fanout_client", json.dumps(args)]
    process = await trio.lowlevel.open_process(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT
    )
    assert process.stdin is not None and process.stdout is not None
    assert process.stderr is not None
    output = b""
    errors = b""

    async def read_errors() -> None:
        nonlocal errors
        assert process.stderr is not None
        async for chunk in process.stderr:
            errors += chunk

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_errors)
        with trio.fail_after(600):
            async for chunk in process.stdout:
                output += chunk
                if b"ready\n" in output and not go.is_set():
                    go.set()
                    await process.stdin.send_all(b"go\n")
            await process.wait()
    lines = [line for line in output.decode().splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        tail = " | ".join(errors.decode().strip().splitlines()[-6:])
        raise ChildError(f"fanout client exited with {process.returncode}: {tail}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


async def _ours(subscribers: int, events: int, path: str, rate: float = 0) -> dict[str, Any]:
    global shared
    shared = _Shared()
    slots = events + 16
    committed = array("d", bytes(8 * slots))
    ticks: set[int] = set()
    async with (
        actors.open_runtime(app, store=f"sqlite:///{path}", node_id="bench") as rt,
        trio.open_nursery() as nursery,
    ):
        port = await nursery.start(functools.partial(actors.serve_websocket, rt, port=0))
        info = await rt.submit("producer", [events, rate])

        def on_commit(batch: Any) -> None:
            # Called right after the batch's COMMIT returned, before anyone is told.
            now = time.time()
            for event in batch:
                if event.task_id == info.id and event.seq < slots:
                    committed[event.seq] = now
                    if event.kind == "tick":
                        ticks.add(event.seq)

        rt.store.add_commit_listener(on_commit)
        times_path = f"{path}.times"
        args = {
            "url": f"ws://127.0.0.1:{port}",
            "mode": "taskactors",
            "subscribers": subscribers,
            "task_id": info.id,
            "slots": slots,
            "times_path": times_path,
        }
        before = rt.store.statistics()
        result = await _drive_client(args, shared.go)
        after = rt.store.statistics()
        result["batches"] = after["batches"] - before["batches"]
        nursery.cancel_scope.cancel()
    received = array("d")
    received.frombytes(await trio.Path(times_path).read_bytes())
    latencies = [
        received[sub * slots + seq] - committed[seq]
        for sub in range(len(received) // slots)
        for seq in ticks
        if received[sub * slots + seq] and committed[seq]
    ]
    result["stamp_latency_p50"] = result["latency_p50"]
    result["stamp_latency_p99"] = result["latency_p99"]
    latencies.sort()
    result["latency_p50"] = percentile(latencies, 50) if latencies else None
    result["latency_p99"] = percentile(latencies, 99) if latencies else None
    result["latency_samples"] = len(latencies)
    # What the producer committed per second: fan-out cannot deliver more per subscriber.
    last_commit = max((committed[seq] for seq in ticks), default=0.0)
    result["committed_per_s"] = (
        len(ticks) / (last_commit - shared.went) if last_commit > shared.went > 0 else None
    )
    return result


async def _raw(subscribers: int, messages: int) -> dict[str, Any]:
    go = trio.Event()

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        await go.wait()
        for i in range(messages):
            frame = {"op": "event", "seq": i + 1, "t": time.time(), "data": {"i": i}}
            await ws.send_message(json.dumps(frame))
        await ws.send_message("end")
        with contextlib.suppress(trio_websocket.ConnectionClosed):
            await ws.get_message()  # until the client closes

    async with trio.open_nursery() as nursery:
        server = await nursery.start(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None)
        args = {"url": f"ws://127.0.0.1:{server.port}", "mode": "raw", "subscribers": subscribers}
        result = await _drive_client(args, go)
        nursery.cancel_scope.cancel()
    return result


def run(b: Bench) -> None:
    for subscribers, events, messages in (
        (1, b.size(50_000, 5_000), b.size(50_000, 5_000)),
        (100, b.size(20_000, 2_000), b.size(1_000, 100)),
    ):
        raw: dict[str, Any] | None = None
        try:
            log(f"e: trio-websocket baseline, {subscribers} clients x {messages} messages")
            raw = trio.run(_raw, subscribers, messages)
            b.baselines[f"trio_websocket_latency_p50_{subscribers}"] = raw["latency_p50"] * 1e3
            b.baselines[f"trio_websocket_latency_p99_{subscribers}"] = raw["latency_p99"] * 1e3
            b.emit(
                "e",
                f"trio_websocket_msgs_per_s_{subscribers}",
                raw["per_s"],
                "msgs/s",
                subscribers=subscribers,
                delivered=raw["delivered"],
                latency_p50_ms=raw["latency_p50"] * 1e3,
                latency_p99_ms=raw["latency_p99"] * 1e3,
            )
        except Exception as exc:
            b.error("e", f"trio_websocket_baseline_{subscribers}", repr(exc))
        log(f"e: taskactors server, {subscribers} subscribers x {events} events")
        ours = trio.run(_ours, subscribers, events, str(b.path(f"e-{subscribers}.db")))
        extra = {
            "subscribers": subscribers,
            "events_per_task": events,
            "delivered": ours["delivered"],
            "expected": subscribers * events,
            "frames": ours["frames"],
            "lagged": ours["lagged"],
            "gaps": ours["gaps"],
            "commits": ours["batches"],
            "committed_per_s": ours["committed_per_s"],
            "client_cpu_s": ours["client_cpu_s"],
            "window_s": ours["window_s"],
        }
        b.emit(
            "e",
            f"events_per_s_to_{subscribers}",
            ours["per_s"],
            "events/s",
            baseline=f"trio_websocket_msgs_per_s_{subscribers}",
            baseline_value=raw["per_s"] if raw else None,
            target=(">=", 100_000) if subscribers == 100 else None,
            per_subscriber=ours["per_s"] / subscribers if ours["per_s"] else None,
            **extra,
        )
        for p in (50, 99):
            key = f"latency_p{p}"
            b.emit(
                "e",
                f"commit_to_client_p{p}_{subscribers}",
                ours[key] * 1e3 if ours[key] is not None else None,
                "ms",
                baseline=f"trio_websocket_latency_p{p}_{subscribers}",
                baseline_value=raw[key] * 1e3 if raw and raw[key] is not None else None,
                better="lower",
                # No target here: an unpaced producer outruns any fan-out, so this
                # latency is queueing; the target applies at its load (_at_load).
                subscribers=subscribers,
                from_at_stamp_ms=(
                    ours[f"stamp_latency_p{p}"] * 1e3
                    if ours[f"stamp_latency_p{p}"] is not None
                    else None
                ),
                samples=ours["latency_samples"],
            )
    _at_load(b)


def _at_load(b: Bench) -> None:
    """Latency at the target's load, not at saturation: 100 subscribers, a
    producer held to 1,000 events/s (100,000 deliveries/s offered)."""
    subscribers, rate = 100, 1_000
    events = b.size(20_000, 2_000)
    log(f"e: taskactors server, {subscribers} subscribers, {events} events at {rate}/s")
    ours = trio.run(_ours, subscribers, events, str(b.path("e-load.db")), rate)
    for p in (50, 99):
        key = f"latency_p{p}"
        b.emit(
            "e",
            f"commit_to_client_p{p}_at_100k_per_s",
            ours[key] * 1e3 if ours[key] is not None else None,
            "ms",
            baseline=f"trio_websocket_latency_p{p}_{subscribers}",
            better="lower",
            target=("<", 50) if p == 99 else None,
            subscribers=subscribers,
            offered_per_s=subscribers * rate,
            delivered_per_s=ours["per_s"],
            delivered=ours["delivered"],
            expected=subscribers * events,
            frames=ours["frames"],
            lagged=ours["lagged"],
            gaps=ours["gaps"],
            client_cpu_s=ours["client_cpu_s"],
            samples=ours["latency_samples"],
        )
