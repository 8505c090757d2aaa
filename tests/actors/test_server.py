"""The websocket server: DESIGN.md "Websocket API"; issue 4, items 2 to 6.

Every test runs a runtime and its server in-process on a free port and talks
to it over real sockets. No test uses the autojump clock (it would jump over
socket waits) and no handler depends on time: test tasks wait on gates that
the tests open (see ``wsclient.Gates``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import random
import re
import sys
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
import trio
import trio_websocket
from hypothesis import HealthCheck, given, settings
from trio_websocket import ConnectionClosed

import actors
from actors import TaskState
from actors.server._protocol import OPERATIONS, ErrorCode

from .wsclient import (
    TOKENS,
    Client,
    Gates,
    Served,
    connect,
    connect_stalled,
    make_app,
    open_websocket,
    seqs,
    serving,
)

S = TaskState
README = Path(__file__).parents[2] / "README.md"
INFO_KEYS = {
    "id",
    "name",
    "state",
    "user_id",
    "thread_id",
    "parent_id",
    "created_at",
    "updated_at",
    "progress",
    "error",
}


async def closed_with(client: Client) -> trio_websocket.CloseReason:
    """Read until the server closes the connection; return why (frames before are kept)."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await client.reply()
    reason = closed.value.reason
    assert reason is not None
    return reason


# -- every op -------------------------------------------------------------------------
async def test_submit_get_and_list_answer_with_task_infos() -> None:
    async with serving() as served, connect(served) as client:
        info = await client.ok(
            "submit", name="echo", input={"x": 1}, thread_id="t1", metadata={"k": "v"}
        )
        assert info.keys() >= INFO_KEYS
        assert (info["name"], info["user_id"], info["thread_id"]) == ("echo", "u1", "t1")
        assert info["metadata"] == {"k": "v"}
        await served.rt.wait(info["id"])
        got = await client.ok("get", task_id=info["id"])
        assert got["state"] == "completed" and got["id"] == info["id"]
        other = await client.ok("submit", name="ask", input=None, thread_id="t2")
        await served.rt.wait(other["id"], states=["input_required"])
        assert [t["id"] for t in await client.ok("list")] == [info["id"], other["id"]]
        assert [t["id"] for t in await client.ok("list", thread_id="t2")] == [other["id"]]
        waiting = await client.ok("list", states=["input_required", "paused"])
        assert [t["id"] for t in waiting] == [other["id"]]
        assert [t["id"] for t in await client.ok("list", limit=1)] == [info["id"]]


async def test_submit_with_a_task_id_is_idempotent() -> None:
    async with serving() as served, connect(served) as client:
        first = await client.ok("submit", name="echo", input=1, task_id="job-1")
        again = await client.ok("submit", name="echo", input=2, task_id="job-1")
        assert first["id"] == again["id"] == "job-1"
        await served.rt.wait("job-1")
        assert await served.rt.result("job-1") == 1


async def test_send_answers_a_task_that_asks_and_usage_counts_its_tokens() -> None:
    async with serving() as served, connect(served) as client:
        info = await client.ok("submit", name="ask", input=None, thread_id="t-usage")
        await served.rt.wait(info["id"], states=["input_required"])
        assert (await client.ok("get", task_id=info["id"]))["state"] == "input_required"
        await client.ok("send", task_id=info["id"], input="yes")
        await served.rt.wait(info["id"])
        assert await served.rt.result(info["id"]) == {"answer": "yes"}
        usage = await client.ok("usage", thread_id="t-usage")
        assert (usage["total_tokens"], usage["total_runs"]) == (15, 1)
        assert usage["by_model"] == {"m1": {"tokens": 15, "runs": 1}}


