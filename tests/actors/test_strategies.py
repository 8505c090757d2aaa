"""Multitask strategies: what a Request (``rt.send``) does to a running task.

DESIGN.md "Task lifecycle", row "Request while running": enqueue (the
default), reject, interrupt and rollback; a strategy given at submit
overrides the handler's default. Every test counts how often each step body
ran, and orders things with events set inside step bodies, never with time.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import trio
import trio.testing

import actors
from actors import Signal, TaskState

from .conftest import OpenRuntime

S = TaskState


class StepBody:
    """A step body that counts its runs in ``ran[name]`` and returns ``name.upper()``.

    Its first ``block_runs`` runs set ``entered`` and wait for ``release``
    (never set unless the test sets it); a run cancelled while waiting sets
    ``cancelled`` on its way out.
    """

    def __init__(self, ran: Counter[str], name: str, *, block_runs: int = 0) -> None:
        self.ran = ran
        self.name = name
        self.block_runs = block_runs
        self.entered = trio.Event()
        self.release = trio.Event()
        self.cancelled = trio.Event()

    async def __call__(self) -> str:
        self.ran[self.name] += 1
        if self.ran[self.name] <= self.block_runs:
            self.entered.set()
            finished = False
            try:
                await self.release.wait()
                finished = True
            finally:
                if not finished:
                    self.cancelled.set()
        return self.name.upper()


def kinds(history: list[actors.TaskEvent]) -> list[str]:
    return [event.kind for event in history]


def states_entered(history: list[actors.TaskEvent]) -> list[str]:
    return [event.data["to"] for event in history if event.kind == "state"]


def step_then_ask_app(
    ran: Counter[str], first: StepBody, *, strategy: str | None = None
) -> actors.App:
    """Task "job": one step, then ``ctx.ask``; returns [step result, answer]."""
    app = actors.App()
    options: dict[str, Any] = {} if strategy is None else {"strategy": strategy}

    @app.task("job", **options)
    async def job(ctx: actors.TaskContext, request: actors.Request) -> list[Any]:
        done = await ctx.step(first.name, first)
        return [done, await ctx.ask({"question": "and then?"})]

    return app


# --------------------------------------------------------------------------
# enqueue (the default)
# --------------------------------------------------------------------------


async def test_enqueued_request_answers_the_next_ask_without_input_required(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    ran: Counter[str] = Counter()
    a = StepBody(ran, "a", block_runs=1)
    async with open_rt(step_then_ask_app(ran, a)) as rt:
        info = await rt.submit("job")
        assert info.strategy == "enqueue"
        await a.entered.wait()
        queued = await rt.send(info.id, "the answer")
        assert queued.state is S.RUNNING
        assert "request_queued" in kinds(await rt.history(info.id))
        a.release.set()
        assert await rt.result(info.id) == ["A", "the answer"]
        history = await rt.history(info.id)
    assert "input_required" not in states_entered(history)
    assert states_entered(history) == ["pending", "running", "completed"]
    assert "request_dropped" not in kinds(history)
    assert ran == Counter({"a": 1})


async def test_enqueued_request_starts_the_next_run_after_stop(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    ran: Counter[str] = Counter()
    a, b = StepBody(ran, "a"), StepBody(ran, "b", block_runs=1)
    seen: list[Any] = []
    app = actors.App()

    @app.task("job")
    async def job(ctx: actors.TaskContext, request: actors.Request) -> list[Any]:
        seen.append(request.input)
        return [request.input, await ctx.step("a", a), await ctx.step("b", b)]

    async with open_rt(app) as rt:
        info = await rt.submit("job", "first")
        await b.entered.wait()
        queued = await rt.send(info.id, "second")
        assert queued.state is S.RUNNING
        assert seen == ["first"]
        await rt.signal(info.id, Signal.STOP)
        assert await rt.result(info.id) == ["second", "A", "B"]
        history = await rt.history(info.id)
    assert seen == ["first", "second"]
    assert ran == Counter({"a": 1, "b": 2})
    assert b.cancelled.is_set()
    assert states_entered(history) == ["pending", "running", "stopped", "running", "completed"]
    assert "request_dropped" not in kinds(history)


async def test_enqueued_request_is_dropped_when_the_task_completes_first(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    ran: Counter[str] = Counter()
    a = StepBody(ran, "a", block_runs=1)
    seen: list[Any] = []
    app = actors.App()

    @app.task("job")
    async def job(ctx: actors.TaskContext, request: actors.Request) -> Any:
        seen.append(request.input)
        return await ctx.step("a", a)

    async with open_rt(app) as rt:
        info = await rt.submit("job", "only")
        await a.entered.wait()
        await rt.send(info.id, "too late")
        a.release.set()
        assert await rt.result(info.id) == "A"
        history = await rt.history(info.id)
    assert kinds(history).count("request_dropped") == 1
    assert kinds(history).index("request_dropped") < len(history) - 1
    assert history[-1].data["to"] == "completed"
    assert seen == ["only"]
    assert ran == Counter({"a": 1})


# --------------------------------------------------------------------------
# reject
# --------------------------------------------------------------------------


async def test_reject_refuses_a_request_and_changes_nothing(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    ran: Counter[str] = Counter()
    a = StepBody(ran, "a", block_runs=1)
    async with open_rt(step_then_ask_app(ran, a, strategy="reject")) as rt:
        info = await rt.submit("job")
        await a.entered.wait()
        await rt.wait(info.id, states=[S.RUNNING])  # its START is written
        before = await rt.history(info.id)
        with pytest.raises(actors.RequestRejected) as raised:
            await rt.send(info.id, "refused")
        assert isinstance(raised.value, actors.InvalidTransition)
        assert (await rt.get(info.id)).state is S.RUNNING
        assert await rt.history(info.id) == before
        a.release.set()
        # The refused input is nowhere: the ask waits for a Request of its own.
        waiting = await rt.wait(info.id, states=[S.INPUT_REQUIRED])
        assert waiting.state is S.INPUT_REQUIRED
        await rt.send(info.id, "accepted")
        assert await rt.result(info.id) == ["A", "accepted"]
    assert ran == Counter({"a": 1})


async def test_strategy_given_at_submit_overrides_the_task_default(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    ran: Counter[str] = Counter()
    a = StepBody(ran, "a", block_runs=1)
    async with open_rt(step_then_ask_app(ran, a)) as rt:
        info = await rt.submit("job", strategy="reject")
        assert info.strategy == "reject"
        await a.entered.wait()
        await rt.wait(info.id, states=[S.RUNNING])  # its START is written
        before = await rt.history(info.id)
        with pytest.raises(actors.RequestRejected):
            await rt.send(info.id, "refused")
        assert (await rt.get(info.id)).state is S.RUNNING
        assert await rt.history(info.id) == before


async def test_enqueue_given_at_submit_overrides_a_reject_default(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    ran: Counter[str] = Counter()
    a = StepBody(ran, "a", block_runs=1)
    async with open_rt(step_then_ask_app(ran, a, strategy="reject")) as rt:
        info = await rt.submit("job", strategy="enqueue")
        await a.entered.wait()
        await rt.send(info.id, "queued")
        a.release.set()
        assert await rt.result(info.id) == ["A", "queued"]
    assert ran == Counter({"a": 1})


# --------------------------------------------------------------------------
# interrupt and rollback
# --------------------------------------------------------------------------


async def test_interrupt_cancels_the_current_step_and_reruns_with_the_new_input(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    ran: Counter[str] = Counter()
    a, b = StepBody(ran, "a"), StepBody(ran, "b", block_runs=1)
    seen: list[Any] = []
    app = actors.App()

    @app.task("job", strategy="interrupt")
    async def job(ctx: actors.TaskContext, request: actors.Request) -> list[Any]:
        seen.append(request.input)
        return [request.input, await ctx.step("a", a), await ctx.step("b", b)]

    async with open_rt(app) as rt:
        info = await rt.submit("job", "first")
        await b.entered.wait()
        interrupted = await rt.send(info.id, "second")
        assert interrupted.state is S.RUNNING
        assert await rt.result(info.id) == ["second", "A", "B"]
        history = await rt.history(info.id)
    assert b.cancelled.is_set()
    assert seen == ["first", "second"]
    # "a" was recorded before the interrupt: replayed, not re-run.
    assert ran == Counter({"a": 1, "b": 2})
    assert states_entered(history) == ["pending", "running", "stopped", "running", "completed"]


class ThreeRuns:
    """Run 1 records A then is STOPped inside B; a Request starts run 2, which
    records B and blocks inside C; a second Request arrives while run 2 runs."""

    def __init__(self) -> None:
        self.ran: Counter[str] = Counter()
        self.a = StepBody(self.ran, "a")
        self.b = StepBody(self.ran, "b", block_runs=1)
        self.c = StepBody(self.ran, "c", block_runs=1)
        self.seen: list[Any] = []

    def app(self, strategy: str) -> actors.App:
        app = actors.App()

        @app.task("job", strategy=strategy)
        async def job(ctx: actors.TaskContext, request: actors.Request) -> list[Any]:
            self.seen.append(request.input)
            out = [request.input]
            for body in (self.a, self.b, self.c):
                out.append(await ctx.step(body.name, body))
            return out

        return app

    async def drive(self, rt: actors.Runtime) -> Any:
        info = await rt.submit("job", "one")
        await self.b.entered.wait()
        assert (await rt.signal(info.id, Signal.STOP)).state is S.STOPPED
        await rt.send(info.id, "two")
        await self.c.entered.wait()
        assert self.ran == Counter({"a": 1, "b": 2, "c": 1})
        await rt.send(info.id, "three")
        return await rt.result(info.id)


async def test_interrupt_keeps_the_steps_the_stopped_run_recorded(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    scenario = ThreeRuns()
    async with open_rt(scenario.app("interrupt")) as rt:
        assert await scenario.drive(rt) == ["three", "A", "B", "C"]
    assert scenario.seen == ["one", "two", "three"]
    assert scenario.c.cancelled.is_set()
    # b recorded by run 2 is replayed in run 3.
    assert scenario.ran == Counter({"a": 1, "b": 2, "c": 2})


async def test_rollback_reruns_the_steps_the_stopped_run_recorded(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    scenario = ThreeRuns()
    async with open_rt(scenario.app("rollback")) as rt:
        assert await scenario.drive(rt) == ["three", "A", "B", "C"]
    assert scenario.seen == ["one", "two", "three"]
    assert scenario.c.cancelled.is_set()
    # a (run 1) stays replayed; b (recorded by run 2, rolled back) runs again.
    assert scenario.ran == Counter({"a": 1, "b": 3, "c": 2})


async def test_rollback_history_shows_the_stop_and_the_new_run(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    scenario = ThreeRuns()
    async with open_rt(scenario.app("rollback")) as rt:
        await scenario.drive(rt)
        [info] = await rt.list()
        history = await rt.history(info.id)
    assert info.run == 3
    assert states_entered(history) == [
        "pending",
        "running",
        "stopped",
        "running",
        "stopped",
        "running",
        "completed",
    ]
    assert [e.seq for e in history] == list(range(1, len(history) + 1))
    completed = [e.data["name"] for e in history if e.kind == "step_completed"]
    assert completed == ["a", "b", "b", "c"]


async def test_request_received_names_the_run_the_request_feeds(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    # Interrupts start runs 2 and 3: each Request is received for its new run.
    scenario = ThreeRuns()
    async with open_rt(scenario.app("interrupt")) as rt:
        await scenario.drive(rt)
        [info] = await rt.list()
        history = await rt.history(info.id)
    received = [e.data["run"] for e in history if e.kind == "request_received"]
    started = [e.data["run"] for e in history if e.kind == "state" and "run" in e.data]
    assert received == [2, 3]
    assert started == [1, 2, 3]


async def test_an_answer_is_received_for_the_run_that_asked(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    ran: Counter[str] = Counter()
    async with open_rt(step_then_ask_app(ran, StepBody(ran, "a"))) as rt:
        info = await rt.submit("job")
        await rt.wait(info.id, states=[S.INPUT_REQUIRED])
        await rt.send(info.id, "yes")
        assert await rt.result(info.id) == ["A", "yes"]
        history = await rt.history(info.id)
    assert [e.data["run"] for e in history if e.kind == "request_received"] == [1]
