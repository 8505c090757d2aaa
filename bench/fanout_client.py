"""The websocket clients of scenario e, in their own process (trio, a minimal client).

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

The connections are a minimal RFC 6455 client (``_Client``, below: text
frames, masked requests, close and ping handled) rather than trio-websocket's,
whose per-frame cost (a reader task, a parser, a channel per connection) had
the client use more CPU per frame than the server it measures. Both servers,
ours and the trio-websocket baseline, are read by the same client.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import re
import sys
import time
from array import array
from typing import Any
from urllib.parse import urlsplit

import trio

from ._common import child_args, percentile, report


class ConnectionClosed(Exception):
    """The server closed the connection (or the socket broke)."""


class _Client:
    """One websocket connection: text messages in and out, nothing more.

    Reads whole frames out of one receive buffer (several per read when
    they are small), so a message costs a few slices, not a task switch.
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._buffer = bytearray()
        #: Payloads of a fragmented message so far.
        self._fragments: list[bytes] = []

    @classmethod
    async def connect(cls, url: str) -> _Client:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        stream = await trio.open_tcp_stream(parts.hostname, parts.port)
        key = base64.b64encode(os.urandom(16)).decode()
        await stream.send_all(
            (
                f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        client = cls(stream)
        while b"\r\n\r\n" not in client._buffer:
            await client._fill()
        head, _, rest = bytes(client._buffer).partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionClosed(head.split(b"\r\n", 1)[0].decode(errors="replace"))
        client._buffer = bytearray(rest)
        return client

    async def _fill(self) -> None:
        data = await self._stream.receive_some(RECEIVE_BYTES)
        if not data:
            raise ConnectionClosed("the server closed the socket")
        self._buffer += data

    async def send_message(self, text: str) -> None:
        await self._send(0x1, text.encode())

    async def _send(self, opcode: int, payload: bytes) -> None:
        """One frame, masked (as a client must)."""
        size = len(payload)
        if size < 126:
            header = bytes([0x80 | opcode, 0x80 | size])
        elif size < 1 << 16:
            header = bytes([0x80 | opcode, 0x80 | 126]) + size.to_bytes(2, "big")
        else:
            header = bytes([0x80 | opcode, 0x80 | 127]) + size.to_bytes(8, "big")
        mask = os.urandom(4)
        repeated = (mask * (size // 4 + 1))[:size]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
            size, "big"
        )
        await self._stream.send_all(header + mask + masked)

    async def get_message(self) -> str:
        """The next text message.

        Raises:
            ConnectionClosed: the server closed the connection.
        """
        buffer = self._buffer
        while True:
            if len(buffer) >= 2:
                first, second = buffer[0], buffer[1]
                size, start = second & 0x7F, 2
                if size == 126:
                    size, start = int.from_bytes(buffer[2:4], "big"), 4
                elif size == 127:
                    size, start = int.from_bytes(buffer[2:10], "big"), 10
                if len(buffer) >= start + size:
                    payload = bytes(buffer[start : start + size])
                    del buffer[: start + size]
                    opcode = first & 0x0F
                    if opcode == 0x8:
                        await self._send(0x8, payload[:2])
                        raise ConnectionClosed(payload[2:].decode(errors="replace"))
                    if opcode == 0x9:
                        await self._send(0xA, payload)
                        continue
                    if opcode in (0x0, 0x1):
                        self._fragments.append(payload)
                        if first & 0x80:  # FIN
                            message = b"".join(self._fragments).decode()
                            self._fragments.clear()
                            return message
                    continue
            await self._fill()

    async def aclose(self) -> None:
        """Start a close handshake and close the socket."""
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self._send(0x8, (1000).to_bytes(2, "big"))
        await self._stream.aclose()


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


async def _request(ws: _Client, ids: Any, op: str, **fields: Any) -> Any:
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
#: Bytes read from a socket at once (trio-websocket reads 4 KiB by default: a
#: frame of a few hundred events took dozens of reads and parser passes).
RECEIVE_BYTES = 1 << 16


async def _read_taskactors(ws: _Client, task_id: str, counts: _Counts, kind: str) -> None:
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


async def _read_raw(ws: _Client, counts: _Counts) -> None:
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
            ws = await _Client.connect(args["url"])
            connections.append(ws)
            if args["mode"] == "taskactors":
                await _request(ws, itertools.count(1_000_000), "subscribe", task_id=args["task_id"])
        print("ready", flush=True)
        await trio.wrap_file(sys.stdin).readline()
        started = time.time()
        cpu_started = time.process_time()
        async with trio.open_nursery() as readers:
            for ws in connections:
                if args["mode"] == "taskactors":
                    readers.start_soon(
                        _read_taskactors, ws, args["task_id"], counts, args.get("kind", "tick")
                    )
                else:
                    readers.start_soon(_read_raw, ws, counts)
        ended = time.time()
        cpu = time.process_time() - cpu_started
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
        #: The client's CPU seconds while it read (near total_s: the client was the limit).
        "client_cpu_s": cpu,
        "per_s": counts.delivered / window if window else None,
        "latency_p50": percentile(latencies, 50) if latencies else None,
        "latency_p99": percentile(latencies, 99) if latencies else None,
    }


def main() -> None:
    report(trio.run(_main, child_args()))


if __name__ == "__main__":
    main()
