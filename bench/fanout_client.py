"""The websocket clients of scenario e, in their own process (trio, trio-websocket).

``python -m bench.fanout_client '{"url", "mode", "subscribers", "task_id"}'``
opens ``subscribers`` connections. Mode ``taskactors``: each subscribes to
``task_id`` (after=0) with the real protocol, resubscribes after a
``lagged`` frame, and reads until ``end``. Mode ``raw``: each reads the
messages of the plain trio-websocket server until ``"end"``. When every
connection is ready it prints ``ready`` and waits for a line on stdin, then
measures. Latency: receive time minus the event's ``at`` (the commit
batch's timestamp) or the raw message's ``t``; with ``times_path`` and
``slots``, the receive time of every seq of every subscriber is also
written there (float64, ``slots`` per subscriber) for the server to match
with its commit times. Prints one JSON object.
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from array import array
from typing import Any

import trio
from trio_websocket import WebSocketConnection, connect_websocket_url

from ._common import child_args, percentile, report


class _Counts:
    def __init__(self, slots: int) -> None:
        #: Per subscriber: receive time (time.time()) by seq, when asked for.
        self.slots = slots
        self.received: list[array[float]] = []
        self.delivered = 0
        self.frames = 0
        self.lagged = 0
        self.first = 0.0
        self.last = 0.0
        self.latencies = array("d")
        self.gaps = 0


async def _request(ws: WebSocketConnection, ids: Any, op: str, **fields: Any) -> Any:
    request_id = next(ids)
    await ws.send_message(json.dumps({"id": request_id, "op": op, **fields}))
    while True:
        frame = json.loads(await ws.get_message())
        if frame.get("id") == request_id:
            if not frame["ok"]:
                raise RuntimeError(frame["error"])
            return frame["result"]


async def _read_taskactors(
    ws: WebSocketConnection, task_id: str, counts: _Counts, kind: str
) -> None:
    ids = itertools.count(1)
    last_seq = 0
    received = array("d", bytes(8 * counts.slots)) if counts.slots else None
    if received is not None:
        counts.received.append(received)
    while True:
        message = await ws.get_message()
        now = time.time()
        frame = json.loads(message)
        op = frame.get("op")
        if op == "end":
            return
        if op == "lagged":
            counts.lagged += 1
            last_seq = frame["resume_after"]
            await ws.send_message(
                json.dumps(
                    {"id": next(ids), "op": "subscribe", "task_id": task_id, "after": last_seq}
                )
            )
            continue
        if op == "event":
            events = [frame["event"]]
        elif op == "events":
            events = frame["events"]
        else:
            continue  # a reply
        counts.frames += 1
        for event in events:
            if event["seq"] != last_seq + 1:
                counts.gaps += 1
            last_seq = event["seq"]
            if received is not None and last_seq < counts.slots:
                received[last_seq] = now
            if event["kind"] == kind:
                if not counts.first:
                    counts.first = now
                counts.last = now
                counts.delivered += 1
                counts.latencies.append(now - event["at"])


async def _read_raw(ws: WebSocketConnection, counts: _Counts) -> None:
    while True:
        message = await ws.get_message()
        now = time.time()
        if message == "end":
            return
        frame = json.loads(message)
        counts.frames += 1
        if not counts.first:
            counts.first = now
        counts.last = now
        counts.delivered += 1
        counts.latencies.append(now - frame["t"])


async def _main(args: dict[str, Any]) -> dict[str, Any]:
    counts = _Counts(args.get("slots", 0))
    async with trio.open_nursery() as nursery:
        connections = []
        for _ in range(args["subscribers"]):
            ws = await connect_websocket_url(nursery, args["url"], max_message_size=1 << 24)
            connections.append(ws)
            if args["mode"] == "taskactors":
                await _request(ws, itertools.count(1_000_000), "subscribe", task_id=args["task_id"])
        print("ready", flush=True)
        await trio.wrap_file(sys.stdin).readline()
        started = time.time()
        async with trio.open_nursery() as readers:
            for ws in connections:
                if args["mode"] == "taskactors":
                    readers.start_soon(
                        _read_taskactors, ws, args["task_id"], counts, args.get("kind", "tick")
                    )
                else:
                    readers.start_soon(_read_raw, ws, counts)
        ended = time.time()
        if args.get("times_path"):
            data = b"".join(received.tobytes() for received in counts.received)
            await trio.Path(args["times_path"]).write_bytes(data)
        for ws in connections:
            await ws.aclose()
        nursery.cancel_scope.cancel()
    window = counts.last - started if counts.last else 0.0
    latencies = counts.latencies
    return {
        "delivered": counts.delivered,
        "frames": counts.frames,
        "lagged": counts.lagged,
        "gaps": counts.gaps,
        "window_s": window,
        "first_to_last_s": counts.last - counts.first if counts.last else 0.0,
        "total_s": ended - started,
        "per_s": counts.delivered / window if window else None,
        "latency_p50": percentile(latencies, 50) if latencies else None,
        "latency_p99": percentile(latencies, 99) if latencies else None,
    }


def main() -> None:
    report(trio.run(_main, child_args()))


if __name__ == "__main__":
    main()
