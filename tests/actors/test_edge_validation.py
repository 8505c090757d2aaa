"""Values that enter from outside are checked where they enter (issue #17, point 2).

Found by fuzzing ``taskactors serve`` with two users: a lone surrogate (the
JSON escape ``"\\ud800"``: valid JSON, no UTF-8 form) in a submit reached the
SQLite writer and failed the other user's writes; in a read it answered
``internal``; ``history`` with ``after`` >= 2^63 answered ``internal`` too.
Now the websocket answers ``bad_request`` and the Python API raises
``InvalidValueError`` (a ValueError) naming the field, before anything runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

import actors
from actors import InvalidValueError
from actors.cli._main import main

from .conftest import OpenRuntime
from .wsclient import connect, serving

LONE = "\ud800"
TOO_BIG = 1 << 63


def echo_app() -> actors.App:
    app = actors.App()

    @app.task("echo")
    async def echo(ctx: actors.TaskContext, request: actors.Request) -> Any:
        return request.input

    return app


# -- the websocket ------------------------------------------------------------------------
BAD_FRAMES = [
    ('{"op": "submit", "name": "echo", "input": 1, "task_id": "\\ud800"}', "submit.task_id"),
    ('{"op": "submit", "name": "echo", "input": 1, "thread_id": "a\\uDBFF"}', "submit.thread_id"),
    ('{"op": "submit", "name": "echo", "input": ["\\udc00"]}', "submit.input[0]"),
    ('{"op": "submit", "name": "echo", "input": 1, "metadata": {"\\ud800": 1}}', "submit.metadata"),
    ('{"op": "submit", "name": "e\\ud800", "input": 1}', "submit.name"),
    ('{"op": "send", "task_id": "t", "input": {"a": "\\ud800"}}', "send.input"),
    ('{"op": "cancel", "task_id": "t", "reason": "\\ud800"}', "cancel.reason"),
    ('{"op": "get", "task_id": "\\ud800"}', "get.task_id"),
    ('{"op": "list", "thread_id": "\\ud800"}', "list.thread_id"),
    ('{"op": "usage", "thread_id": "\\ud800"}', "usage.thread_id"),
    ('{"op": "history", "task_id": "\\ud800"}', "history.task_id"),
    ('{"op": "subscribe", "after": {"\\ud800": 0}}', "subscribe.after"),
    ('{"op": "history", "task_id": "t", "after": 9223372036854775808}', "history.after"),
    ('{"op": "subscribe", "task_id": "t", "after": 9223372036854775808}', "subscribe.after"),
    ('{"op": "subscribe", "after": {"t": 9223372036854775808}}', "subscribe.after"),
]


async def test_unstorable_values_from_one_user_never_disturb_another(tmp_path: Path) -> None:
    async with (
        serving(f"sqlite:///{tmp_path}/tasks.db") as served,
        connect(served, "token-1") as good,
        connect(served, "token-chaos") as bad,
    ):

        async def good_user() -> None:
            for i in range(20):
                info = await good.ok("submit", name="echo", input=i, task_id=f"good-{i}")
                assert info["state"] in ("pending", "running", "completed")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(good_user)
            for frame, field in BAD_FRAMES * 2:
                await bad.send(frame)
                reply = await bad.reply()
                assert reply["ok"] is False, (frame, reply)
                assert reply["error"]["code"] == "bad_request", (frame, reply)
                assert reply["error"]["message"].startswith(field), (frame, reply)
        for i in range(20):
            assert (await served.rt.wait(f"good-{i}")).state is actors.TaskState.COMPLETED
        assert await bad.ok("list") == []  # nothing of the bad user's was stored


async def test_valid_escapes_that_look_like_surrogates_pass() -> None:
    async with serving() as served, connect(served, "token-1") as client:
        # A surrogate pair (an emoji) and an escaped backslash before "ud800".
        await client.send('{"id": 1, "op": "submit", "name": "echo", "input": "\\ud83d\\ude00"}')
        info = (await client.reply())["result"]
        assert await served.rt.result(info["id"]) == "😀"
        await client.send('{"id": 2, "op": "submit", "name": "echo", "input": "\\\\ud800"}')
        info = (await client.reply())["result"]
        assert await served.rt.result(info["id"]) == "\\ud800"


# -- the runtime API --------------------------------------------------------------------------
async def test_the_runtime_api_refuses_unstorable_values_naming_the_field(
    open_rt: OpenRuntime,
) -> None:
    async with open_rt(echo_app()) as rt:
        done = await rt.submit("echo", 1, task_id="t1")
        await rt.wait("t1")
        refused: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("task_id", lambda: rt.submit("echo", 1, task_id=LONE)),
            ("thread_id", lambda: rt.submit("echo", 1, thread_id=LONE)),
            ("user_id", lambda: rt.submit("echo", 1, user_id=LONE)),
            ("name", lambda: rt.submit(LONE)),
            ("input['k']", lambda: rt.submit("echo", {"k": LONE})),
            ("metadata", lambda: rt.submit("echo", 1, metadata={LONE: 1})),
            ("input", lambda: rt.send("t1", LONE)),
            ("reason", lambda: rt.cancel("t1", reason=LONE)),
            ("task_id", lambda: rt.signal(LONE, actors.Signal.PAUSE)),
            ("task_id", lambda: rt.get(LONE)),
            ("thread_id", lambda: rt.list(thread_id=LONE)),
            ("limit", lambda: rt.list(limit=TOO_BIG)),
            ("after", lambda: rt.history("t1", after=TOO_BIG)),
            ("task_id", lambda: rt.wait(LONE)),
            ("task_id", lambda: rt.result(LONE)),
            ("thread_id", lambda: rt.usage(LONE)),
        ]
        for field, call in refused:
            with pytest.raises(InvalidValueError) as error:
                await call()
            assert error.value.field == field
        with pytest.raises(InvalidValueError, match=r"^after: integer out of range"):
            async with rt.subscribe("t1", after=TOO_BIG):
                pass
        with pytest.raises(InvalidValueError, match=r"^user_id: "):
            async with rt.subscribe_all(user_id=LONE):
                pass
        assert [info.id for info in await rt.list()] == [done.id]
        assert (await rt.get("t1")).state is actors.TaskState.COMPLETED


# -- the store client -------------------------------------------------------------------------
async def test_the_store_client_refuses_unstorable_keys_and_channels(
    open_rt: OpenRuntime,
) -> None:
    async with open_rt(echo_app()) as rt:
        store, state = rt.store, actors.TaskState.RUNNING
        calls: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("key", lambda: store.set_task_state(LONE, state)),
            ("key", lambda: store.compare_and_set_state(LONE, state, state)),
            ("key", lambda: store.get_task_state(LONE)),
            ("key", lambda: store.delete_task_state(LONE)),
            ("channel", lambda: store.publish_event(LONE, "m")),
            ("message", lambda: store.publish_event("c", LONE)),
            ("workflow_id", lambda: store.set_workflow_data(LONE, "k", 1)),
            ("value[0]", lambda: store.set_workflow_data("w", "k", [LONE])),
            ("task_id", lambda: store.get_task(LONE)),
            ("after", lambda: store.read_events("t", TOO_BIG)),
            ("thread_id", lambda: store.aggregate_tokens_by_thread(LONE)),
        ]
        for field, call in calls:
            with pytest.raises(InvalidValueError) as error:
                await call()
            assert error.value.field == field
        with pytest.raises(InvalidValueError):
            store.subscribe_listen(LONE)
        await store.set_task_state("fine-é", state)
        assert await store.get_task_state("fine-é") is state


# -- the command line ---------------------------------------------------------------------------
async def test_the_cli_reports_an_unstorable_argument_as_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # An argument that is not UTF-8 reaches Python as a lone surrogate (surrogateescape).
    async with serving(tokens=None) as served:
        code = await trio.to_thread.run_sync(main, ["get", "\udcff", "--url", served.url])
    assert code == 4
    err = capsys.readouterr().err
    assert err.strip() == (
        "taskactors: error: get.task_id: text that cannot be stored (lone surrogate at 0)"
    )