async def test_signal_pauses_resumes_and_stops_a_task() -> None:
    async with serving() as served, connect(served) as client:
        gates, rt = served.gates, served.rt
        info = await client.ok("submit", name="gated", input=["a", "b"])
        await gates.wait_entered("a")
        await client.ok("signal", task_id=info["id"], signal="pause")
        gates.open("a")  # the step ends: a safe point, where the pause takes effect
        await rt.wait(info["id"], states=["paused"])
        assert (await client.ok("get", task_id=info["id"]))["state"] == "paused"
        resumed = await client.ok("signal", task_id=info["id"], signal="resume")
        assert resumed["state"] == "running"
        gates.open("b")
        assert (await rt.wait(info["id"])).state is S.COMPLETED
        assert await rt.result(info["id"]) == ["a", "b"]

        stopped = await client.ok("submit", name="gated", input=["c"])
        await gates.wait_entered("c")
        await client.ok("signal", task_id=stopped["id"], signal="stop")
        assert (await rt.wait(stopped["id"], states=["stopped"])).state is S.STOPPED


async def test_cancel_records_the_cancel_and_a_second_cancel_is_a_no_op() -> None:
    async with serving() as served, connect(served) as client:
        info = await client.ok("submit", name="gated", input=["never"])
        await served.gates.wait_entered("never")
        cancelled = await client.ok("cancel", task_id=info["id"], reason="enough")
        assert cancelled["state"] == "cancelled"
        again = await client.ok("cancel", task_id=info["id"])
        assert again["state"] == "cancelled"


async def test_history_returns_committed_events_after_a_seq() -> None:
    async with serving() as served, connect(served) as client:
        info = await client.ok("submit", name="emit", input={"count": 12})
        final = await served.rt.wait(info["id"])
        events = await client.ok("history", task_id=info["id"])
        assert seqs(events) == list(range(1, final.last_seq + 1))
        assert set(events[0]) == {"task_id", "seq", "kind", "at", "data"}
        assert seqs(await client.ok("history", task_id=info["id"], after=5, limit=3)) == [6, 7, 8]


async def test_subscribe_to_a_task_replays_history_then_live_events_then_ends() -> None:
    async with serving() as served, connect(served) as client:
        info = await client.ok("submit", name="emit", input={"count": 30, "start_gate": "go"})
        await served.gates.wait_entered("go")
        sub = (await client.ok("subscribe", task_id=info["id"]))["sub"]
        served.gates.open("go")
        events, last = await client.events(sub)
        final = await served.rt.get(info["id"])
        assert last == {"op": "end", "sub": sub}
        assert seqs(events) == list(range(1, final.last_seq + 1))
        assert events[-1]["data"]["to"] == "completed"
        assert sum(event["kind"] == "tick" for event in events) == 30
        later = (await client.ok("subscribe", task_id=info["id"], after=final.last_seq - 2))["sub"]
        events, _ = await client.events(later)
        assert seqs(events) == [final.last_seq - 1, final.last_seq]


async def test_events_that_are_ready_together_share_one_frame() -> None:
    async with serving() as served, connect(served) as client:
        info = await client.ok("submit", name="emit", input={"count": 300})
        final = await served.rt.wait(info["id"])
        sub = (await client.ok("subscribe", task_id=info["id"]))["sub"]
        frames = []
        while (frame := await client.frame())["op"] != "end":
            frames.append(frame)
        assert any(frame["op"] == "events" for frame in frames)
        assert len(frames) < final.last_seq
        events = [e for f in frames for e in (f["events"] if "events" in f else [f["event"]])]
        assert seqs(events) == list(range(1, final.last_seq + 1))
        assert all(frame["sub"] == sub for frame in frames)


async def test_frames_stay_within_max_frame_however_many_events_wait() -> None:
    async with serving(max_frame=4096) as served, connect(served) as client:
        info = await client.ok("submit", name="emit", input={"count": 400, "pad": 100})
        final = await served.rt.wait(info["id"])
        sub = (await client.ok("subscribe", task_id=info["id"]))["sub"]
        sizes, events, subs = [], [], set()
        while True:
            message = await client.ws.get_message()
            frame = json.loads(message)
            if frame.get("op") == "end":
                break
            sizes.append(len(message))
            subs.add(frame["sub"])
            events.extend(frame["events"] if "events" in frame else [frame["event"]])
        assert max(sizes) <= 4096
        assert len(sizes) > 400 * 100 // 4096  # the history was cut into many frames
        assert seqs(events) == list(range(1, final.last_seq + 1))
        assert all(frame_sub == sub for frame_sub in subs)


