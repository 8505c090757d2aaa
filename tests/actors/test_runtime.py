"""The Runtime API (DESIGN.md "Runtime API", "Task lifecycle", "Events").

Behaviour tests through the public API only: ``actors.App``,
``actors.open_runtime`` (via the ``open_rt`` fixture, on every backend) and
the ``Runtime`` methods. Handlers are declared per test and ordered with
trio.Event; anything involving time runs on ``autojump_clock``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

import actors
from storage import open as storage_open
from tests.actors.conftest import OpenRuntime

S = actors.TaskState

#: Bound on waits that must end (seconds of the test's clock): only reached on a bug.
GUARD = 30


async def collect(rt: actors.Runtime, task_id: str, **options: Any) -> list[actors.TaskEvent]:
    """Everything a subscription yields until it ends."""
    with trio.fail_after(GUARD):
        async with rt.subscribe(task_id, **options) as events:
            return [event async for event in events]


def seqs(events: list[actors.TaskEvent]) -> list[int]:
    return [event.seq for event in events]


def ids(infos: list[actors.TaskInfo]) -> list[str]:
    return [info.id for info in infos]


def gated_app(
    *, emits: int = 0, commit_every: int | None = None
) -> tuple[actors.App, trio.Event, trio.Event]:
    """An app whose "gated" task waits for ``release``, emits, then returns its
    input; with ``commit_every``, a checkpoint after that many emits (so the
    events commit in several batches instead of one)."""
    app = actors.App()
    started = trio.Event()
    release = trio.Event()

    @app.task("gated")
    async def gated(ctx: actors.TaskContext, request: actors.Request) -> Any:
        started.set()
        await release.wait()
        for i in range(emits):
            ctx.emit("tick", {"i": i})
            if commit_every and i % commit_every == commit_every - 1:
                await ctx.checkpoint(i)
        return request.input

    return app, started, release


def blocking_app() -> actors.App:
    """An app whose "job" task returns at once for input "done", else blocks."""
    app = actors.App()

    @app.task("job")
    async def job(ctx: actors.TaskContext, request: actors.Request) -> Any:
        if request.input != "done":
            await trio.sleep_forever()
        return request.input

    return app


# --------------------------------------------------------------------------
# submit, get, list, history
# --------------------------------------------------------------------------


async def test_submit_records_pending_then_runs(open_rt: OpenRuntime) -> None:
    app, started, release = gated_app()
    async with open_rt(app) as rt:
        info = await rt.submit("gated", {"x": 1})
        assert info.state is S.PENDING
        first = (await rt.history(info.id))[0]
        assert (first.seq, first.kind, first.data["to"]) == (1, "state", "pending")

        await started.wait()
        # The handler starts as its START is written: running once it commits.
        await rt.wait(info.id, states=[S.RUNNING])
        assert (await rt.get(info.id)).state is S.RUNNING
        release.set()
        assert await rt.result(info.id) == {"x": 1}
        assert (await rt.get(info.id)).state is S.COMPLETED


async def test_submit_moves_the_task_pending_running_completed(open_rt: OpenRuntime) -> None:
    app, _, release = gated_app()
    release.set()
    async with open_rt(app) as rt:
        info = await rt.submit("gated", 7)
        assert await rt.result(info.id) == 7
        moves = [e.data["to"] for e in await rt.history(info.id) if e.kind == "state"]
        assert moves == ["pending", "running", "completed"]


async def test_result_is_the_stored_value_for_waiters_before_and_after_the_end(
    open_rt: OpenRuntime,
) -> None:
    # A waiter that was waiting when the task completed gets the result its
    # actor committed; one that comes later reads it from the store: both
    # get the stored JSON form (a tuple comes back as a list), equal.
    app, started, release = gated_app()
    async with open_rt(app) as rt:
        info = await rt.submit("gated", {"pair": (1, 2), "text": "é"})
        await started.wait()
        early: list[Any] = []

        async def wait_early() -> None:
            early.append(await rt.result(info.id))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_early)
            while rt.statistics()["state_watches"] == 0:
                await trio.testing.wait_all_tasks_blocked()
            release.set()
        late = await rt.result(info.id)
    assert early == [late] == [{"pair": [1, 2], "text": "é"}]


async def test_submit_with_a_task_id_is_idempotent_and_runs_once(open_rt: OpenRuntime) -> None:
    app = actors.App()
    runs: list[Any] = []

    @app.task("count")
    async def count(ctx: actors.TaskContext, request: actors.Request) -> Any:
        runs.append(request.input)
        return len(runs)

    async with open_rt(app) as rt:
        first = await rt.submit("count", "a", task_id="job-1")
        second = await rt.submit("count", "b", task_id="job-1")
        assert first.id == second.id == "job-1"
        assert await rt.result("job-1") == 1

        done = await rt.get("job-1")
        third = await rt.submit("count", "c", task_id="job-1")
        assert third.state is S.COMPLETED
        assert third.last_seq == done.last_seq
        await trio.testing.wait_all_tasks_blocked()
        assert runs == ["a"]
        assert ids(await rt.list()) == ["job-1"]


async def test_submit_with_a_task_id_of_another_user_raises_task_exists(
    open_rt: OpenRuntime,
) -> None:
    async with open_rt(blocking_app()) as rt:
        await rt.submit("job", "done", task_id="shared", user_id="u1")
        with pytest.raises(actors.TaskExists):
            await rt.submit("job", "done", task_id="shared", user_id="u2")
        assert (await rt.get("shared")).user_id == "u1"


async def test_submit_of_an_unknown_name_raises_and_records_nothing(open_rt: OpenRuntime) -> None:
    async with open_rt(blocking_app()) as rt:
        with pytest.raises(actors.UnknownTaskName):
            await rt.submit("no-such-task", {})
        assert await rt.list() == []


async def test_get_returns_what_submit_recorded(open_rt: OpenRuntime) -> None:
    async with open_rt(blocking_app()) as rt:
        info = await rt.submit(
            "job", "done", user_id="u1", thread_id="t1", metadata={"source": "test"}
        )
        await rt.wait(info.id)
        got = await rt.get(info.id)
        assert (got.id, got.name, got.state) == (info.id, "job", S.COMPLETED)
        assert (got.user_id, got.thread_id, got.parent_id) == ("u1", "t1", None)
        assert got.metadata == {"source": "test"}
        assert got.error is None


async def test_get_of_an_unknown_id_raises_task_not_found(open_rt: OpenRuntime) -> None:
    async with open_rt(blocking_app()) as rt:
        with pytest.raises(actors.TaskNotFound):
            await rt.get("nope")


async def test_list_filters_by_user_thread_state_and_limit(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_rt(blocking_app()) as rt:
        await rt.submit("job", "done", task_id="a", user_id="u1", thread_id="t1")
        await trio.sleep(1)
        await rt.submit("job", "block", task_id="b", user_id="u1", thread_id="t2")
        await trio.sleep(1)
        await rt.submit("job", "block", task_id="c", user_id="u2", thread_id="t1")
        await rt.wait("a")
        await rt.wait("b", states=[S.RUNNING])
        await rt.wait("c", states=[S.RUNNING])

        assert ids(await rt.list()) == ["a", "b", "c"]
        assert ids(await rt.list(user_id="u1")) == ["a", "b"]
        assert ids(await rt.list(thread_id="t1")) == ["a", "c"]
        assert ids(await rt.list(states=[S.COMPLETED])) == ["a"]
        assert ids(await rt.list(states=["running"])) == ["b", "c"]
        assert ids(await rt.list(user_id="u1", states=[S.RUNNING])) == ["b"]
        assert ids(await rt.list(limit=2)) == ["a", "b"]


async def test_history_is_contiguous_from_one(open_rt: OpenRuntime) -> None:
    app, _, release = gated_app(emits=5)
    release.set()
    async with open_rt(app) as rt:
        info = await rt.submit("gated", None)
        await rt.result(info.id)
        history = await rt.history(info.id)
        assert seqs(history) == list(range(1, len(history) + 1))
        assert [e.kind for e in history].count("tick") == 5
        assert all(e.task_id == info.id for e in history)
        assert (await rt.get(info.id)).last_seq == len(history)


async def test_history_after_n_starts_at_n_plus_one(open_rt: OpenRuntime) -> None:
    app, _, release = gated_app(emits=3)
    release.set()
    async with open_rt(app) as rt:
        info = await rt.submit("gated", None)
        await rt.result(info.id)
        history = await rt.history(info.id)
        for n in range(len(history) + 1):
            assert await rt.history(info.id, after=n) == history[n:]


# --------------------------------------------------------------------------
# user isolation
# --------------------------------------------------------------------------


async def _subscribe_once(rt: actors.Runtime, task_id: str, user_id: str) -> None:
    async with rt.subscribe(task_id, user_id=user_id):
        pass


FOREIGN_CALLS: dict[str, Callable[[actors.Runtime, str, str], Awaitable[Any]]] = {
    "get": lambda rt, task_id, user: rt.get(task_id, user_id=user),
    "send": lambda rt, task_id, user: rt.send(task_id, "intrude", user_id=user),
    "signal": lambda rt, task_id, user: rt.signal(task_id, actors.Signal.STOP, user_id=user),
    "cancel": lambda rt, task_id, user: rt.cancel(task_id, user_id=user),
    "history": lambda rt, task_id, user: rt.history(task_id, user_id=user),
    "subscribe": _subscribe_once,
    "wait": lambda rt, task_id, user: rt.wait(task_id, user_id=user),
    "result": lambda rt, task_id, user: rt.result(task_id, user_id=user),
}


@pytest.mark.parametrize("call", sorted(FOREIGN_CALLS))
async def test_another_users_task_reads_as_not_found_and_is_untouched(
    open_rt: OpenRuntime, call: str
) -> None:
    async with open_rt(blocking_app()) as rt:
        info = await rt.submit("job", "block", user_id="u1")
        before = await rt.wait(info.id, states=[S.RUNNING])
        history = await rt.history(info.id)

        with pytest.raises(actors.TaskNotFound):
            await FOREIGN_CALLS[call](rt, info.id, "u2")

        await trio.testing.wait_all_tasks_blocked()
        after = await rt.get(info.id)
        assert (after.state, after.run, after.last_seq) == (
            before.state,
            before.run,
            before.last_seq,
        )
        assert await rt.history(info.id) == history


async def test_list_for_another_user_leaves_the_task_out(open_rt: OpenRuntime) -> None:
    async with open_rt(blocking_app()) as rt:
        mine = await rt.submit("job", "done", user_id="u1", thread_id="t1")
        await rt.wait(mine.id)
        assert await rt.list(user_id="u2") == []
        assert await rt.list(user_id="u2", thread_id="t1") == []
        assert ids(await rt.list(user_id="u1")) == [mine.id]


async def test_the_owning_user_reaches_the_task(open_rt: OpenRuntime) -> None:
    async with open_rt(blocking_app()) as rt:
        info = await rt.submit("job", "block", user_id="u1")
        await rt.wait(info.id, states=[S.RUNNING], user_id="u1")
        assert (await rt.get(info.id, user_id="u1")).state is S.RUNNING
        await rt.cancel(info.id, user_id="u1")
        assert (await rt.wait(info.id, user_id="u1")).state is S.CANCELLED


# --------------------------------------------------------------------------
# events
# --------------------------------------------------------------------------


async def test_subscribe_after_n_yields_n_plus_one_to_the_terminal_event(
    open_rt: OpenRuntime,
) -> None:
    app, started, release = gated_app(emits=5)
    async with open_rt(app) as rt:
        info = await rt.submit("gated", None)
        await started.wait()
        live: list[actors.TaskEvent] = []
        with trio.fail_after(GUARD):
            async with rt.subscribe(info.id, after=1) as events:
                async for event in events:
                    live.append(event)
                    release.set()
        history = await rt.history(info.id)
        assert live == history[1:]
        assert live[-1].terminal
        assert live[-1].data["to"] == "completed"


async def test_subscribe_after_any_n_replays_exactly_the_rest(open_rt: OpenRuntime) -> None:
    app, _, release = gated_app(emits=3)
    release.set()
    async with open_rt(app) as rt:
        info = await rt.submit("gated", None)
        await rt.result(info.id)
        history = await rt.history(info.id)
        for n in range(len(history)):
            assert await collect(rt, info.id, after=n) == history[n:]


async def test_subscribing_to_a_finished_task_replays_and_ends(open_rt: OpenRuntime) -> None:
    app, _, release = gated_app(emits=2)
    release.set()
    async with open_rt(app) as rt:
        info = await rt.submit("gated", None)
        await rt.result(info.id)
        history = await rt.history(info.id)
        replayed = await collect(rt, info.id)
        assert replayed == history
        assert seqs(replayed) == list(range(1, len(history) + 1))
        assert replayed[-1].terminal


async def test_subscribing_after_the_terminal_event_ends_at_once(open_rt: OpenRuntime) -> None:
    app, _, release = gated_app()
    release.set()
    async with open_rt(app) as rt:
        info = await rt.submit("gated", None)
        done = await rt.wait(info.id)
        assert await collect(rt, info.id, after=done.last_seq) == []


async def test_two_subscribers_see_the_same_events_in_the_same_order(
    open_rt: OpenRuntime,
) -> None:
    app, started, release = gated_app(emits=10)
    async with open_rt(app) as rt:
        info = await rt.submit("gated", None)
        await started.wait()
        seen: dict[str, list[actors.TaskEvent]] = {}

        async def watch(name: str) -> None:
            seen[name] = await collect(rt, info.id)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch, "first")
            nursery.start_soon(watch, "second")
            await trio.testing.wait_all_tasks_blocked()
            release.set()
        history = await rt.history(info.id)
        assert seen["first"] == seen["second"] == history


async def test_every_event_a_subscriber_gets_is_already_in_history(
    open_rt: OpenRuntime,
) -> None:
    app, started, release = gated_app(emits=20)
    async with open_rt(app) as rt:
        info = await rt.submit("gated", None)
        await started.wait()
        checked = 0
        with trio.fail_after(GUARD):
            async with rt.subscribe(info.id, after=2) as events:
                release.set()
                async for event in events:
                    stored = await rt.history(info.id, after=event.seq - 1, limit=1)
                    assert stored == [event]
                    checked += 1
        assert checked == len(await rt.history(info.id)) - 2


async def test_a_subscriber_that_never_reads_slows_neither_the_task_nor_others(
    open_rt: OpenRuntime,
) -> None:
    # Commits of a few events each: a watch takes one batch whatever its size
    # (the batch is shared, not copied), then overflows at its buffer.
    app, started, release = gated_app(emits=50, commit_every=5)
    async with open_rt(app) as rt:
        info = await rt.submit("gated", None)
        await started.wait()
        async with rt.subscribe(info.id, buffer=8) as slow:
            seen: list[actors.TaskEvent] = []

            async def watch() -> None:
                seen.extend(await collect(rt, info.id))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                await trio.testing.wait_all_tasks_blocked()
                release.set()
                with trio.fail_after(GUARD):
                    assert await rt.result(info.id) is None
            history = await rt.history(info.id)
            assert seen == history

            yielded: list[actors.TaskEvent] = []
            with pytest.raises(actors.SubscriptionLagged) as lagged:
                async for event in slow:
                    yielded.append(event)
        assert yielded == history[: len(yielded)]
        assert lagged.value.resume_after == (yielded[-1].seq if yielded else 0)

        rest = await collect(rt, info.id, after=lagged.value.resume_after)
        assert yielded + rest == history


async def test_a_lagging_subscriber_with_resume_on_lag_yields_everything(
    open_rt: OpenRuntime,
) -> None:
    app, started, release = gated_app(emits=50)
    async with open_rt(app) as rt:
        info = await rt.submit("gated", None)
        await started.wait()
        async with rt.subscribe(info.id, buffer=8, resume_on_lag=True) as slow:
            release.set()
            with trio.fail_after(GUARD):
                await rt.result(info.id)
            with trio.fail_after(GUARD):
                everything = [event async for event in slow]
        assert everything == await rt.history(info.id)


# --------------------------------------------------------------------------
# failures
# --------------------------------------------------------------------------


def raise_boom() -> None:
    raise ValueError("boom")


async def test_a_handler_that_raises_fails_the_task_with_its_exception(
    open_rt: OpenRuntime,
) -> None:
    app = actors.App()

    @app.task("explode")
    async def explode(ctx: actors.TaskContext, request: actors.Request) -> None:
        raise_boom()

    async with open_rt(app) as rt:
        info = await rt.submit("explode", None)
        with pytest.raises(actors.TaskFailed) as failed:
            await rt.result(info.id)
        assert failed.value.type_name == "ValueError"
        assert failed.value.message == "boom"
        assert "raise_boom" in failed.value.traceback
        done = await rt.get(info.id)
        assert done.state is S.FAILED
        assert done.error is not None and "boom" in done.error
        assert "retry" not in [e.kind for e in await rt.history(info.id)]


async def test_a_failing_handler_is_retried_with_backoff_then_completes(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    app = actors.App()
    attempts: list[tuple[int, float]] = []

    @app.task("flaky", retries=2)
    async def flaky(ctx: actors.TaskContext, request: actors.Request) -> str:
        attempts.append((ctx.attempt, trio.current_time()))
        if len(attempts) < 3:
            raise ConnectionError(f"attempt {len(attempts)}")
        return "ok"

    async with open_rt(app) as rt:
        info = await rt.submit("flaky", None)
        assert await rt.result(info.id) == "ok"
        retries = [e.data for e in await rt.history(info.id) if e.kind == "retry"]
        assert [(r["attempt"], r["delay"]) for r in retries] == [(2, 1.0), (3, 2.0)]
        assert "ConnectionError" in retries[0]["error"]
        assert [number for number, _ in attempts] == [1, 2, 3]
        times = [at for _, at in attempts]
        assert times[1] - times[0] >= 1.0
        assert times[2] - times[1] >= 2.0


async def test_a_handler_that_keeps_failing_fails_after_its_retries(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    app = actors.App()
    attempts: list[int] = []

    @app.task("broken", retries=2)
    async def broken(ctx: actors.TaskContext, request: actors.Request) -> None:
        attempts.append(ctx.attempt)
        raise KeyError("missing")

    async with open_rt(app) as rt:
        info = await rt.submit("broken", None)
        with pytest.raises(actors.TaskFailed) as failed:
            await rt.result(info.id)
        assert failed.value.type_name == "KeyError"
        assert attempts == [1, 2, 3]


async def test_a_timeout_fails_the_task_without_retrying(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    app = actors.App()
    runs: list[int] = []

    @app.task("slow", timeout=5, retries=2)
    async def slow(ctx: actors.TaskContext, request: actors.Request) -> str:
        runs.append(ctx.attempt)
        await trio.sleep(10)
        return "late"

    async with open_rt(app) as rt:
        info = await rt.submit("slow", None)
        with pytest.raises(actors.TaskFailed) as failed:
            await rt.result(info.id)
        assert failed.value.type_name == "TaskTimeoutError"
        assert (await rt.get(info.id)).state is S.FAILED
        assert runs == [1]
        assert "retry" not in [e.kind for e in await rt.history(info.id)]


async def test_result_of_a_cancelled_task_raises_task_cancelled(open_rt: OpenRuntime) -> None:
    async with open_rt(blocking_app()) as rt:
        info = await rt.submit("job", "block")
        await rt.wait(info.id, states=[S.RUNNING])
        cancelled = await rt.cancel(info.id, reason="no longer needed")
        assert cancelled.state is S.CANCELLED
        with pytest.raises(actors.TaskCancelled):
            await rt.result(info.id)


# --------------------------------------------------------------------------
# usage
# --------------------------------------------------------------------------


def usage_app() -> tuple[actors.App, trio.Event]:
    """An app whose "work" task reports the usage in its input, then ends or blocks."""
    app = actors.App()
    reported = trio.Event()

    @app.task("work")
    async def work(ctx: actors.TaskContext, request: actors.Request) -> None:
        for report in request.input["usage"]:
            ctx.usage(**report)
        await ctx.checkpoint("reported")
        if request.input.get("block"):
            reported.set()
            await trio.sleep_forever()

    return app, reported


async def test_usage_aggregates_finished_tasks_of_a_thread(open_rt: OpenRuntime) -> None:
    app, reported = usage_app()
    lead = {"model": "m1", "input_tokens": 10, "output_tokens": 5, "caller": "lead"}
    helper = {"model": "m2", "input_tokens": 1, "output_tokens": 2, "caller": "helper"}
    async with open_rt(app) as rt:
        done = await rt.submit("work", {"usage": [lead, helper]}, thread_id="t1")
        other = await rt.submit("work", {"usage": [lead]}, thread_id="t2")
        active = await rt.submit("work", {"usage": [lead], "block": True}, thread_id="t1")
        await rt.result(done.id)
        await rt.result(other.id)
        await reported.wait()
        await rt.wait(active.id, states=[S.RUNNING])
        assert (await rt.get(active.id)).state is S.RUNNING

        assert await rt.usage("t1") == {
            "total_tokens": 18,
            "total_input_tokens": 11,
            "total_output_tokens": 7,
            "total_runs": 1,
            "by_model": {"m1": {"tokens": 15, "runs": 1}, "m2": {"tokens": 3, "runs": 1}},
            "by_caller": {"lead": 15, "helper": 3},
        }


async def test_usage_with_include_active_counts_running_tasks(open_rt: OpenRuntime) -> None:
    app, reported = usage_app()
    lead = {"model": "m1", "input_tokens": 10, "output_tokens": 5, "caller": "lead"}
    anonymous = {"model": "m1", "input_tokens": 100, "output_tokens": 50}
    async with open_rt(app) as rt:
        done = await rt.submit("work", {"usage": [lead]}, thread_id="t1")
        active = await rt.submit("work", {"usage": [anonymous], "block": True}, thread_id="t1")
        await rt.result(done.id)
        await reported.wait()

        usage = await rt.usage("t1", include_active=True)
        assert usage["total_tokens"] == 165
        assert (usage["total_input_tokens"], usage["total_output_tokens"]) == (110, 55)
        assert usage["total_runs"] == 2
        assert usage["by_model"] == {"m1": {"tokens": 165, "runs": 2}}
        assert usage["by_caller"] == {"lead": 15, "unknown": 150}
        assert (await rt.usage("t1"))["total_tokens"] == 15
        await rt.cancel(active.id)
        assert (await rt.usage("t1"))["total_tokens"] == 165


async def test_usage_of_a_thread_without_tasks_is_zero(open_rt: OpenRuntime) -> None:
    app, _ = usage_app()
    async with open_rt(app) as rt:
        usage = await rt.usage("nobody")
        assert usage["total_tokens"] == usage["total_runs"] == 0
        assert usage["by_model"] == usage["by_caller"] == {}


# --------------------------------------------------------------------------
# actors
# --------------------------------------------------------------------------


@pytest.mark.parametrize("outcome", ["completed", "failed", "cancelled"])
async def test_a_finished_task_leaves_no_actor_behind(open_rt: OpenRuntime, outcome: str) -> None:
    app = actors.App()

    @app.task("finish")
    async def finish(ctx: actors.TaskContext, request: actors.Request) -> str:
        if request.input == "failed":
            raise RuntimeError("as asked")
        if request.input == "cancelled":
            await trio.sleep_forever()
        return "done"

    async with open_rt(app) as rt:
        info = await rt.submit("finish", outcome)
        if outcome == "cancelled":
            await rt.wait(info.id, states=[S.RUNNING])
            await rt.cancel(info.id)
        assert (await rt.wait(info.id)).state is S(outcome)
        await trio.testing.wait_all_tasks_blocked()
        assert rt.statistics()["actors"] == 0


# -- instrumentation seams ------------------------------------------------------


def two_step_app() -> actors.App:
    app = actors.App()

    async def body(name: str) -> str:
        return name

    @app.task("two")
    async def two(ctx: actors.TaskContext, request: actors.Request) -> list[str]:
        return [await ctx.step("a", body, "a"), await ctx.step("b", body, "b")]

    return app


async def test_step_observers_see_every_point_of_every_step_that_runs_until_removed(
    autojump_clock: trio.abc.Clock,
) -> None:
    seen: list[tuple[str, str, str, int]] = []

    async def observer(point: str, task_id: str, step: str, index: int) -> None:
        seen.append((point, task_id, step, index))

    async with actors.open_runtime(two_step_app(), node_id="n") as rt:
        remove = rt.observe_steps(observer)
        await rt.result((await rt.submit("two", task_id="t1")).id)
        remove()
        remove()  # (a no-op once removed)
        await rt.result((await rt.submit("two", task_id="t2")).id)
    points = ("before_step", "after_body", "after_store")
    assert seen == [(p, "t1", step, i) for step, i in (("a", 0), ("b", 1)) for p in points]


async def test_abort_stops_at_once_keeps_the_leases_and_closes_the_api(
    autojump_clock: trio.abc.Clock,
) -> None:
    gate = trio.Event()
    app = actors.App()

    @app.task("held")
    async def held(ctx: actors.TaskContext, request: actors.Request) -> None:
        await ctx.step("wait", gate.wait)

    async with storage_open("memory://") as store:
        async with actors.open_runtime(app, store, node_id="n") as rt:
            await rt.submit("held", task_id="t1")
            await trio.testing.wait_all_tasks_blocked()
            rt.abort()
            rt.abort()  # (a no-op once aborted)
            assert rt.aborted
            with pytest.raises(actors.RuntimeClosedError):
                await rt.get("t1")
        record = await store.get_task("t1")
        assert record is not None
        assert (record.state, record.owner) == (S.RUNNING, "n")


async def test_pause_lease_renewal_lets_the_leases_run_out_until_it_ends(
    autojump_clock: trio.abc.Clock,
) -> None:
    gate = trio.Event()
    app = actors.App()

    @app.task("held")
    async def held(ctx: actors.TaskContext, request: actors.Request) -> None:
        await ctx.step("wait", gate.wait)

    async with (
        storage_open("memory://") as store,
        actors.open_runtime(app, store, node_id="n", lease=10) as rt,
    ):
        await rt.submit("held", task_id="t1")
        with rt.pause_lease_renewal(), rt.pause_lease_renewal():
            await trio.sleep(30)
            record = await store.get_task("t1")
            assert record is not None and record.lease_expires < store.clock.now()
        await trio.sleep(10)
        record = await store.get_task("t1")
        assert record is not None and record.lease_expires > store.clock.now()
        assert rt.has_actor("t1")
        gate.set()
