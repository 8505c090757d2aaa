"""Helpers of the websocket server tests: a test app, a server in-process, a raw client.

The client is deliberately thin (it is not ``actors.client._client``): it shows the
protocol as a reader of the README would use it, one JSON frame at a time.
"""

from __future__ import annotations

import functools
import itertools
import json
import socket
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
import trio_websocket
from trio_websocket import WebSocketConnection

import actors

TOKENS = {"token-1": "u1", "token-2": "u2", "token-chaos": "chaos"}


class Gates:
    """Named trio events that test tasks wait on inside durable steps."""

    def __init__(self) -> None:
        self._opened: dict[str, trio.Event] = {}
        self._entered: dict[str, trio.Event] = {}
        self._next: dict[str, int] = {}

    def _event(self, table: dict[str, trio.Event], name: str) -> trio.Event:
        return table.setdefault(name, trio.Event())

    async def pass_through(self, name: str) -> str:
        """A step body: says it is waiting, then waits until the gate opens."""
        self._event(self._entered, name).set()
        await self._event(self._opened, name).wait()
        return name

    def open(self, name: str) -> None:
        self._event(self._opened, name).set()

    def open_next(self, prefix: str, *, first: int = 0) -> None:
        """Open ``{prefix}{n}`` for the next n (``first``, then one more each call)."""
        number = self._next.setdefault(prefix, first)
        self.open(f"{prefix}{number}")
        self._next[prefix] = number + 1

    async def wait_entered(self, name: str) -> None:
        await self._event(self._entered, name).wait()


