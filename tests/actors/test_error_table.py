"""The README's error table and the server agree, row by row (issue #17, point 3).

The table ("**Error codes**" under "Websocket API") is parsed from the README;
every code in it has a case here that makes a real server answer that code,
and the table, the cases and ``ErrorCode`` name the same codes.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

import actors
from actors.core._wire import ErrorCode

from .wsclient import Client, Gates, Served, connect, make_app, serving

README = Path(__file__).parents[2] / "README.md"


def readme_error_codes() -> dict[str, str]:
    """code -> "when" of every row of the README's error table."""
    text = README.read_text()
    table = text[text.index("**Error codes**") :]
    table = table[: table.index("\n\n", table.index("| code"))]
    rows = re.findall(r"^\| `(\w+)` \| (.*) \|$", table, flags=re.MULTILINE)
    return dict(rows)


Case = Callable[[Served, Client], Awaitable[None]]
CASES: dict[str, Case] = {}


def case(code: str) -> Callable[[Case], Case]:
    def register(fn: Case) -> Case:
        CASES[code] = fn
        return fn

    return register


async def error_of(client: Client, frame: str | bytes) -> dict[str, str]:
    await client.send(frame)
    reply = await client.reply()
    assert reply["ok"] is False, reply
    error: dict[str, str] = reply["error"]
    assert error["message"]
    return error


@case("bad_json")
async def _bad_json(served: Served, client: Client) -> None:
    for frame in ("not json", b"\x00binary", '{"op": "get", "task_id": NaN}', '{"op": Infinity}'):
        assert (await error_of(client, frame))["code"] == "bad_json"


@case("bad_request")
async def _bad_request(served: Served, client: Client) -> None:
    done = await client.ok("submit", name="echo", input=1)
    last_seq = (await served.rt.wait(done["id"])).last_seq
    frames = [
        "[1, 2]",  # not an object
        '{"op": "get"}',  # a field missing
        '{"op": "get", "task_id": 7}',  # mistyped
        '{"op": "list", "limit": 0}',  # out of range
        '{"op": "history", "task_id": "x", "after": 9223372036854775808}',  # over 2^63 - 1
        '{"op": "get", "task_id": "x", "extra": 1}',  # unknown
        '{"op": "submit", "name": "echo", "input": 1, "task_id": "\\ud800"}',  # lone surrogate
        '{"op": "submit", "name": "echo", "input": {"k\\udfff": 1}}',  # ... in a key
        '{"op": "get", "task_id": "a\\udc00"}',  # ... in a read
        '{"op": "submit", "name": "echo", "input": ' + "[" * 65 + "]" * 65 + "}",  # too deep
        "[" * 100_000,  # nested deeper than json parses (and not even closed)
        '{"op": "submit", "name": "echo", "input": ' + "[" * 5_000 + "]" * 5_000 + "}",
        json.dumps({"op": "history", "task_id": done["id"], "after": last_seq + 1}),
        json.dumps({"op": "subscribe", "task_id": done["id"], "after": last_seq + 1}),
    ]
    for frame in frames:
        error = await error_of(client, frame)
        assert error["code"] == "bad_request", (frame[:80], error)
    # The boundary: after = the last seq is no error (nothing more to read).
    assert await client.ok("history", task_id=done["id"], after=last_seq) == []


@case("unknown_op")
async def _unknown_op(served: Served, client: Client) -> None:
    assert await client.error("launch") == "unknown_op"


@case("unauthorized")
async def _unauthorized(served: Served, client: Client) -> None:
    assert await client.error("auth", token="token-2") == "unauthorized"
    async with connect(served, None) as stranger:
        assert (await error_of(stranger, '{"op": "auth", "token": "wrong"}'))["code"] == (
            "unauthorized"
        )


@case("not_found")
async def _not_found(served: Served, client: Client) -> None:
    assert await client.error("get", task_id="nope") == "not_found"
    async with connect(served, "token-2") as other:
        theirs = await other.ok("submit", name="echo", input=1)
    assert await client.error("get", task_id=theirs["id"]) == "not_found"


