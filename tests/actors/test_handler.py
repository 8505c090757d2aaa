"""The Handler API (DESIGN.md "Handler API"): what a handler does with its ctx.

Behaviour tests through the public API only: handlers registered on an
``actors.App`` and driven through the Runtime (``open_rt``, on every
backend). Replays are forced the way a user would: STOP the task, then send
it a new Request, so a new actor rebuilds the run from the stored journal.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
import trio
import trio.testing

import actors
from tests.actors.conftest import OpenRuntime

S = actors.TaskState

#: Bound on waits that must end (seconds of the test's clock): only reached on a bug.
GUARD = 30


async def kinds(rt: actors.Runtime, task_id: str) -> list[str]:
    return [event.kind for event in await rt.history(task_id)]


async def events_of(rt: actors.Runtime, task_id: str, kind: str) -> list[Any]:
    return [event.data for event in await rt.history(task_id) if event.kind == kind]


async def stop_and_send(rt: actors.Runtime, task_id: str, input: Any) -> None:
    """Force a replay: STOP the current run, then start a new one with ``input``."""
    stopped = await rt.signal(task_id, actors.Signal.STOP)
    assert stopped.state is S.STOPPED
    await rt.send(task_id, input)


async def nothing() -> None:
    """A step body that only makes the queued writes durable before it."""


# --------------------------------------------------------------------------
# ctx.step
# --------------------------------------------------------------------------


async def test_step_runs_a_sync_fn_in_a_thread_and_an_async_fn_in_trio(
    open_rt: OpenRuntime,
) -> None:
    app = actors.App()
    ran: dict[str, list[int]] = {"sync": [], "async": []}

    def sync_body(x: int) -> int:
        ran["sync"].append(threading.get_ident())
        return x + 1

    async def async_body(x: int) -> int:
        ran["async"].append(threading.get_ident())
        await trio.lowlevel.checkpoint()
        return x * 10

    @app.task("steps")
    async def steps(ctx: actors.TaskContext, request: actors.Request) -> list[int]:
        a = await ctx.step("sync", sync_body, request.input)
        b = await ctx.step("async", async_body, a)
        return [a, b]

    async with open_rt(app) as rt:
        info = await rt.submit("steps", 1)
        assert await rt.result(info.id) == [2, 20]
        assert len(ran["sync"]) == len(ran["async"]) == 1
        assert ran["sync"][0] != threading.get_ident()
        assert ran["async"][0] == threading.get_ident()
        started = await events_of(rt, info.id, "step_started")
        completed = await events_of(rt, info.id, "step_completed")
        assert [e["name"] for e in started] == [e["name"] for e in completed] == ["sync", "async"]


async def test_step_returns_the_stored_json_form(open_rt: OpenRuntime) -> None:
    app = actors.App()

    @app.task("shape")
    async def shape(ctx: actors.TaskContext, request: actors.Request) -> Any:
        value = await ctx.step("pair", lambda: (1, "two"))
        assert value == [1, "two"]
        return value

    async with open_rt(app) as rt:
        info = await rt.submit("shape", None)
        assert await rt.result(info.id) == [1, "two"]


async def test_a_step_result_that_is_not_json_fails_the_task_with_a_type_error(
    open_rt: OpenRuntime,
) -> None:
    app = actors.App()

    @app.task("opaque")
    async def opaque(ctx: actors.TaskContext, request: actors.Request) -> None:
        await ctx.step("make-object", object)

    async with open_rt(app) as rt:
        info = await rt.submit("opaque", None)
        with pytest.raises(actors.TaskFailed) as failed:
            await rt.result(info.id)
        assert failed.value.type_name == "TypeError"
        assert "make-object" in failed.value.message
        assert "JSON" in failed.value.message
        assert "step_completed" not in await kinds(rt, info.id)


async def test_a_failing_step_is_retried_with_backoff(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    app = actors.App()
    calls: list[float] = []

    async def flaky() -> str:
        calls.append(trio.current_time())
        if len(calls) < 3:
            raise ConnectionError(f"call {len(calls)}")
        return "fetched"

    @app.task("fetch")
    async def fetch(ctx: actors.TaskContext, request: actors.Request) -> Any:
        return await ctx.step("fetch", flaky, retries=2)

    async with open_rt(app) as rt:
        info = await rt.submit("fetch", None)
        assert await rt.result(info.id) == "fetched"
        assert len(calls) == 3
        assert calls[1] - calls[0] >= 1.0
        assert calls[2] - calls[1] >= 2.0
        failures = await events_of(rt, info.id, "step_failed")
        assert [(f["attempt"], f["will_retry"]) for f in failures] == [(1, True), (2, True)]
        assert all(f["name"] == "fetch" and "ConnectionError" in f["error"] for f in failures)
        assert [c["name"] for c in await events_of(rt, info.id, "step_completed")] == ["fetch"]


async def test_a_step_that_fails_past_its_retries_fails_the_task(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    app = actors.App()
    calls: list[int] = []

    async def broken() -> None:
        calls.append(1)
        raise ConnectionError("down")

    @app.task("fetch")
    async def fetch(ctx: actors.TaskContext, request: actors.Request) -> Any:
        return await ctx.step("fetch", broken, retries=1)

    async with open_rt(app) as rt:
        info = await rt.submit("fetch", None)
        with pytest.raises(actors.TaskFailed) as failed:
            await rt.result(info.id)
        assert failed.value.type_name == "ConnectionError"
        assert len(calls) == 2
        failures = await events_of(rt, info.id, "step_failed")
        assert [(f["attempt"], f["will_retry"]) for f in failures] == [(1, True), (2, False)]


# --------------------------------------------------------------------------
# replay
# --------------------------------------------------------------------------


async def test_a_new_request_after_stop_replays_finished_steps(open_rt: OpenRuntime) -> None:
    app = actors.App()
    ran = {"plan": 0, "fetch": 0}
    reached = trio.Event()

    def plan(topic: str) -> list[str]:
        ran["plan"] += 1
        return [topic, topic + "!"]

    async def fetch(items: list[str]) -> int:
        ran["fetch"] += 1
        return len(items)

    @app.task("research")
    async def research(ctx: actors.TaskContext, request: actors.Request) -> Any:
        items = await ctx.step("plan", plan, "x")
        count = await ctx.step("fetch", fetch, items)
        if request.input == "first":
            reached.set()
            await trio.sleep_forever()
        return {"items": items, "count": count, "input": request.input, "run": request.run}

    async with open_rt(app) as rt:
        info = await rt.submit("research", "first")
        await reached.wait()
        await stop_and_send(rt, info.id, "second")
        result = await rt.result(info.id)
        assert result == {"items": ["x", "x!"], "count": 2, "input": "second", "run": 2}
        assert ran == {"plan": 1, "fetch": 1}
        completed = await events_of(rt, info.id, "step_completed")
        assert [c["name"] for c in completed] == ["plan", "fetch"]


async def test_a_replay_asking_for_steps_in_another_order_fails_non_deterministic(
    open_rt: OpenRuntime,
) -> None:
    app = actors.App()
    reached = trio.Event()

    async def body(name: str) -> str:
        return name

    @app.task("fickle", retries=2)
    async def fickle(ctx: actors.TaskContext, request: actors.Request) -> None:
        for name in request.input:
            await ctx.step(name, body, name)
        reached.set()
        await trio.sleep_forever()

    async with open_rt(app) as rt:
        info = await rt.submit("fickle", ["a", "b"])
        await reached.wait()
        await stop_and_send(rt, info.id, ["b", "a"])
        with pytest.raises(actors.TaskFailed) as failed:
            await rt.result(info.id)
        assert failed.value.type_name == "NonDeterminismError"
        assert (await rt.get(info.id)).state is S.FAILED
        assert "retry" not in await kinds(rt, info.id)


async def test_a_later_run_sees_the_latest_checkpoint_in_ctx_state(open_rt: OpenRuntime) -> None:
    app = actors.App()
    seen: list[Any] = []
    reached = trio.Event()

    @app.task("snap")
    async def snap(ctx: actors.TaskContext, request: actors.Request) -> Any:
        seen.append(ctx.state)
        if ctx.state is None:
            await ctx.checkpoint({"n": 1})
            assert ctx.state == {"n": 1}
            await ctx.checkpoint({"n": 2})
            reached.set()
            await trio.sleep_forever()
        return ctx.state

    async with open_rt(app) as rt:
        info = await rt.submit("snap", None)
        await reached.wait()
        await stop_and_send(rt, info.id, "again")
        assert await rt.result(info.id) == {"n": 2}
        assert seen == [None, {"n": 2}]
        assert [e["index"] for e in await events_of(rt, info.id, "checkpoint")] == [0, 1]


async def test_now_uuid_and_random_replay_identically(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    app = actors.App()
    values: list[tuple[float, str, float]] = []
    reached = trio.Event()

    @app.task("values")
    async def values_task(ctx: actors.TaskContext, request: actors.Request) -> Any:
        values.append((ctx.now(), ctx.uuid(), ctx.random()))
        await ctx.step("flush", nothing)
        if request.input == "first":
            reached.set()
            await trio.sleep_forever()
        return list(values[-1])

    async with open_rt(app) as rt:
        info = await rt.submit("values", "first")
        await reached.wait()
        await trio.sleep(100)
        await stop_and_send(rt, info.id, "second")
        result = await rt.result(info.id)
        assert len(values) == 2
        assert values[0] == values[1]
        assert result == list(values[0])
        now, text, number = values[0]
        assert isinstance(now, float)
        assert uuid.UUID(text)
        assert 0.0 <= number < 1.0


# --------------------------------------------------------------------------
# emit, progress, usage
# --------------------------------------------------------------------------


async def test_emit_appends_a_custom_event_to_history(open_rt: OpenRuntime) -> None:
    app = actors.App()

    @app.task("talk")
    async def talk(ctx: actors.TaskContext, request: actors.Request) -> None:
        ctx.emit("note", {"text": "hello"})
        ctx.emit("note", {"text": "again"})

    async with open_rt(app) as rt:
        info = await rt.submit("talk", None)
        await rt.result(info.id)
        assert await events_of(rt, info.id, "note") == [{"text": "hello"}, {"text": "again"}]


@pytest.mark.parametrize("kind", ["state", "step_completed", "progress", ""])
async def test_emit_of_a_reserved_kind_raises_value_error(open_rt: OpenRuntime, kind: str) -> None:
    app = actors.App()
    errors: list[Exception] = []

    @app.task("talk")
    async def talk(ctx: actors.TaskContext, request: actors.Request) -> None:
        try:
            ctx.emit(kind, {"to": "completed"})
        except ValueError as exc:
            errors.append(exc)

    async with open_rt(app) as rt:
        info = await rt.submit("talk", None)
        await rt.result(info.id)
        assert len(errors) == 1
        states = [e.data for e in await rt.history(info.id) if e.kind == "state"]
        assert [s["to"] for s in states] == ["pending", "running", "completed"]


async def test_progress_updates_task_info(open_rt: OpenRuntime) -> None:
    app = actors.App()
    reported = trio.Event()
    release = trio.Event()

    @app.task("long")
    async def long(ctx: actors.TaskContext, request: actors.Request) -> None:
        ctx.progress(1, 4)
        ctx.progress(3, 4)
        await ctx.step("flush", nothing)
        reported.set()
        await release.wait()

    async with open_rt(app) as rt:
        info = await rt.submit("long", None)
        assert info.progress is None
        await reported.wait()
        assert (await rt.get(info.id)).progress == (3, 4)
        progress = await events_of(rt, info.id, "progress")
        assert [(p["done"], p["total"]) for p in progress] == [(1, 4), (3, 4)]
        release.set()
        await rt.result(info.id)


async def test_usage_is_recorded_and_aggregated_by_thread(open_rt: OpenRuntime) -> None:
    app = actors.App()

    @app.task("llm")
    async def llm(ctx: actors.TaskContext, request: actors.Request) -> None:
        ctx.usage(model="m1", input_tokens=120, output_tokens=40, caller="lead_agent")
        ctx.usage(model="m2", input_tokens=5, output_tokens=5)

    async with open_rt(app) as rt:
        info = await rt.submit("llm", None, thread_id="t1")
        await rt.result(info.id)
        reports = await events_of(rt, info.id, "usage")
        assert [(r["model"], r["input_tokens"], r["output_tokens"]) for r in reports] == [
            ("m1", 120, 40),
            ("m2", 5, 5),
        ]
        assert reports[0]["caller"] == "lead_agent"
        usage = await rt.usage("t1")
        assert (usage["total_tokens"], usage["total_runs"]) == (170, 1)
        assert usage["by_caller"] == {"lead_agent": 160, "unknown": 10}


async def test_usage_reported_before_an_ask_is_counted_once(open_rt: OpenRuntime) -> None:
    app = actors.App()

    @app.task("chat")
    async def chat(ctx: actors.TaskContext, request: actors.Request) -> Any:
        ctx.usage(model="m1", input_tokens=10, output_tokens=1)
        return await ctx.ask("more?")

    async with open_rt(app) as rt:
        info = await rt.submit("chat", None, thread_id="t1")
        await rt.wait(info.id, states=[S.INPUT_REQUIRED])
        await rt.send(info.id, "yes")
        assert await rt.result(info.id) == "yes"
        assert (await rt.usage("t1"))["total_tokens"] == 11


async def test_events_before_an_ask_are_not_repeated_when_the_answer_resumes_the_run(
    open_rt: OpenRuntime,
) -> None:
    app = actors.App()

    @app.task("chat")
    async def chat(ctx: actors.TaskContext, request: actors.Request) -> Any:
        ctx.emit("note", {"text": "thinking"})
        ctx.progress(1, 2)
        ctx.usage(model="m1", input_tokens=10, output_tokens=1)
        return await ctx.ask("more?")

    async with open_rt(app) as rt:
        info = await rt.submit("chat", None, thread_id="t1")
        await rt.wait(info.id, states=[S.INPUT_REQUIRED])
        await rt.send(info.id, "yes")
        assert await rt.result(info.id) == "yes"
        seen = await kinds(rt, info.id)
        assert (seen.count("note"), seen.count("progress"), seen.count("usage")) == (1, 1, 1)


# --------------------------------------------------------------------------
# heartbeat
# --------------------------------------------------------------------------


async def test_a_run_without_heartbeat_fails_after_its_retries(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    app = actors.App()
    attempts: list[int] = []

    @app.task("stuck", heartbeat_timeout=3, retries=1)
    async def stuck(ctx: actors.TaskContext, request: actors.Request) -> None:
        attempts.append(ctx.attempt)
        await trio.sleep_forever()

    async with open_rt(app) as rt:
        info = await rt.submit("stuck", None)
        with pytest.raises(actors.TaskFailed) as failed:
            await rt.result(info.id)
        assert failed.value.type_name == "HeartbeatTimeoutError"
        assert attempts == [1, 2]
        assert len(await events_of(rt, info.id, "retry")) == 1


async def test_a_run_that_heartbeats_outlives_its_heartbeat_timeout(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    app = actors.App()

    @app.task("alive", heartbeat_timeout=3)
    async def alive(ctx: actors.TaskContext, request: actors.Request) -> float:
        start = trio.current_time()
        for _ in range(10):
            await trio.sleep(1)
            ctx.heartbeat()
        return trio.current_time() - start

    async with open_rt(app) as rt:
        info = await rt.submit("alive", None)
        assert await rt.result(info.id) >= 10


# --------------------------------------------------------------------------
# ask
# --------------------------------------------------------------------------


async def test_ask_waits_for_input_and_returns_the_sent_request(open_rt: OpenRuntime) -> None:
    app = actors.App()

    @app.task("publish")
    async def publish(ctx: actors.TaskContext, request: actors.Request) -> Any:
        answer = await ctx.ask({"question": "publish?"})
        return {"published": answer}

    async with open_rt(app) as rt:
        info = await rt.submit("publish", None)
        waiting = await rt.wait(info.id, states=[S.INPUT_REQUIRED])
        assert waiting.state is S.INPUT_REQUIRED
        asked = (await rt.history(info.id))[-1]
        assert (asked.kind, asked.data["to"]) == ("state", "input_required")
        assert asked.data["question"] == {"question": "publish?"}

        await rt.send(info.id, True)
        assert await rt.result(info.id) == {"published": True}


async def test_ask_with_auth_waits_in_auth_required(open_rt: OpenRuntime) -> None:
    app = actors.App()

    @app.task("login")
    async def login(ctx: actors.TaskContext, request: actors.Request) -> Any:
        return await ctx.ask({"scheme": "oauth"}, auth=True)

    async with open_rt(app) as rt:
        info = await rt.submit("login", None)
        waiting = await rt.wait(info.id, states=[S.AUTH_REQUIRED])
        assert waiting.state is S.AUTH_REQUIRED
        await rt.send(info.id, {"token": "t0k"})
        assert await rt.result(info.id) == {"token": "t0k"}


# --------------------------------------------------------------------------
# task trees: data, spawn, result
# --------------------------------------------------------------------------


def tree_app() -> tuple[actors.App, trio.Event, trio.Event]:
    """A "parent" spawning a "child" (which waits for ``release``) and returning its result."""
    app = actors.App()
    spawned = trio.Event()
    release = trio.Event()

    @app.task("parent")
    async def parent(ctx: actors.TaskContext, request: actors.Request) -> Any:
        await ctx.data.set("base", request.input)
        child = await ctx.spawn("child", {"factor": 10})
        spawned.set()
        value = await ctx.result(child.id)
        return {"child": value, "seen": await ctx.data.get("seen")}

    @app.task("child")
    async def child(ctx: actors.TaskContext, request: actors.Request) -> Any:
        await release.wait()
        base = await ctx.data.get("base")
        await ctx.data.set("seen", base)
        return base * request.input["factor"]

    return app, spawned, release


async def test_spawn_starts_a_child_listed_under_its_parent(open_rt: OpenRuntime) -> None:
    app, spawned, release = tree_app()
    async with open_rt(app) as rt:
        parent = await rt.submit("parent", 4, user_id="u1", thread_id="t1")
        await spawned.wait()
        children = await rt.list(parent_id=parent.id)
        assert [c.name for c in children] == ["child"]
        child = children[0]
        assert (child.parent_id, child.user_id, child.thread_id) == (parent.id, "u1", "t1")
        assert await rt.list(parent_id=child.id) == []
        release.set()
        assert await rt.result(parent.id) == {"child": 40, "seen": 4}
        assert await rt.result(child.id) == 40


async def test_ctx_data_is_shared_by_a_parent_and_its_child(open_rt: OpenRuntime) -> None:
    app, _, release = tree_app()
    release.set()
    async with open_rt(app) as rt:
        parent = await rt.submit("parent", 7)
        result = await rt.result(parent.id)
        assert result["seen"] == 7


async def test_ctx_result_of_a_failed_child_raises_task_failed(open_rt: OpenRuntime) -> None:
    app = actors.App()
    caught: list[actors.TaskFailed] = []

    @app.task("parent")
    async def parent(ctx: actors.TaskContext, request: actors.Request) -> str:
        child = await ctx.spawn("child")
        try:
            await ctx.result(child.id)
        except actors.TaskFailed as exc:
            caught.append(exc)
        return "handled"

    @app.task("child")
    async def child(ctx: actors.TaskContext, request: actors.Request) -> None:
        raise LookupError("no such thing")

    async with open_rt(app) as rt:
        info = await rt.submit("parent", None)
        assert await rt.result(info.id) == "handled"
        assert [(e.type_name, e.message) for e in caught] == [("LookupError", "no such thing")]


async def test_cancelling_the_parent_cancels_its_child(open_rt: OpenRuntime) -> None:
    app = actors.App()
    child_running = trio.Event()
    child_ended = trio.Event()

    @app.task("parent")
    async def parent(ctx: actors.TaskContext, request: actors.Request) -> Any:
        child = await ctx.spawn("child")
        return await ctx.result(child.id)

    @app.task("child")
    async def child(ctx: actors.TaskContext, request: actors.Request) -> None:
        child_running.set()
        try:
            await trio.sleep_forever()
        finally:
            child_ended.set()

    async with open_rt(app) as rt:
        parent_info = await rt.submit("parent", None)
        await child_running.wait()
        [child_info] = await rt.list(parent_id=parent_info.id)
        assert (await rt.cancel(parent_info.id)).state is S.CANCELLED
        with trio.fail_after(GUARD):
            assert (await rt.wait(child_info.id)).state is S.CANCELLED
            await child_ended.wait()
        with pytest.raises(actors.TaskCancelled):
            await rt.result(child_info.id)


# --------------------------------------------------------------------------
# options
# --------------------------------------------------------------------------


async def test_task_options_are_accepted_and_the_strategy_applies(open_rt: OpenRuntime) -> None:
    app = actors.App()
    running = trio.Event()

    @app.task("busy", retries=3, timeout=60, strategy="reject", heartbeat_timeout=30)
    async def busy(ctx: actors.TaskContext, request: actors.Request) -> None:
        running.set()
        await trio.sleep_forever()

    async with open_rt(app) as rt:
        info = await rt.submit("busy", None)
        assert info.strategy == "reject"
        await running.wait()
        with pytest.raises(actors.RequestRejected):
            await rt.send(info.id, "more")
        other = await rt.submit("busy", None, strategy=actors.Strategy.ENQUEUE)
        assert other.strategy == "enqueue"


@pytest.mark.parametrize(
    "options",
    [
        {"retries": -1},
        {"timeout": 0},
        {"timeout": -5},
        {"heartbeat_timeout": 0},
        {"strategy": "whenever"},
    ],
    ids=["negative-retries", "zero-timeout", "negative-timeout", "zero-heartbeat", "bad-strategy"],
)
def test_bad_task_options_raise_value_error(options: dict[str, Any]) -> None:
    app = actors.App()
    with pytest.raises(ValueError):
        app.task("bad", **options)


def test_registering_a_name_twice_raises_value_error() -> None:
    app = actors.App()

    @app.task("twice")
    async def first(ctx: actors.TaskContext, request: actors.Request) -> None:
        pass

    with pytest.raises(ValueError):

        @app.task("twice")
        async def second(ctx: actors.TaskContext, request: actors.Request) -> None:
            pass