async def test_a_commit_bigger_than_the_buffer_reaches_a_subscriber_that_keeps_up() -> None:
    async with serving(subscription_buffer=4, max_pending=2) as served, connect(served) as client:
        info = await client.ok("submit", name="emit", input={"count": 300, "start_gate": "go"})
        await served.gates.wait_entered("go")
        sub = (await client.ok("subscribe", task_id=info["id"]))["sub"]
        served.gates.open("go")
        events, last = await client.events(sub)
        final = await served.rt.get(info["id"])
        assert last == {"op": "end", "sub": sub}
        assert seqs(events) == list(range(1, final.last_seq + 1))


async def test_subscribe_without_a_task_sees_live_events_of_all_the_users_tasks() -> None:
    async with serving() as served, connect(served) as client:
        sub = (await client.ok("subscribe"))["sub"]
        first = await client.ok("submit", name="echo", input=1)
        second = await client.ok("submit", name="echo", input=2)
        ended: dict[str, list[int]] = {first["id"]: [], second["id"]: []}
        done = 0
        while done < 2:
            frame = await client.frame()
            assert frame["sub"] == sub and frame["op"] in ("event", "events")
            for event in frame["events"] if frame["op"] == "events" else [frame["event"]]:
                ended[event["task_id"]].append(event["seq"])
                done += event["kind"] == "state" and event["data"]["to"] == "completed"
        for task_id, seen in ended.items():
            assert seen == list(range(1, (await served.rt.get(task_id)).last_seq + 1))


async def test_subscribe_to_all_tasks_with_after_replays_the_named_tasks_first() -> None:
    async with serving() as served, connect(served) as client:
        old = await client.ok("submit", name="emit", input={"count": 5})
        final = await served.rt.wait(old["id"])
        sub = (await client.ok("subscribe", after={old["id"]: 2}))["sub"]
        replayed = []
        while len(replayed) < final.last_seq - 2:
            frame = await client.frame()
            replayed.extend(frame["events"] if frame["op"] == "events" else [frame["event"]])
        assert seqs(replayed) == list(range(3, final.last_seq + 1))
        new = await client.ok("submit", name="echo", input=None)
        frame = await client.frame()
        live = frame["events"] if frame["op"] == "events" else [frame["event"]]
        assert frame["sub"] == sub and live[0]["task_id"] == new["id"] and live[0]["seq"] == 1


async def test_subscribe_to_all_tasks_after_zero_is_live_events_only() -> None:
    # The protocol accepts after=0 for all tasks (nothing to replay); the
    # server once asserted an object there and replied "internal".
    async with serving() as served, connect(served) as client:
        sub = (await client.ok("subscribe", after=0))["sub"]
        new = await client.ok("submit", name="echo", input=None)
        frame = await client.frame()
        live = frame["events"] if frame["op"] == "events" else [frame["event"]]
        assert frame["sub"] == sub and live[0]["task_id"] == new["id"] and live[0]["seq"] == 1


async def test_unsubscribe_stops_the_events_of_a_subscription() -> None:
    async with serving() as served, connect(served) as client:
        info = await client.ok("submit", name="gated", input=["u"])
        await served.gates.wait_entered("u")
        sub = (await client.ok("subscribe", task_id=info["id"]))["sub"]
        assert await client.ok("unsubscribe", sub=sub) == {}
        received = len(client.frames)
        served.gates.open("u")
        await served.rt.wait(info["id"])
        await client.ok("get", task_id=info["id"])
        assert len(client.frames) == received
        assert await client.error("unsubscribe", sub=sub) == "unknown_subscription"


# -- authentication -----------------------------------------------------------------------
async def test_a_bearer_header_authenticates_the_connection() -> None:
    async with serving() as served, connect(served, "token-2") as client:
        assert await client.ok("auth", token="token-2") == {"user_id": "u2"}
        assert (await client.ok("submit", name="echo", input=1))["user_id"] == "u2"


