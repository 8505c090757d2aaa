"""The websocket client (``actors.client._client``) against the real server, in-process.

No autojump clock (it would jump over socket waits); the test tasks wait on
gates the tests open (``wsclient.Gates``), never on time.
"""

from __future__ import annotations

import random

import pytest
import trio

from actors.client import (
    AuthenticationError,
    BadRequestError,
    ClientConnectionError,
    ClientError,
    ConflictError,
    InvalidTransitionError,
    Lagged,
    NotFoundError,
    UnavailableError,
    error_from_reply,
    is_terminal,
    open_client,
)
from actors.server._protocol import ErrorCode

from .wsclient import serving

TOKEN = "token-1"


def test_every_protocol_error_code_has_a_typed_error() -> None:
    specific = {
        code.value: type(error_from_reply({"code": code.value, "message": "m"}))
        for code in ErrorCode
    }
    assert specific.pop("internal") is ClientError
    assert ClientError not in specific.values()
    assert {
        NotFoundError,
        InvalidTransitionError,
        ConflictError,
        AuthenticationError,
        BadRequestError,
        UnavailableError,
    } == set(specific.values())


async def test_every_op_round_trips() -> None:
    async with serving() as served, open_client(served.url, token=TOKEN) as client:
        assert await client.auth(TOKEN) == {"user_id": "u1"}
        info = await client.submit("ask", None, thread_id="t1", metadata={"k": 1})
        assert (info["name"], info["user_id"], info["thread_id"]) == ("ask", "u1", "t1")
        async with client.watch(info["id"]) as events:
            async for event in events:
                if event["kind"] == "state" and event["data"]["to"] == "input_required":
                    assert event["data"]["question"] == {"question": "yes?"}
                    await client.send(info["id"], "yes")
            assert events.last_seq == (await client.get(info["id"]))["last_seq"]
        done = await client.get(info["id"])
        assert done["state"] == "completed"
        assert [t["id"] for t in await client.list(thread_id="t1")] == [info["id"]]
        assert await client.list(states=["running"]) == []
        history = await client.history(info["id"])
        assert [e["seq"] for e in history] == list(range(1, done["last_seq"] + 1))
        assert [e["seq"] for e in await client.history(info["id"], after=2, limit=1)] == [3]
        usage = await client.usage("t1")
        assert usage["total_tokens"] == 15
        assert usage["by_model"]["m1"]["tokens"] == 15


async def test_error_replies_become_typed_errors_and_the_connection_stays_usable() -> None:
    async with serving() as served, open_client(served.url, token=TOKEN) as client:
        with pytest.raises(NotFoundError) as missing:
            await client.get("nope")
        assert missing.value.code == "not_found"
        with pytest.raises(NotFoundError) as unknown:
            await client.submit("no-such-handler", {})
        assert unknown.value.code == "unknown_name"
        info = await client.submit("echo", {"x": 1})
        await served.rt.wait(info["id"])
        with pytest.raises(InvalidTransitionError) as resumed:
            await client.signal(info["id"], "resume")
        assert "completed" in str(resumed.value)
        with pytest.raises(InvalidTransitionError) as cancelled:
            await client.cancel(info["id"])
        assert cancelled.value.code == "not_cancelable"
        with pytest.raises(BadRequestError):
            await client.signal(info["id"], "explode")
        with pytest.raises(BadRequestError):
            await client.request("frobnicate")
        assert (await client.get(info["id"]))["state"] == "completed"


async def test_another_users_task_is_not_found() -> None:
    async with serving() as served:
        async with open_client(served.url, token="token-2") as other:
            foreign = await other.submit("ask", None)
        async with open_client(served.url, token=TOKEN) as client:
            for call in (client.get, client.history, client.cancel):
                with pytest.raises(NotFoundError):
                    await call(foreign["id"])
            with pytest.raises(NotFoundError):
                async with client.subscribe(foreign["id"]):
                    pass  # pragma: no cover


async def test_a_bad_token_is_an_authentication_error() -> None:
    async with serving() as served, open_client(served.url, token="wrong") as client:
        with pytest.raises(AuthenticationError, match="invalid bearer token"):
            await client.get("x")


async def test_a_dropped_connection_is_a_connection_error_and_the_client_reconnects() -> None:
    async with serving() as served, open_client(served.url, token=TOKEN) as client:
        info = await client.submit("ask", None)
        connection = client._connection
        assert connection is not None
        await connection.ws.aclose()  # as if the network dropped it
        with pytest.raises(ClientConnectionError):
            await connection.request(99, "get", {"task_id": info["id"]})
        assert (await client.get(info["id"]))["id"] == info["id"]
        assert client.connections == 2


async def test_a_subscription_ends_after_the_terminal_event() -> None:
    async with serving() as served, open_client(served.url, token=TOKEN) as client:
        info = await client.submit("emit", {"count": 30})
        await served.rt.wait(info["id"])
        async with client.subscribe(info["id"], after=5) as events:
            seqs = [e["seq"] async for e in events]
        last = (await client.get(info["id"]))["last_seq"]
        assert seqs == list(range(6, last + 1))


async def test_a_slow_subscription_lags_with_the_seq_to_resume_after() -> None:
    # The server sends a commit's events whole to a subscriber that keeps up, so
    # a consumer that reads nothing until the task is over overflows its own
    # buffer, in the client, or (whichever comes first) the server's.
    options = {"subscription_buffer": 4, "max_pending": 2}
    async with (
        serving(**options) as served,
        open_client(served.url, token=TOKEN, subscription_buffer=4) as client,
    ):
        info = await client.submit("emit", {"count": 200, "start_gate": "go"})
        await served.gates.wait_entered("go")
        async with client.subscribe(info["id"]) as events:
            served.gates.open("go")
            await served.rt.wait(info["id"])
            seen = []
            with pytest.raises(Lagged) as lagged:
                async for event in events:
                    seen.append(event["seq"])
        assert seen == list(range(1, len(seen) + 1))
        assert lagged.value.resume_after == len(seen)


@pytest.mark.parametrize("seed", range(3))
async def test_watch_sees_each_event_once_through_drops_and_lags(seed: int) -> None:
    """Issue 4, item 4: hundreds of events, a client that drops at random points."""
    rng = random.Random(seed)
    count, chunks = 400, 20
    options = {"subscription_buffer": 16, "max_pending": 8}
    async with serving(**options) as served, open_client(served.url, token=TOKEN) as client:
        info = await client.submit(
            "emit", {"count": count, "chunks": chunks, "gate_prefix": "chunk-"}
        )
        seqs: list[int] = []
        drops = 0
        async with client.watch(info["id"]) as events:
            async for event in events:
                seqs.append(event["seq"])
                if event["kind"] == "step_started" and event["data"]["name"].startswith("chunk-"):
                    served.gates.open(event["data"]["name"])
                if not is_terminal(event) and rng.random() < 0.02:
                    connection = client._connection
                    assert connection is not None
                    await connection.ws.aclose()
                    drops += 1
                if rng.random() < 0.01:
                    await trio.testing.wait_all_tasks_blocked()  # let the server run ahead
            resubscribed = events.resubscribed
        final = await client.get(info["id"])
        assert final["state"] == "completed"
        assert seqs == list(range(1, final["last_seq"] + 1))
        # (A drop may come when the rest of the events already arrived, and
        # two drops in a row close one connection: hence no equalities.)
        assert drops > 0 and resubscribed > 0
        assert 1 < client.connections <= drops + 1