def make_app(gates: Gates) -> actors.App:
    """Handlers of the server tests; none of them depends on time."""
    app = actors.App()

    @app.task("echo")
    async def echo(ctx: actors.TaskContext, request: actors.Request) -> Any:
        return request.input

    @app.task("ask")
    async def ask(ctx: actors.TaskContext, request: actors.Request) -> Any:
        ctx.usage(model="m1", input_tokens=10, output_tokens=5, caller="tests")
        answer = await ctx.ask({"question": "yes?"})
        return {"answer": answer}

    @app.task("gated")
    async def gated(ctx: actors.TaskContext, request: actors.Request) -> Any:
        """Passes each named gate in a durable step (a safe point)."""
        return [await ctx.step(name, gates.pass_through, name) for name in request.input]

    @app.task("ingest")
    async def ingest(ctx: actors.TaskContext, request: actors.Request) -> Any:
        """Shaped like the demo app's ``ingest`` (the README example submits it), minus
        its sleeps: a step per document, progress, usage."""
        count = int(request.input.get("documents", 8))
        for i in range(count):
            await ctx.step(f"fetch-{i}", lambda: None)
            ctx.progress(i + 1, count)
        ctx.usage(model="embed-small", input_tokens=250 * count, caller="indexer")
        return {"indexed": count}

    @app.task("busy", strategy="reject")
    async def busy(ctx: actors.TaskContext, request: actors.Request) -> Any:
        return await ctx.step("wait", gates.pass_through, request.input)

    @app.task("emit")
    async def emit(ctx: actors.TaskContext, request: actors.Request) -> int:
        """Emits ``count`` tick events (with ``pad`` characters each) in ``chunks``;
        a checkpoint every 10 ticks. Waits for gate ``start_gate`` first if given,
        and for gate ``{gate_prefix}{n}`` before chunk n > 0 if a prefix is given."""
        count: int = request.input["count"]
        chunks: int = request.input.get("chunks", 1)
        prefix: str | None = request.input.get("gate_prefix")
        pad = "x" * request.input.get("pad", 0)
        per_chunk = -(-count // chunks)
        if "start_gate" in request.input:
            await ctx.step("start", gates.pass_through, request.input["start_gate"])
        for i in range(count):
            if prefix is not None and i and i % per_chunk == 0:
                name = f"{prefix}{i // per_chunk}"
                await ctx.step(name, gates.pass_through, name)
            ctx.emit("tick", {"i": i, "pad": pad} if pad else {"i": i})
            if i % 10 == 9:
                await ctx.checkpoint({"i": i})
        return count

    return app


@attrs.frozen
class Served:
    rt: actors.Runtime
    port: int
    gates: Gates

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


@asynccontextmanager
async def serving(
    store: str = "memory://",
    *,
    tokens: dict[str, str] | None = TOKENS,
    **options: Any,
) -> AsyncIterator[Served]:
    """A runtime of ``make_app`` on ``store`` and its websocket server on a free port."""
    gates = Gates()
    async with (
        actors.open_runtime(make_app(gates), store, node_id="node-ws") as rt,
        trio.open_nursery() as nursery,
    ):
        port = await nursery.start(
            functools.partial(actors.serve_websocket, rt, port=0, tokens=tokens, **options)
        )
        yield Served(rt, port, gates)
        nursery.cancel_scope.cancel()


class Client:
    """One connection: requests with fresh ids; replies and other frames kept apart."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        #: Frames that are not replies (event, events, end, lagged), in arrival order.
        self.frames: deque[dict[str, Any]] = deque()
        self._replies: deque[dict[str, Any]] = deque()

    async def _receive(self) -> None:
        frame = json.loads(await self.ws.get_message())
        (self._replies if "ok" in frame else self.frames).append(frame)

    async def reply(self) -> dict[str, Any]:
        """The next reply (requests are answered in order)."""
        while not self._replies:
            await self._receive()
        return self._replies.popleft()

    async def frame(self) -> dict[str, Any]:
        """The next frame that is not a reply."""
        while not self.frames:
            await self._receive()
        return self.frames.popleft()

    async def send(self, message: str | bytes) -> None:
        await self.ws.send_message(message)

    async def call(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send a request; return its whole reply."""
        request_id = next(self._ids)
        await self.send(json.dumps({"id": request_id, "op": op, **fields}))
        reply = await self.reply()
        assert reply["id"] == request_id, reply
        return reply

    async def ok(self, op: str, **fields: Any) -> Any:
        """Send a request that must succeed; return its result."""
        reply = await self.call(op, **fields)
        assert reply["ok"] is True, reply
        return reply["result"]

    async def error(self, op: str, **fields: Any) -> str:
        """Send a request that must fail; return its error code."""
        reply = await self.call(op, **fields)
        assert reply["ok"] is False, reply
        return str(reply["error"]["code"])

    async def events(self, sub: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Events of ``sub`` up to its ``end`` or ``lagged`` frame (returned too)."""
        events: list[dict[str, Any]] = []
        while True:
            frame = await self.frame()
            assert frame["sub"] == sub, frame
            if frame["op"] == "event":
                events.append(frame["event"])
            elif frame["op"] == "events":
                assert len(frame["events"]) > 1, frame
                events.extend(frame["events"])
            else:
                assert frame["op"] in ("end", "lagged"), frame
                return events, frame


def bearer(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"Authorization", f"Bearer {token}".encode())]


@asynccontextmanager
async def open_websocket(
    port: int, headers: list[tuple[bytes, bytes]] | None, *, receive_buffer: int | None = None
) -> AsyncIterator[WebSocketConnection]:
    """A client websocket over a TCP stream the test owns.

    (trio-websocket's own client never closes its socket when the server
    closes first, which the ResourceWarning check would report.) With
    ``receive_buffer`` the socket's kernel receive buffer is that small, so
    a client that stops reading blocks the server's writes almost at once.
    """
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    stream = trio.SocketStream(sock)
    async with stream, trio.open_nursery() as nursery:
        await sock.connect(("127.0.0.1", port))
        ws = await trio_websocket.wrap_client_stream(
            nursery, stream, "127.0.0.1", "/", extra_headers=headers, max_message_size=8 << 20
        )
        try:
            yield ws
        finally:
            await ws.aclose()  # a close handshake; if cancelled, the socket is just closed
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def connect(
    served: Served, token: str | None = "token-1", *, header: bool = True
) -> AsyncIterator[Client]:
    """A client; with a token, authenticated by header (or by a first ``auth`` op)."""
    headers = bearer(token) if token is not None and header else None
    async with open_websocket(served.port, headers) as ws:
        client = Client(ws)
        if token is not None and not header:
            await client.ok("auth", token=token)
        yield client


@asynccontextmanager
async def connect_stalled(served: Served, token: str) -> AsyncIterator[Client]:
    """A client with a tiny socket receive buffer (see ``open_websocket``)."""
    async with open_websocket(served.port, bearer(token), receive_buffer=4096) as ws:
        yield Client(ws)


def seqs(events: list[dict[str, Any]]) -> list[int]:
    return [event["seq"] for event in events]