async def test_an_auth_op_as_the_first_frame_authenticates_the_connection() -> None:
    async with serving() as served, connect(served, None) as client:
        assert await client.ok("auth", token="token-1") == {"user_id": "u1"}
        assert (await client.ok("submit", name="echo", input=1))["user_id"] == "u1"
        # Authenticated once: another user's token is refused, the connection stays.
        assert await client.error("auth", token="token-2") == "unauthorized"
        assert await client.ok("list") != []


async def test_a_bad_header_token_is_closed_with_policy_violation() -> None:
    async with serving() as served, connect(served, "forged") as client:
        reason = await closed_with(client)
        assert (reason.code, reason.reason) == (1008, "invalid bearer token")


@pytest.mark.parametrize(
    ("first", "why"),
    [
        ({"id": 1, "op": "auth", "token": "forged"}, "invalid token"),
        ({"id": 1, "op": "list"}, "authentication required"),
        ("not json", "authentication required"),
    ],
)
async def test_no_valid_token_first_gets_an_error_then_policy_violation(
    first: Any, why: str
) -> None:
    async with serving() as served, connect(served, None) as client:
        await client.send(first if isinstance(first, str) else json.dumps(first))
        error = await client.reply()
        assert error["ok"] is False and error["error"]["code"] == "unauthorized"
        reason = await closed_with(client)
        assert (reason.code, reason.reason) == (1008, why)


async def test_a_client_that_never_authenticates_is_closed_after_the_auth_timeout() -> None:
    async with serving(auth_timeout=0.2) as served, connect(served, None) as client:
        reason = await closed_with(client)
        assert (reason.code, reason.reason) == (1008, "authentication timed out")


async def test_without_tokens_the_server_serves_one_local_user_who_sees_every_task() -> None:
    assert "single local user" in actors.server._server.describe_auth(None)
    async with serving(tokens=None) as served:
        theirs = await served.rt.submit("echo", 1, user_id="someone")
        async with connect(served, None) as client:
            assert await client.ok("auth", token="anything") == {"user_id": None}
            mine = await client.ok("submit", name="echo", input=2)
            assert mine["user_id"] is None
            await served.rt.wait(theirs.id)
            listed = {task["id"] for task in await client.ok("list")}
            assert listed == {theirs.id, mine["id"]}
            assert (await client.ok("get", task_id=theirs.id))["user_id"] == "someone"


def test_load_tokens_reads_a_file_or_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps(TOKENS))
    assert actors.load_tokens(str(path), environ={}) == TOKENS
    assert actors.load_tokens(None, environ={"TASKACTORS_TOKENS": '{"t": "u"}'}) == {"t": "u"}
    assert actors.load_tokens(None, environ={}) is None
    assert actors.load_tokens(None, environ={"TASKACTORS_TOKENS": " "}) is None
    for bad in ("[]", "{", '{"t": 1}', '{"": "u"}', '{"t": ""}'):
        path.write_text(bad)
        with pytest.raises(actors.TokensError):
            actors.load_tokens(path)
    with pytest.raises(OSError):
        actors.load_tokens(tmp_path / "missing.json")


# -- isolation ----------------------------------------------------------------------------
async def test_another_users_task_reads_as_not_found_for_every_op() -> None:
    async with (
        serving() as served,
        connect(served, "token-1") as u1,
        connect(served, "token-2") as u2,
    ):
        info = await u1.ok("submit", name="gated", input=["iso"], thread_id="mine")
        task_id = info["id"]
        await served.gates.wait_entered("iso")
        assert await u2.error("get", task_id=task_id) == "not_found"
        assert await u2.error("cancel", task_id=task_id) == "not_found"
        assert await u2.error("signal", task_id=task_id, signal="pause") == "not_found"
        assert await u2.error("send", task_id=task_id, input=1) == "not_found"
        assert await u2.error("history", task_id=task_id) == "not_found"
        assert await u2.error("subscribe", task_id=task_id) == "not_found"
        assert await u2.error("subscribe", after={task_id: 0}) == "not_found"
        assert await u2.ok("list") == []
        assert (await u2.ok("usage", thread_id="mine", include_active=True))["total_runs"] == 0
        assert await u2.error("submit", name="echo", input=1, task_id=task_id) == "conflict"
        # Nothing u2 did touched the task.
        assert (await u1.ok("get", task_id=task_id))["state"] == "running"
        # A thread shared by two users: each sees only its own tasks' usage.
        theirs = await u2.ok("submit", name="ask", input=None, thread_id="mine")
        await served.rt.wait(theirs["id"], states=["input_required"])
        await u2.ok("send", task_id=theirs["id"], input="answer")
        await served.rt.wait(theirs["id"])
        assert (await u2.ok("usage", thread_id="mine"))["total_tokens"] == 15
        assert (await u1.ok("usage", thread_id="mine", include_active=True))["total_tokens"] == 0
        served.gates.open("iso")
        assert (await served.rt.wait(task_id)).state is S.COMPLETED


