"""The websocket client against a scripted server (trio-websocket, no runtime).

Each test's server is a coroutine that plays one side of the protocol of
DESIGN.md "Websocket API" frame by frame, so the client's handling of
replies, event frames, lags and drops is checked exactly. Nothing here waits
on time: every step waits on a frame or an event.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio_websocket

from actors import SubscriptionLagged
from actors.client import (
    AuthenticationError,
    BadRequestError,
    ClientConnectionError,
    ClientError,
    InvalidTransitionError,
    NotFoundError,
    open_client,
)

Conversation = Callable[[trio_websocket.WebSocketConnection], Awaitable[None]]


async def start_server(nursery: trio.Nursery, talk: Conversation, *, reject: int = 0) -> str:
    """Serve ``talk`` on each connection (or reject the handshake with HTTP ``reject``)."""

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        if reject:
            await request.reject(reject, body=b"no such token")
            return
        ws = await request.accept()
        with contextlib.suppress(trio_websocket.ConnectionClosed):
            await talk(ws)

    server = await nursery.start(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None)
    return f"ws://127.0.0.1:{server.port}"


async def receive(ws: trio_websocket.WebSocketConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await ws.get_message())
    return frame


async def reply(ws: trio_websocket.WebSocketConnection, request_id: Any, result: Any) -> None:
    await ws.send_message(json.dumps({"id": request_id, "ok": True, "result": result}))


def event(seq: int, kind: str = "emit", data: Any = None, task_id: str = "t1") -> dict[str, Any]:
    return {"task_id": task_id, "seq": seq, "kind": kind, "at": 1.0 + seq, "data": data}


def terminal(seq: int) -> dict[str, Any]:
    return event(seq, "state", {"from": "running", "to": "completed"})


def free_port() -> int:
    """A port nothing listens on (bound then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_replies_reach_their_callers_whatever_their_order(nursery: trio.Nursery) -> None:
    async def talk(ws: trio_websocket.WebSocketConnection) -> None:
        requests = [await receive(ws) for _ in range(3)]
        for request in reversed(requests):
            await reply(ws, request["id"], {"id": request["task_id"], "state": "running"})

    url = await start_server(nursery, talk)
    results: dict[str, dict[str, Any]] = {}
    async with open_client(url) as client:

        async def get(task_id: str) -> None:
            results[task_id] = await client.get(task_id)

        async with trio.open_nursery() as callers:
            for task_id in ("a", "b", "c"):
                callers.start_soon(get, task_id)
    assert {k: v["id"] for k, v in results.items()} == {"a": "a", "b": "b", "c": "c"}


async def test_request_frames_follow_the_protocol(nursery: trio.Nursery) -> None:
    seen: list[dict[str, Any]] = []

    async def talk(ws: trio_websocket.WebSocketConnection) -> None:
        while True:
            frame = await receive(ws)
            seen.append(frame)
            await reply(ws, frame["id"], {})

    url = await start_server(nursery, talk)
    async with open_client(url) as client:
        await client.submit("research", None, thread_id="t")
        await client.send("x", {"answer": 1})
        await client.signal("x", "pause")
        await client.cancel("x")
        await client.list(states=["running"])
        await client.history("x", after=3)
        await client.usage("t")
    assert [{k: v for k, v in f.items() if k != "id"} for f in seen] == [
        {"op": "submit", "name": "research", "input": None, "thread_id": "t"},
        {"op": "send", "task_id": "x", "input": {"answer": 1}},
        {"op": "signal", "task_id": "x", "signal": "pause"},
        {"op": "cancel", "task_id": "x"},
        {"op": "list", "states": ["running"]},
        {"op": "history", "task_id": "x", "after": 3},
        {"op": "usage", "thread_id": "t"},
    ]
    assert len({f["id"] for f in seen}) == len(seen)


@pytest.mark.parametrize(
    ("code", "error_type"),
    [
        ("not_found", NotFoundError),
        ("invalid_transition", InvalidTransitionError),
        ("not_cancelable", InvalidTransitionError),
        ("bad_request", BadRequestError),
        ("unknown_op", BadRequestError),
        ("unauthorized", AuthenticationError),
        ("something_new", ClientError),
    ],
)
async def test_error_replies_raise_typed_errors(
    nursery: trio.Nursery, code: str, error_type: type[ClientError]
) -> None:
    async def talk(ws: trio_websocket.WebSocketConnection) -> None:
        while True:
            frame = await receive(ws)
            error = {"code": code, "message": f"nope: {frame['op']}"}
            await ws.send_message(json.dumps({"id": frame["id"], "ok": False, "error": error}))

    url = await start_server(nursery, talk)
    async with open_client(url) as client:
        with pytest.raises(error_type) as caught:
            await client.get("x")
        assert type(caught.value) is error_type
        assert (caught.value.code, str(caught.value)) == (code, "nope: get")
        # The connection stays usable after an error reply.
        with pytest.raises(error_type):
            await client.get("y")


async def subscribe_reply(ws: trio_websocket.WebSocketConnection, sub: str) -> dict[str, Any]:
    frame = await receive(ws)
    assert frame["op"] == "subscribe"
    await reply(ws, frame["id"], {"sub": sub})
    return frame


async def test_subscription_takes_single_and_batched_events_and_ends(
    nursery: trio.Nursery,
) -> None:
    async def talk(ws: trio_websocket.WebSocketConnection) -> None:
        await subscribe_reply(ws, "s1")
        await ws.send_message(json.dumps({"op": "event", "sub": "s1", "event": event(1)}))
        batch = {"op": "events", "sub": "s1", "events": [event(2), terminal(3)]}
        await ws.send_message(json.dumps(batch))
        await ws.send_message(json.dumps({"op": "end", "sub": "s1"}))
        await trio.sleep_forever()

    url = await start_server(nursery, talk)
    async with open_client(url) as client, client.subscribe("t1") as events:
        seqs = [e["seq"] async for e in events]
    assert seqs == [1, 2, 3]


async def test_events_sent_before_the_subscribe_reply_are_kept(nursery: trio.Nursery) -> None:
    async def talk(ws: trio_websocket.WebSocketConnection) -> None:
        frame = await receive(ws)
        await ws.send_message(json.dumps({"op": "event", "sub": "s9", "event": event(1)}))
        await reply(ws, frame["id"], {"sub": "s9"})
        await ws.send_message(json.dumps({"op": "event", "sub": "s9", "event": terminal(2)}))
        await ws.send_message(json.dumps({"op": "end", "sub": "s9"}))
        await trio.sleep_forever()

    url = await start_server(nursery, talk)
    async with open_client(url) as client, client.subscribe("t1") as events:
        assert [e["seq"] async for e in events] == [1, 2]


async def test_lagged_notice_raises_after_the_events_before_it(nursery: trio.Nursery) -> None:
    async def talk(ws: trio_websocket.WebSocketConnection) -> None:
        await subscribe_reply(ws, "s1")
        batch = {"op": "events", "sub": "s1", "events": [event(1), event(2)]}
        await ws.send_message(json.dumps(batch))
        await ws.send_message(json.dumps({"op": "lagged", "sub": "s1", "resume_after": 2}))
        await trio.sleep_forever()

    url = await start_server(nursery, talk)
    seqs = []
    async with open_client(url) as client, client.subscribe("t1") as events:
        with pytest.raises(SubscriptionLagged) as caught:
            async for e in events:
                seqs.append(e["seq"])
    assert seqs == [1, 2]
    assert caught.value.resume_after == 2


async def test_leaving_a_subscription_unsubscribes(nursery: trio.Nursery) -> None:
    unsubscribed = trio.Event()

    async def talk(ws: trio_websocket.WebSocketConnection) -> None:
        await subscribe_reply(ws, "s1")
        await ws.send_message(json.dumps({"op": "event", "sub": "s1", "event": event(1)}))
        frame = await receive(ws)
        assert (frame["op"], frame["sub"]) == ("unsubscribe", "s1")
        await reply(ws, frame["id"], {})
        unsubscribed.set()
        await trio.sleep_forever()

    url = await start_server(nursery, talk)
    async with open_client(url) as client:
        async with client.subscribe("t1") as events:
            async for _ in events:
                break
        await unsubscribed.wait()


class ScriptedTask:
    """A task of ``length`` events, served to subscribers with random lags and drops."""

    def __init__(self, length: int, seed: int) -> None:
        self.events = [event(seq) for seq in range(1, length)] + [terminal(length)]
        self.rng = random.Random(seed)
        #: The ``after`` of each subscribe received.
        self.subscribes: list[int] = []

    async def talk(self, ws: trio_websocket.WebSocketConnection) -> None:
        while True:
            frame = await receive(ws)
            if frame["op"] == "unsubscribe":
                await reply(ws, frame["id"], {})
                continue
            assert frame["op"] == "subscribe" and frame["task_id"] == "t1"
            self.subscribes.append(frame["after"])
            sub = f"s{len(self.subscribes)}"
            await reply(ws, frame["id"], {"sub": sub})
            if not await self.serve(ws, sub, frame["after"]):
                await ws.aclose()  # the connection drops
                return

    async def serve(self, ws: trio_websocket.WebSocketConnection, sub: str, after: int) -> bool:
        """Send events after ``after``; False to drop the connection midway."""
        # Replay a few already-seen events too: a client must not yield them twice.
        position = max(0, after - self.rng.randrange(3))
        while position < len(self.events):
            chunk = self.events[position : position + self.rng.randrange(1, 12)]
            position += len(chunk)
            if len(chunk) == 1:
                await ws.send_message(json.dumps({"op": "event", "sub": sub, "event": chunk[0]}))
            else:
                await ws.send_message(json.dumps({"op": "events", "sub": sub, "events": chunk}))
            luck = self.rng.random()
            if position < len(self.events) and luck < 0.08:
                return False
            if position < len(self.events) and luck < 0.16:
                notice = {"op": "lagged", "sub": sub, "resume_after": chunk[-1]["seq"]}
                await ws.send_message(json.dumps(notice))
                return True
        await ws.send_message(json.dumps({"op": "end", "sub": sub}))
        return True


@pytest.mark.parametrize("seed", range(5))
async def test_watch_yields_each_event_once_across_lags_and_drops(
    nursery: trio.Nursery, seed: int
) -> None:
    task = ScriptedTask(300, seed)
    url = await start_server(nursery, task.talk)
    async with open_client(url) as client, client.watch("t1") as events:
        seqs = [e["seq"] async for e in events]
        resubscribed = events.resubscribed
    assert seqs == list(range(1, 301))
    assert resubscribed == len(task.subscribes) - 1 > 0
    assert task.subscribes == sorted(task.subscribes)


async def test_watch_starts_after_the_given_seq(nursery: trio.Nursery) -> None:
    task = ScriptedTask(40, 1)
    url = await start_server(nursery, task.talk)
    async with open_client(url) as client, client.watch("t1", after=25) as events:
        seqs = [e["seq"] async for e in events]
    assert seqs == list(range(26, 41))
    assert task.subscribes[0] == 25


async def test_a_drop_fails_waiting_requests_and_the_next_one_reconnects(
    nursery: trio.Nursery,
) -> None:
    connections = 0

    async def talk(ws: trio_websocket.WebSocketConnection) -> None:
        nonlocal connections
        connections += 1
        frame = await receive(ws)
        if connections == 1:
            await ws.aclose(1011, "going down")
            return
        await reply(ws, frame["id"], {"id": frame["task_id"]})
        await trio.sleep_forever()

    url = await start_server(nursery, talk)
    async with open_client(url) as client:
        with pytest.raises(ClientConnectionError, match="going down"):
            await client.get("a")
        assert await client.get("b") == {"id": "b"}
        assert client.connections == 2


async def test_unreachable_server_is_a_connection_error() -> None:
    url = f"ws://127.0.0.1:{free_port()}"
    with pytest.raises(ClientConnectionError, match="connection refused"):
        async with open_client(url):
            pass  # pragma: no cover


async def test_token_goes_in_the_authorization_header(nursery: trio.Nursery) -> None:
    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        headers = dict(request.headers)
        frame = await receive(ws)
        await reply(ws, frame["id"], {"authorization": headers[b"authorization"].decode()})
        await trio.sleep_forever()

    server = await nursery.start(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None)
    async with open_client(f"ws://127.0.0.1:{server.port}", token="s3cret") as client:
        assert await client.request("whoami") == {"authorization": "Bearer s3cret"}


async def test_policy_violation_close_is_an_authentication_error(nursery: trio.Nursery) -> None:
    async def talk(ws: trio_websocket.WebSocketConnection) -> None:
        await ws.aclose(1008, "unknown token")

    url = await start_server(nursery, talk)
    async with open_client(url, token="bad") as client:
        with pytest.raises(AuthenticationError, match="unknown token"):
            await client.get("x")


async def test_rejected_handshake_is_an_authentication_error(nursery: trio.Nursery) -> None:
    async def talk(ws: trio_websocket.WebSocketConnection) -> None:
        raise AssertionError("never accepted")  # pragma: no cover

    url = await start_server(nursery, talk, reject=401)
    with pytest.raises(AuthenticationError, match="no such token"):
        async with open_client(url, token="bad"):
            pass  # pragma: no cover


async def test_an_error_in_the_block_comes_out_unwrapped(nursery: trio.Nursery) -> None:
    async def talk(ws: trio_websocket.WebSocketConnection) -> None:
        await trio.sleep_forever()

    url = await start_server(nursery, talk)
    with pytest.raises(KeyError):
        async with open_client(url):
            raise KeyError("mine")


def test_the_client_names_that_clashed_with_storage_keep_their_old_names_as_aliases() -> None:
    import storage
    from actors import client

    assert client.ConflictError is client.ClientConflictError
    assert client.Subscription is client.ClientSubscription
    assert client.ClientConflictError is not storage.ConflictError
    assert client.ClientSubscription is not storage.Subscription
    assert client.error_from_reply({"code": "conflict", "message": "m"}).__class__ is (
        client.ClientConflictError
    )


def test_import_actors_leaves_the_websocket_stack_unloaded() -> None:
    """Issue #18: ``import actors`` (and the wire names) load no trio_websocket or
    wsproto; only ``actors.Client``, ``actors.serve_websocket``... do. (ssl comes with trio.)"""
    import subprocess
    import sys

    code = (
        "import sys, actors, actors.core._wire;"
        " print(sorted({'trio_websocket', 'wsproto'} & set(sys.modules)));"
        " actors.Client;"
        " print(sorted({'trio_websocket', 'wsproto'} & set(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.split("\n")[:2] == ["[]", "['trio_websocket', 'wsproto']"]