@case("unknown_name")
async def _unknown_name(served: Served, client: Client) -> None:
    assert await client.error("submit", name="nope", input=1) == "unknown_name"


@case("conflict")
async def _conflict(served: Served, client: Client) -> None:
    async with connect(served, "token-2") as other:
        await other.ok("submit", name="echo", input=1, task_id="taken")
    assert await client.error("submit", name="echo", input=1, task_id="taken") == "conflict"


@case("invalid_transition")
async def _invalid_transition(served: Served, client: Client) -> None:
    done = await client.ok("submit", name="echo", input=1)
    await served.rt.wait(done["id"])
    assert await client.error("signal", task_id=done["id"], signal="resume") == (
        "invalid_transition"
    )


@case("not_cancelable")
async def _not_cancelable(served: Served, client: Client) -> None:
    done = await client.ok("submit", name="echo", input=1)
    await served.rt.wait(done["id"])
    assert await client.error("cancel", task_id=done["id"]) == "not_cancelable"


@case("rejected")
async def _rejected(served: Served, client: Client) -> None:
    busy = await client.ok("submit", name="busy", input="busy-gate")
    await served.gates.wait_entered("busy-gate")
    assert await client.error("send", task_id=busy["id"], input=2) == "rejected"
    served.gates.open("busy-gate")


@case("too_large")
async def _too_large(served: Served, client: Client) -> None:
    frame = json.dumps({"op": "submit", "name": "echo", "input": "x" * 5000})
    assert (await error_of(client, frame))["code"] == "too_large"


@case("too_many_subscriptions")
async def _too_many_subscriptions(served: Served, client: Client) -> None:
    info = await client.ok("submit", name="busy", input="hold")
    await client.ok("subscribe", task_id=info["id"])
    assert await client.error("subscribe", task_id=info["id"]) == "too_many_subscriptions"
    served.gates.open("hold")


@case("unknown_subscription")
async def _unknown_subscription(served: Served, client: Client) -> None:
    assert await client.error("unsubscribe", sub="s999") == "unknown_subscription"


@case("unavailable")
async def _unavailable(served: Served, client: Client) -> None:
    # A runtime of its own that closes under its server.
    close, closed = trio.Event(), trio.Event()

    async def run(*, task_status: trio.TaskStatus[actors.Runtime]) -> None:
        async with actors.open_runtime(make_app(Gates()), "memory://", node_id="n") as rt:
            task_status.started(rt)
            await close.wait()
        closed.set()

    async with trio.open_nursery() as nursery:
        rt = await nursery.start(run)
        port = await nursery.start(functools.partial(actors.serve_websocket, rt, port=0))
        async with connect(Served(rt, port, Gates()), None) as closing:
            info = await closing.ok("submit", name="echo", input=1)
            close.set()
            await closed.wait()
            assert await closing.error("get", task_id=info["id"]) == "unavailable"
        nursery.cancel_scope.cancel()


@case("internal")
async def _internal(served: Served, client: Client) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a server bug")

    real = served.rt.get
    served.rt.get = broken  # type: ignore[method-assign,assignment]
    try:
        error = await error_of(client, '{"op": "get", "task_id": "x"}')
    finally:
        served.rt.get = real  # type: ignore[method-assign]
    assert error["code"] == "internal"
    assert "bug" not in error["message"]  # the server logs it; the client learns nothing


#: Server limits a case needs (the others run with the defaults).
SERVER_OPTIONS: dict[str, dict[str, Any]] = {
    "too_large": {"max_frame": 4096},
    "too_many_subscriptions": {"max_subscriptions": 1},
}


def test_the_table_the_cases_and_the_error_codes_name_the_same_codes() -> None:
    table = readme_error_codes()
    assert list(table) == [code.value for code in ErrorCode]
    assert set(CASES) == set(table)


@pytest.mark.parametrize("code", list(readme_error_codes()))
async def test_each_row_of_the_readme_error_table_is_what_the_server_answers(
    code: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        serving(**SERVER_OPTIONS.get(code, {})) as served,
        connect(served, "token-1") as client,
    ):
        await CASES[code](served, client)
        # Whatever happened, the connection stays usable.
        await client.ok("list")