async def test_an_all_tasks_subscription_sees_only_the_users_own_tasks() -> None:
    async with (
        serving() as served,
        connect(served, "token-1") as u1,
        connect(served, "token-2") as u2,
    ):
        sub = (await u2.ok("subscribe"))["sub"]
        foreign = await u1.ok("submit", name="echo", input=1)
        await served.rt.wait(foreign["id"])
        own = await u2.ok("submit", name="echo", input=2)
        seen: set[str] = set()
        while True:
            frame = await u2.frame()
            assert frame["sub"] == sub
            events = frame["events"] if frame["op"] == "events" else [frame["event"]]
            seen.update(event["task_id"] for event in events)
            if any(e["kind"] == "state" and e["data"]["to"] == "completed" for e in events):
                break
        assert seen == {own["id"]}


# -- resumable watching ---------------------------------------------------------------------
async def watch_for_a_while(
    served: Served, task_id: str, after: int, budget: int, seen: list[int], rng: random.Random
) -> bool:
    """Subscribe after ``after``, take ``budget`` events into ``seen`` (stopping in the
    middle of a frame if need be), then drop the connection, gracefully or abruptly.
    Returns whether the subscription ended."""
    with trio.CancelScope() as scope:
        async with connect(served) as client:
            sub = (await client.ok("subscribe", task_id=task_id, after=after))["sub"]
            while budget:
                info = await served.rt.get(task_id)
                if seen and seen[-1] == info.last_seq and not info.terminal:
                    # Caught up: let the task go on, or this watch would wait forever.
                    open_next_gate(served)
                frame = await client.frame()
                assert frame["sub"] == sub
                if frame["op"] == "end":
                    return True
                assert frame["op"] in ("event", "events"), frame
                for event in frame["events"] if frame["op"] == "events" else [frame["event"]]:
                    seen.append(event["seq"])
                    budget -= 1
                    if not budget:
                        break
            if rng.random() < 0.5:
                scope.cancel()  # drop the socket without a close handshake
    return False


def open_next_gate(served: Served) -> None:
    served.gates.open_next("chunk-", first=1)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_a_watcher_that_drops_and_resumes_after_its_last_seq_sees_each_event_once(
    store_url: str, seed: int
) -> None:
    rng = random.Random(seed)
    async with serving(store_url) as served:
        async with connect(served) as client:
            info = await client.ok(
                "submit", name="emit", input={"count": 400, "chunks": 8, "gate_prefix": "chunk-"}
            )
        seen: list[int] = []
        connections = 0
        ended = False
        while not ended:
            if rng.random() < 0.3:
                open_next_gate(served)
            budget = rng.randint(1, 90)
            after = seen[-1] if seen else 0
            ended = await watch_for_a_while(served, info["id"], after, budget, seen, rng)
            connections += 1
        final = await served.rt.get(info["id"])
        assert final.state is S.COMPLETED and final.last_seq > 400
        assert seen == list(range(1, final.last_seq + 1))
        assert connections > 5


# -- limits ---------------------------------------------------------------------------------
async def test_subscriptions_per_connection_are_bounded() -> None:
    async with serving(max_subscriptions=2) as served, connect(served) as client:
        info = await client.ok("submit", name="gated", input=["s"])
        first = (await client.ok("subscribe", task_id=info["id"]))["sub"]
        await client.ok("subscribe")
        assert await client.error("subscribe", task_id=info["id"]) == "too_many_subscriptions"
        await client.ok("unsubscribe", sub=first)
        await client.ok("subscribe", task_id=info["id"])
        served.gates.open("s")


