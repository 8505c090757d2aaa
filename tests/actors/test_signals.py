"""Signals (PAUSE, RESUME, STOP) and Cancel, through the public runtime API.

DESIGN.md "Task lifecycle": the table, and the details that users of the
seeds were bitten by. Every test counts how often each step body ran, and
orders things with events set inside step bodies, ``rt.wait(states=...)``
and ``wait_all_tasks_blocked()``, never with time.
"""

from __future__ import annotations

import itertools
import math
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
    ``cancelled`` on its way out. With ``shield`` the wait is shielded, so a
    cancelled run still returns its value once released (a late success).
    """

    def __init__(
        self, ran: Counter[str], name: str, *, block_runs: int = 0, shield: bool = False
    ) -> None:
        self.ran = ran
        self.name = name
        self.block_runs = block_runs
        self.shield = shield
        self.entered = trio.Event()
        self.release = trio.Event()
        self.cancelled = trio.Event()

    async def __call__(self) -> str:
        self.ran[self.name] += 1
        if self.ran[self.name] <= self.block_runs:
            self.entered.set()
            if self.shield:
                with trio.CancelScope(shield=True):
                    await self.release.wait()
                if trio.current_effective_deadline() == -math.inf:
                    self.cancelled.set()  # cancelled while shielded: this is a late success
            else:
                finished = False
                try:
                    await self.release.wait()
                    finished = True
                finally:
                    if not finished:
                        self.cancelled.set()
        return self.name.upper()


def steps_app(
    ran: Counter[str], *bodies: StepBody, name: str = "job", **options: Any
) -> actors.App:
    """An app whose task ``name`` runs one step per body, in order, and returns their results."""
    app = actors.App()

    @app.task(name, **options)
    async def job(ctx: actors.TaskContext, request: actors.Request) -> list[Any]:
        return [await ctx.step(body.name, body) for body in bodies]

    return app


async def wait_no_actors(rt: actors.Runtime) -> None:
    """Wait until the runtime holds no live actor.

    Polls at quiescence: with a thread-backed store, every task may be
    blocked while the store's worker thread still finishes a write.
    """
    for _ in range(100_000):
        await trio.testing.wait_all_tasks_blocked()
        if rt.statistics()["actors"] == 0:
            return
    raise AssertionError(f"live actors left: {rt.statistics()['actors']}")


def kinds(history: list[actors.TaskEvent]) -> list[str]:
    return [event.kind for event in history]


def states_entered(history: list[actors.TaskEvent]) -> list[str]:
    return [event.data["to"] for event in history if event.kind == "state"]


async def pause_after_first_step(
    rt: actors.Runtime, first: StepBody, task_id: str
) -> actors.TaskInfo:
    """PAUSE while ``first`` blocks, then let it finish; return the paused info."""
    await first.entered.wait()
    await rt.signal(task_id, Signal.PAUSE)
    first.release.set()
    return await rt.wait(task_id, states=[S.PAUSED])


# --------------------------------------------------------------------------
# PAUSE / RESUME
# --------------------------------------------------------------------------


async def test_pause_takes_effect_at_the_next_step_boundary(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    ran: Counter[str] = Counter()
    a = StepBody(ran, "a", block_runs=1)
    b, c = StepBody(ran, "b"), StepBody(ran, "c")
    async with open_rt(steps_app(ran, a, b, c)) as rt:
        info = await rt.submit("job")
        await a.entered.wait()
        await rt.signal(info.id, Signal.PAUSE)
        # The step in progress is not interrupted by PAUSE.
        assert (await rt.get(info.id)).state is S.RUNNING
        a.release.set()
        paused = await rt.wait(info.id, states=[S.PAUSED])
        assert paused.state is S.PAUSED
        await trio.testing.wait_all_tasks_blocked()
        assert ran == Counter({"a": 1})
        assert not a.cancelled.is_set()
        history = await rt.history(info.id)
        finished = [e.data["name"] for e in history if e.kind == "step_completed"]
        started = [e.data["name"] for e in history if e.kind == "step_started"]
        assert finished == ["a"]
        assert started == ["a"]
        assert states_entered(history)[-1] == "paused"


async def test_resume_continues_and_every_step_body_runs_exactly_once(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    ran: Counter[str] = Counter()
    a = StepBody(ran, "a", block_runs=1)
    b, c = StepBody(ran, "b"), StepBody(ran, "c")
    async with open_rt(steps_app(ran, a, b, c)) as rt:
        info = await rt.submit("job")
        await pause_after_first_step(rt, a, info.id)
        resumed = await rt.signal(info.id, Signal.RESUME)
        assert resumed.state is S.RUNNING
        assert await rt.result(info.id) == ["A", "B", "C"]
        history = await rt.history(info.id)
    assert ran == Counter({"a": 1, "b": 1, "c": 1})
    assert states_entered(history) == ["pending", "running", "paused", "running", "completed"]


async def test_pause_of_a_paused_task_is_a_noop(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    ran: Counter[str] = Counter()
    a = StepBody(ran, "a", block_runs=1)
    async with open_rt(steps_app(ran, a, StepBody(ran, "b"))) as rt:
        info = await rt.submit("job")
        await pause_after_first_step(rt, a, info.id)
        before = await rt.history(info.id)
        again = await rt.signal(info.id, Signal.PAUSE)
        assert again.state is S.PAUSED
        await trio.testing.wait_all_tasks_blocked()
        assert (await rt.get(info.id)).state is S.PAUSED
        assert await rt.history(info.id) == before
        assert ran == Counter({"a": 1})


async def test_resume_of_a_running_task_is_an_invalid_transition(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    ran: Counter[str] = Counter()
    a = StepBody(ran, "a", block_runs=1)
    async with open_rt(steps_app(ran, a)) as rt:
        info = await rt.submit("job")
        await a.entered.wait()
        await rt.wait(info.id, states=[S.RUNNING])  # its START is written
        before = await rt.history(info.id)
        with pytest.raises(actors.InvalidTransition):
            await rt.signal(info.id, Signal.RESUME)
        assert (await rt.get(info.id)).state is S.RUNNING
        assert await rt.history(info.id) == before
        a.release.set()
        assert await rt.result(info.id) == ["A"]
    assert ran == Counter({"a": 1})


@pytest.mark.parametrize("signal", [Signal.RESUME, Signal.PAUSE, Signal.STOP])
async def test_signal_to_a_completed_task_is_an_invalid_transition(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock, signal: Signal
) -> None:
    ran: Counter[str] = Counter()
    async with open_rt(steps_app(ran, StepBody(ran, "a"))) as rt:
        info = await rt.submit("job")
        assert await rt.result(info.id) == ["A"]
        before = await rt.history(info.id)
        with pytest.raises(actors.InvalidTransition):
            await rt.signal(info.id, signal)
        assert (await rt.get(info.id)).state is S.COMPLETED
        assert await rt.history(info.id) == before
        assert await rt.result(info.id) == ["A"]
    assert ran == Counter({"a": 1})


def two_tasks_app(ran: Counter[str], first: StepBody, second: StepBody) -> actors.App:
    """Tasks "first" and "second", one step each (for the max_running=1 trick)."""
    app = actors.App()

    @app.task("first")
    async def run_first(ctx: actors.TaskContext, request: actors.Request) -> Any:
        return await ctx.step(first.name, first)

    @app.task("second")
    async def run_second(ctx: actors.TaskContext, request: actors.Request) -> Any:
        return await ctx.step(second.name, second)

    return app


async def test_pause_of_a_pending_task_holds_its_body_until_resume(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    ran: Counter[str] = Counter()
    first = StepBody(ran, "first", block_runs=1)
    second = StepBody(ran, "second")
    async with open_rt(two_tasks_app(ran, first, second), max_running=1) as rt:
        one = await rt.submit("first")
        await first.entered.wait()
        two = await rt.submit("second")
        await trio.testing.wait_all_tasks_blocked()
        assert (await rt.get(two.id)).state is S.PENDING
        paused = await rt.signal(two.id, Signal.PAUSE)
        assert paused.state is S.PAUSED
        first.release.set()
        assert await rt.result(one.id) == "FIRST"
        await wait_no_actors(rt)
        assert (await rt.get(two.id)).state is S.PAUSED
        assert ran["second"] == 0
        await rt.signal(two.id, Signal.RESUME)
        assert await rt.result(two.id) == "SECOND"
    assert ran == Counter({"first": 1, "second": 1})


# --------------------------------------------------------------------------
# STOP
# --------------------------------------------------------------------------


async def test_stop_aborts_the_current_request_and_the_task_stays_open(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    ran: Counter[str] = Counter()
    a, b = StepBody(ran, "a"), StepBody(ran, "b", block_runs=1)
    async with open_rt(steps_app(ran, a, b)) as rt:
        info = await rt.submit("job")
        await b.entered.wait()
        stopped = await rt.signal(info.id, Signal.STOP)
        assert stopped.state is S.STOPPED
        await trio.testing.wait_all_tasks_blocked()
        assert b.cancelled.is_set()
        after = await rt.get(info.id)
        assert after.state is S.STOPPED
        assert not after.terminal
        await wait_no_actors(rt)
        assert (await rt.get(info.id)).state is S.STOPPED
    assert ran == Counter({"a": 1, "b": 1})


async def test_request_after_stop_runs_the_handler_again_with_finished_steps_replayed(
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
        await rt.signal(info.id, Signal.STOP)
        await rt.send(info.id, "second")
        assert await rt.result(info.id) == ["second", "A", "B"]
    assert seen == ["first", "second"]
    assert ran == Counter({"a": 1, "b": 2})
    assert b.cancelled.is_set()


# --------------------------------------------------------------------------
# Cancel
# --------------------------------------------------------------------------


async def test_cancel_interrupts_the_running_step_and_is_recorded_before_it_returns(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    ran: Counter[str] = Counter()
    a = StepBody(ran, "a", block_runs=1)
    async with open_rt(steps_app(ran, a, StepBody(ran, "b"))) as rt:
        info = await rt.submit("job")
        await a.entered.wait()
        cancelled = await rt.cancel(info.id)
        assert cancelled.state is S.CANCELLED
        # Already durable when cancel returns...
        assert (await rt.get(info.id)).state is S.CANCELLED
        last = (await rt.history(info.id))[-1]
        assert last.kind == "state"
        assert last.data["to"] == "cancelled"
        # ...and the step was interrupted inside its body, not at its end.
        assert a.cancelled.is_set()
        with pytest.raises(actors.TaskCancelled):
            await rt.result(info.id)
    assert ran == Counter({"a": 1})


async def test_cancel_is_never_retried_as_a_failure(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    ran: Counter[str] = Counter()
    a = StepBody(ran, "a", block_runs=1)
    async with open_rt(steps_app(ran, a, retries=3)) as rt:
        info = await rt.submit("job")
        await a.entered.wait()
        await rt.cancel(info.id)
        await wait_no_actors(rt)
        history = await rt.history(info.id)
        assert (await rt.get(info.id)).state is S.CANCELLED
    assert "retry" not in kinds(history)
    assert "step_failed" not in kinds(history)
    assert states_entered(history) == ["pending", "running", "cancelled"]
    assert ran == Counter({"a": 1})


async def test_cancel_wins_over_a_late_success(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    ran: Counter[str] = Counter()
    late = StepBody(ran, "late", block_runs=1, shield=True)
    async with open_rt(steps_app(ran, late)) as rt:
        info = await rt.submit("job")
        await late.entered.wait()
        cancelled = await rt.cancel(info.id)
        assert cancelled.state is S.CANCELLED
        late.release.set()  # the shielded body now returns its value
        await wait_no_actors(rt)
        assert late.cancelled.is_set()
        assert (await rt.get(info.id)).state is S.CANCELLED
        with pytest.raises(actors.TaskCancelled):
            await rt.result(info.id)
        history = await rt.history(info.id)
    assert "step_completed" not in kinds(history)
    assert states_entered(history)[-1] == "cancelled"
    assert "completed" not in states_entered(history)
    assert ran == Counter({"late": 1})


async def test_cancel_of_a_pending_task_means_its_body_never_runs(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    ran: Counter[str] = Counter()
    first = StepBody(ran, "first", block_runs=1)
    second = StepBody(ran, "second")
    async with open_rt(two_tasks_app(ran, first, second), max_running=1) as rt:
        one = await rt.submit("first")
        await first.entered.wait()
        two = await rt.submit("second")
        assert (await rt.get(two.id)).state is S.PENDING
        cancelled = await rt.cancel(two.id)
        assert cancelled.state is S.CANCELLED
        first.release.set()
        assert await rt.result(one.id) == "FIRST"
        await wait_no_actors(rt)
        with pytest.raises(actors.TaskCancelled):
            await rt.result(two.id)
        history = await rt.history(two.id)
    assert ran == Counter({"first": 1})
    assert states_entered(history) == ["pending", "cancelled"]


async def test_cancel_of_a_cancelled_task_is_a_noop(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    ran: Counter[str] = Counter()
    a = StepBody(ran, "a", block_runs=1)
    async with open_rt(steps_app(ran, a)) as rt:
        info = await rt.submit("job")
        await a.entered.wait()
        await rt.cancel(info.id)
        await wait_no_actors(rt)
        before = await rt.history(info.id)
        again = await rt.cancel(info.id)
        assert again.state is S.CANCELLED
        assert again.id == info.id
        assert await rt.history(info.id) == before
        assert (await rt.get(info.id)).state is S.CANCELLED
    assert ran == Counter({"a": 1})


@pytest.mark.parametrize("outcome", ["completed", "failed"])
async def test_cancel_of_a_finished_task_raises_not_cancelable(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock, outcome: str
) -> None:
    ran: Counter[str] = Counter()
    app = actors.App()

    async def body() -> str:
        ran["body"] += 1
        if outcome == "failed":
            raise ValueError("boom")
        return "done"

    @app.task("job")
    async def job(ctx: actors.TaskContext, request: actors.Request) -> Any:
        return await ctx.step("body", body)

    async with open_rt(app) as rt:
        info = await rt.submit("job")
        finished = await rt.wait(info.id)
        assert finished.state is S(outcome)
        await wait_no_actors(rt)
        before = await rt.history(info.id)
        with pytest.raises(actors.NotCancelable) as raised:
            await rt.cancel(info.id)
        assert isinstance(raised.value, actors.InvalidTransition)
        assert (await rt.get(info.id)).state is S(outcome)
        assert await rt.history(info.id) == before
        if outcome == "completed":
            assert await rt.result(info.id) == "done"
        else:
            with pytest.raises(actors.TaskFailed):
                await rt.result(info.id)
    assert ran == Counter({"body": 1})


async def test_cancel_reason_is_recorded_in_the_state_event(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    ran: Counter[str] = Counter()
    a = StepBody(ran, "a", block_runs=1)
    async with open_rt(steps_app(ran, a)) as rt:
        info = await rt.submit("job")
        await a.entered.wait()
        await rt.cancel(info.id, reason="the user changed their mind")
        history = await rt.history(info.id)
    [event] = [e for e in history if e.kind == "state" and e.data["to"] == "cancelled"]
    assert event.data["reason"] == "the user changed their mind"


async def test_cancelling_a_parent_cancels_its_children_inside_their_steps(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    ran: Counter[str] = Counter()
    child_body = StepBody(ran, "child", block_runs=1)
    parent_body = StepBody(ran, "parent", block_runs=1)
    app = actors.App()

    @app.task("child")
    async def child(ctx: actors.TaskContext, request: actors.Request) -> Any:
        return await ctx.step("work", child_body)

    @app.task("parent")
    async def parent(ctx: actors.TaskContext, request: actors.Request) -> Any:
        await ctx.spawn("child")
        return await ctx.step("wait", parent_body)

    async with open_rt(app) as rt:
        info = await rt.submit("parent")
        await parent_body.entered.wait()
        await child_body.entered.wait()
        [kid] = await rt.list(parent_id=info.id)
        await rt.wait(kid.id, states=[S.RUNNING])
        assert (await rt.get(kid.id)).state is S.RUNNING
        await rt.cancel(info.id)
        assert (await rt.wait(kid.id)).state is S.CANCELLED
        assert child_body.cancelled.is_set()
        assert parent_body.cancelled.is_set()
        with pytest.raises(actors.TaskCancelled):
            await rt.result(kid.id)
        await wait_no_actors(rt)
    assert ran == Counter({"child": 1, "parent": 1})


# --------------------------------------------------------------------------
# Live actors
# --------------------------------------------------------------------------


async def test_a_finished_task_leaves_no_actor_behind(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    ran: Counter[str] = Counter()
    async with open_rt(steps_app(ran, StepBody(ran, "a"))) as rt:
        info = await rt.submit("job")
        assert await rt.result(info.id) == ["A"]
        await wait_no_actors(rt)
        assert rt.statistics()["actors"] == 0


async def test_a_paused_task_has_no_live_actor_and_resume_revives_it(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    ran: Counter[str] = Counter()
    a = StepBody(ran, "a", block_runs=1)
    async with open_rt(steps_app(ran, a, StepBody(ran, "b"))) as rt:
        info = await rt.submit("job")
        await pause_after_first_step(rt, a, info.id)
        await wait_no_actors(rt)
        assert (await rt.get(info.id)).state is S.PAUSED
        await rt.signal(info.id, Signal.RESUME)
        assert await rt.result(info.id) == ["A", "B"]
    assert ran == Counter({"a": 1, "b": 1})


async def test_an_input_required_task_has_no_live_actor_and_a_request_revives_it(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    ran: Counter[str] = Counter()
    a, b = StepBody(ran, "a"), StepBody(ran, "b")
    app = actors.App()

    @app.task("job")
    async def job(ctx: actors.TaskContext, request: actors.Request) -> list[Any]:
        first = await ctx.step("a", a)
        answer = await ctx.ask({"question": "go on?"})
        return [first, answer, await ctx.step("b", b)]

    async with open_rt(app) as rt:
        info = await rt.submit("job")
        await rt.wait(info.id, states=[S.INPUT_REQUIRED])
        await wait_no_actors(rt)
        assert (await rt.get(info.id)).state is S.INPUT_REQUIRED
        await rt.send(info.id, "yes")
        assert await rt.result(info.id) == ["A", "yes", "B"]
    assert ran == Counter({"a": 1, "b": 1})


# --------------------------------------------------------------------------
# Callers of a stopping actor
# --------------------------------------------------------------------------


async def test_sends_pending_when_the_runtime_closes_fail_with_an_actors_error(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    """Each sender is always in the middle of an rt.send, so whenever the
    runtime closes, some sends are pending at each step of their delivery
    (before, in, or being handled by the actor's mailbox). Every one of them
    must end with a runtime error, none may hang."""
    ran: Counter[str] = Counter()
    tasks = 8
    a = StepBody(ran, "a", block_runs=tasks)
    outcomes: dict[str, BaseException] = {}

    async def keep_sending(
        rt: actors.Runtime, task_id: str, lag: int, sending: trio.Event, done: trio.Event
    ) -> None:
        for _ in range(lag):  # senders out of step with each other
            await trio.lowlevel.checkpoint()
        try:
            for count in itertools.count():
                if count == 3:
                    sending.set()
                await rt.send(task_id, count)
        except actors.ActorsError as exc:
            outcomes[task_id] = exc
        finally:
            done.set()

    async with trio.open_nursery() as nursery:
        dones: list[trio.Event] = []
        async with open_rt(steps_app(ran, a)) as rt:
            for lag in range(tasks):
                info = await rt.submit("job")
                sending, done = trio.Event(), trio.Event()
                dones.append(done)
                nursery.start_soon(keep_sending, rt, info.id, lag, sending, done)
                await sending.wait()
        with trio.fail_after(60):
            for done in dones:
                await done.wait()
    assert len(outcomes) == tasks
    for error in outcomes.values():
        assert isinstance(error, actors.RuntimeClosedError | actors.ActorStoppedError)


async def test_a_result_pending_when_the_runtime_closes_fails_with_an_actors_error(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    """Nothing will ever finish the task in this runtime once it closed: a
    caller waiting for its result must be told, not left waiting forever."""
    ran: Counter[str] = Counter()
    a = StepBody(ran, "a", block_runs=1)
    outcomes: list[BaseException] = []
    done = trio.Event()

    async def wait_for_result(rt: actors.Runtime, task_id: str) -> None:
        try:
            await rt.result(task_id)
        except actors.ActorsError as exc:
            outcomes.append(exc)
        finally:
            done.set()

    async with trio.open_nursery() as nursery:
        async with open_rt(steps_app(ran, a)) as rt:
            info = await rt.submit("job")
            await a.entered.wait()
            nursery.start_soon(wait_for_result, rt, info.id)
            while rt.statistics()["state_watches"] == 0:
                await trio.testing.wait_all_tasks_blocked()
            await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(60):
            await done.wait()
    assert len(outcomes) == 1
    assert isinstance(outcomes[0], actors.RuntimeClosedError)
    assert ran == Counter({"a": 1})
