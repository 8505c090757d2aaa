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
import re
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
        #: Receive time minus the event's ``at`` (or the raw message's ``t``).
        self.latencies = array("d")
        #: The ``at`` stamps of the events counted, in frames of ``frame_sizes``
        #: events received at ``frame_times``: turned into latencies once the run
        #: is over. Flat arrays: nothing per frame for the garbage collector to
        #: scan, whose pauses would show up as latency.
        self.stamps = array("d")
        self.frame_times = array("d")
        self.frame_sizes = array("q")
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


#: seq, kind and at of each event of an ``event``/``events`` frame, read from the
#: server's text without building the events: the keys come in the order the
#: server writes them (task_id, seq, kind, at, data), and an event the pattern
#: misses shows up as a gap.
_EVENT_FIELDS = re.compile(r'"seq":(\d+),"kind":"([^"\\]*)","at":([-+.0-9eE]+),"data":')
_EVENT_FRAME = '{"op":"event'


async def _read_taskactors(
    ws: WebSocketConnection, task_id: str, counts: _Counts, kind: str
) -> None:
    """Read one subscription to its end, checking every seq arrives exactly once.

    Event frames are not decoded: one regular expression pass takes each
    event's seq, kind and at, and the per-frame checks run over whole lists
    (C loops), so the client costs far less per event than the server.
    """
    ids = itertools.count(1)
    last_seq = 0
    received = array("d", bytes(8 * counts.slots)) if counts.slots else None
    if received is not None:
        counts.received.append(received)
    while True:
        message = await ws.get_message()
        now = time.time()
        if isinstance(message, str) and message.startswith(_EVENT_FRAME):
            fields = _EVENT_FIELDS.findall(message)
            if not fields:
                counts.gaps += 1
                continue
            counts.frames += 1
            seq_texts, kinds, ats = zip(*fields, strict=True)
            seqs = list(map(int, seq_texts))
            first, last = seqs[0], seqs[-1]
            if first != last_seq + 1 or seqs != list(range(first, last + 1)):
                expected = last_seq
                for seq in seqs:
                    counts.gaps += seq != expected + 1
                    expected = seq
            last_seq = last
            if received is not None:
                end = min(last + 1, counts.slots)
                if first < end:
                    received[first:end] = array("d", [now]) * (end - first)
            if kinds.count(kind) == len(kinds):
                stamps = ats
            else:
                stamps = tuple(at for at, k in zip(ats, kinds, strict=True) if k == kind)
            if stamps:
                if not counts.first:
                    counts.first = now
                counts.last = now
                counts.delivered += len(stamps)
                counts.stamps.extend(map(float, stamps))
                counts.frame_times.append(now)
                counts.frame_sizes.append(len(stamps))
            continue
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
        if op in ("event", "events"):
            counts.gaps += 1  # not in the server's usual form: counted as a gap


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
    start = 0
    for now, size in zip(counts.frame_times, counts.frame_sizes, strict=True):
        latencies.extend([now - at for at in counts.stamps[start : start + size]])
        start += size
    latencies = array("d", sorted(latencies))
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