async def test_an_ended_subscription_frees_its_slot() -> None:
    async with serving(max_subscriptions=1) as served, connect(served) as client:
        info = await client.ok("submit", name="echo", input=1)
        await served.rt.wait(info["id"])
        for _ in range(3):
            sub = (await client.ok("subscribe", task_id=info["id"]))["sub"]
            _, last = await client.events(sub)
            assert last["op"] == "end"


async def test_an_oversized_frame_gets_too_large_and_the_connection_stays_usable() -> None:
    async with serving(max_frame=1024) as served, connect(served) as client:
        padding = "é" * 600  # 1200 bytes of UTF-8, 600 characters
        frame = {"id": 1, "op": "submit", "name": "echo", "input": padding}
        await client.send(json.dumps(frame, ensure_ascii=False))
        error = await client.reply()
        assert error["error"]["code"] == "too_large" and error["id"] is None
        assert await client.ok("list") == []


async def test_a_frame_over_twice_the_limit_closes_the_connection_with_1009() -> None:
    async with serving(max_frame=1024) as served, connect(served) as client:
        with contextlib.suppress(ConnectionClosed):  # the server may close while we send
            await client.send(json.dumps({"id": 1, "op": "get", "task_id": "x" * 5000}))
        assert (await closed_with(client)).code == 1009
        async with connect(served) as other:
            assert await other.ok("list") == []


async def test_a_client_that_never_reads_lags_without_slowing_the_task_or_other_clients() -> None:
    big_input = {"count": 600, "pad": 16_000, "start_gate": "go"}
    # The good client's whole task (about 230 events) fits its subscription
    # buffer, so however the scheduler interleaves it cannot lag; the stalled
    # client's (about 670) cannot fit.
    async with (
        serving(max_pending=8, subscription_buffer=256) as served,
        connect_stalled(served, "token-1") as stalled,
        connect(served) as good,
    ):
        big = await stalled.ok("submit", name="emit", input=big_input)
        stalled_sub = (await stalled.ok("subscribe", task_id=big["id"]))["sub"]
        # From here on the stalled client reads nothing until the task is over.
        small = await good.ok("submit", name="emit", input={"count": 200, "start_gate": "go"})
        good_sub = (await good.ok("subscribe", task_id=small["id"]))["sub"]
        served.gates.open("go")
        events, last = await good.events(good_sub)
        assert last["op"] == "end"
        assert seqs(events) == list(range(1, (await served.rt.get(small["id"])).last_seq + 1))
        final = await served.rt.wait(big["id"])
        assert final.state is S.COMPLETED

        events, last = await stalled.events(stalled_sub)
        assert last["op"] == "lagged"
        assert seqs(events) == list(range(1, last["resume_after"] + 1))
        assert last["resume_after"] < final.last_seq
        again = await stalled.ok("subscribe", task_id=big["id"], after=last["resume_after"])
        rest, last = await stalled.events(again["sub"])
        assert last["op"] == "end"
        assert seqs(events + rest) == list(range(1, final.last_seq + 1))


# -- malformed input --------------------------------------------------------------------
NESTED = "[" * 80 + "]" * 80


@pytest.mark.parametrize(
    ("frame", "code", "request_id"),
    [
        ("not json", "bad_json", None),
        (b"\x00\x01binary", "bad_json", None),
        ('{"id": 1, "op": "get", "task_id": NaN}', "bad_json", None),
        ("[1, 2]", "bad_request", None),
        ('{"id": 2}', "bad_request", 2),
        ('{"id": 3, "op": 5}', "bad_request", 3),
        ('{"id": 4, "op": "launch"}', "unknown_op", 4),
        ('{"id": 5, "op": "get"}', "bad_request", 5),
        ('{"id": "six", "op": "get", "task_id": 42}', "bad_request", "six"),
        ('{"id": 7, "op": "signal", "task_id": "x", "signal": "halt"}', "bad_request", 7),
        ('{"id": 8, "op": "list", "limit": "3"}', "bad_request", 8),
        ('{"id": 9, "op": "list", "states": "running"}', "bad_request", 9),
        ('{"id": 10, "op": "get", "task_id": "x", "extra": true}', "bad_request", 10),
        ('{"id": 11, "op": "history", "task_id": "x", "after": -1}', "bad_request", 11),
        ('{"id": 12, "op": "subscribe", "after": 3}', "bad_request", 12),
        ('{"id": 13, "op": "submit", "name": "echo", "input": ' + NESTED + "}", "bad_request", 13),
        ('{"id": [1], "op": "list"}', "bad_request", None),
    ],
)
async def test_a_malformed_frame_gets_an_error_reply_and_the_connection_stays_usable(
    frame: str | bytes, code: str, request_id: Any
) -> None:
    async with serving() as served, connect(served) as client:
        await client.send(frame)
        reply = await client.reply()
        assert reply["ok"] is False
        assert (reply["error"]["code"], reply["id"]) == (code, request_id)
        assert reply["error"]["message"]
        assert await client.ok("list") == []


async def test_runtime_errors_get_their_stable_codes() -> None:
    async with serving() as served, connect(served) as client:
        assert await client.error("get", task_id="nope") == "not_found"
        assert await client.error("history", task_id="nope") == "not_found"
        assert await client.error("subscribe", task_id="nope") == "not_found"
        assert await client.error("submit", name="nope", input=None) == "unknown_name"
        done = await client.ok("submit", name="echo", input=1)
        final = await served.rt.wait(done["id"])
        assert await client.error("signal", task_id=done["id"], signal="resume") == (
            "invalid_transition"
        )
        assert await client.error("cancel", task_id=done["id"]) == "not_cancelable"
        after = final.last_seq + 1
        assert await client.error("subscribe", task_id=done["id"], after=after) == "bad_request"
        busy = await client.ok("submit", name="busy", input="busy-gate")
        await served.gates.wait_entered("busy-gate")
        assert await client.error("send", task_id=busy["id"], input=2) == "rejected"
        assert await client.error("unsubscribe", sub="s999") == "unknown_subscription"
        served.gates.open("busy-gate")
        assert (await client.ok("get", task_id=done["id"]))["state"] == "completed"


# -- a property: random frames never break the server ---------------------------------------
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = "id name input task_id thread_id metadata strategy reason signal states limit after"
field_names = st.sampled_from([*FIELDS.split(), "sub", "token", "include_active"]) | st.text(
    max_size=8
)
requests = st.builds(
    lambda op, fields: json.dumps({"op": op, **fields}),
    st.sampled_from(sorted(OPERATIONS)) | st.text(max_size=10),
    st.dictionaries(field_names, json_values, max_size=5),
)
text_ids = st.text(max_size=8)
plausible = st.one_of(
    st.fixed_dictionaries(
        {"op": st.just("submit"), "name": st.sampled_from(["echo", "nope"]), "input": json_values}
    ),
    st.fixed_dictionaries(
        {"op": st.sampled_from(["get", "cancel", "history", "subscribe"]), "task_id": text_ids}
    ),
    st.fixed_dictionaries(
        {"op": st.just("signal"), "task_id": text_ids, "signal": st.sampled_from(["stop", "x"])}
    ),
    st.fixed_dictionaries({"op": st.just("subscribe")}, optional={"after": json_values}),
    st.fixed_dictionaries({"op": st.just("unsubscribe"), "sub": st.sampled_from(["s1", "s2"])}),
    st.fixed_dictionaries({"op": st.just("list"), "states": st.lists(st.sampled_from(list(S)))}),
    st.fixed_dictionaries({"op": st.just("usage"), "thread_id": text_ids}),
).map(lambda request: json.dumps(request, default=lambda state: state.value))
frames = st.one_of(
    plausible,
    requests,
    json_values.map(json.dumps),
    st.text(max_size=120),
    st.binary(max_size=40),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(chaos=st.lists(frames, min_size=1, max_size=12))
async def test_random_frames_never_crash_the_server_nor_disturb_other_clients(
    chaos: list[str | bytes], caplog: pytest.LogCaptureFixture
) -> None:
    codes = {code.value for code in ErrorCode} - {"internal"}
    async with serving() as served:
        async with connect(served, "token-1") as good, connect(served, "token-chaos") as bad:
            info = await good.ok("submit", name="emit", input={"count": 40, "start_gate": "go"})
            sub = (await good.ok("subscribe", task_id=info["id"]))["sub"]
            for index, frame in enumerate(chaos):
                if index == len(chaos) // 2:
                    served.gates.open("go")
                await bad.send(frame)
                reply = await bad.reply()
                assert reply["ok"] in (True, False)
                assert reply["ok"] or reply["error"]["code"] in codes, reply
            served.gates.open("go")
            events, last = await good.events(sub)
            assert last["op"] == "end"
            final = await served.rt.get(info["id"])
            assert seqs(events) == list(range(1, final.last_seq + 1))
            assert final.state is S.COMPLETED
            await bad.ok("list")
        async with connect(served, "token-chaos") as fresh:
            await fresh.ok("list")
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


# -- interop and lifecycle of the server ------------------------------------------------------
async def test_an_independent_client_library_drives_the_server() -> None:
    """The `websockets` library (asyncio, in a subprocess) speaks the protocol."""
    script = Path(__file__).with_name("ws_interop.py")
    async with serving() as served:
        done = await trio.run_process(
            [sys.executable, str(script), served.url, "token-1"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode()
        report = json.loads(done.stdout)
        final = await served.rt.get(report["task_id"])
        assert final.user_id == "u1" and final.state is S.COMPLETED
        assert report["user_id"] == "u1"
        assert report["seqs"] == list(range(1, final.last_seq + 1))
        assert report["history"] == report["seqs"]
        assert report["ticks"] == 25
        assert report["refused"] == 1008


async def test_the_readme_example_session_runs(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    script = tmp_path / "watch.py"
    script.write_text(next(block for block in blocks if "open_websocket_url" in block))
    environ = {k: v for k, v in os.environ.items() if k != "TASKACTORS_TOKEN"}
    environ["PYTHONPATH"] = str(README.parent)
    async with serving(tokens=None) as served:
        done = await trio.run_process(
            [sys.executable, str(script), served.url],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=environ,
        )
    assert done.returncode == 0, done.stderr.decode()
    lines = done.stdout.decode().splitlines()
    assert lines[0].startswith("submitted ")
    assert lines[-2].startswith("final state: completed after ")
    assert lines[-1] == "usage: 750"


async def test_when_the_runtime_closes_under_the_server_subscriptions_lag(
    nursery: trio.Nursery,
) -> None:
    gates = Gates()
    close_runtime = trio.Event()

    async def run_runtime(*, task_status: trio.TaskStatus[actors.Runtime]) -> None:
        async with actors.open_runtime(make_app(gates), "memory://", node_id="n") as rt:
            task_status.started(rt)
            await close_runtime.wait()

    rt = await nursery.start(run_runtime)
    port = await nursery.start(functools.partial(actors.serve_websocket, rt, port=0))
    async with connect(Served(rt, port, gates), None) as client:
        info = await client.ok("submit", name="gated", input=["g"])
        await gates.wait_entered("g")
        sub = (await client.ok("subscribe", task_id=info["id"]))["sub"]
        close_runtime.set()
        events, last = await client.events(sub)
        assert last == {"op": "lagged", "sub": sub, "resume_after": seqs(events)[-1]}
        assert await client.error("get", task_id=info["id"]) == "unavailable"


async def test_the_server_reports_its_port_and_closes_connections_with_1001_when_cancelled(
    nursery: trio.Nursery,
) -> None:
    async with actors.open_runtime(make_app(Gates()), "memory://", node_id="n") as rt:
        server_scope = trio.CancelScope()

        async def run_server(*, task_status: trio.TaskStatus[int]) -> None:
            with server_scope:
                await actors.serve_websocket(rt, port=0, task_status=task_status)

        port = await nursery.start(run_server)
        assert isinstance(port, int) and port > 0
        async with open_websocket(port, None) as ws:
            client = Client(ws)
            await client.ok("submit", name="echo", input=1)
            server_scope.cancel()
            reason = await closed_with(client)
            assert reason.code == 1001
