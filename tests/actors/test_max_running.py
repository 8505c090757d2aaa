"""max_running: at most N handler runs at once; a task waiting for a slot has no actor.

Issue #5: ten thousand tasks submitted at once must not cost ten thousand
actors. Ordered with events set in handlers and ``wait_all_tasks_blocked()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

import actors
from actors import Signal, TaskState

from .conftest import OpenRuntime
from .test_recovery import reopenable

S = TaskState


class Gates:
    """A task "job" whose run waits for the gate of its input, counting runs."""

    def __init__(self) -> None:
        self.gates: dict[Any, trio.Event] = {}
        self.started: list[Any] = []
        self.running = 0
        self.most = 0
        self.app = actors.App()

        @self.app.task("job")
        async def job(ctx: actors.TaskContext, request: actors.Request) -> Any:
            self.started.append(request.input)
            self.running += 1
            self.most = max(self.most, self.running)
            try:
                await self.gate(request.input).wait()
            finally:
                self.running -= 1
            return await ctx.step("done", _echo, request.input)

    def gate(self, key: Any) -> trio.Event:
        return self.gates.setdefault(key, trio.Event())


async def _echo(value: Any) -> Any:
    return value


async def until(condition: Callable[[], bool]) -> None:
    """Wait until condition holds, checked at quiescence.

    Polled, never timed: with a thread-backed store every trio task may be
    blocked while the store's worker thread still finishes a write.
    """
    for _ in range(100_000):
        await trio.testing.wait_all_tasks_blocked()
        if condition():
            return
        await trio.lowlevel.checkpoint()
    raise AssertionError("the condition never held")


async def test_tasks_beyond_the_bound_wait_pending_with_no_actor_and_start_oldest_first(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    jobs = Gates()
    async with open_rt(jobs.app, max_running=2) as rt:
        infos = [await rt.submit("job", i) for i in range(6)]
        await until(lambda: len(jobs.started) == 2)
        assert jobs.started == [0, 1]
        stats = rt.statistics()
        assert (stats["actors"], stats["waiting"]) == (2, 4)
        states = [(await rt.get(info.id)).state for info in infos]
        assert states == [S.RUNNING] * 2 + [S.PENDING] * 4
        # Each freed slot goes to the oldest waiting task, whichever run ended.
        for released, started in zip((1, 0, 3, 2), (3, 4, 5, 6), strict=True):
            jobs.gate(released).set()
            await until(lambda n=started: len(jobs.started) == n)
        jobs.gate(4).set()
        jobs.gate(5).set()
        assert [await rt.result(info.id) for info in infos] == list(range(6))
        assert jobs.started == [0, 1, 2, 3, 4, 5]
        assert jobs.most == 2
        assert (rt.statistics()["actors"], rt.statistics()["waiting"]) == (0, 0)


async def test_cancel_of_a_waiting_task_never_runs_it_and_takes_no_slot(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    jobs = Gates()
    async with open_rt(jobs.app, max_running=1) as rt:
        first = await rt.submit("job", "first")
        second = await rt.submit("job", "second")
        third = await rt.submit("job", "third")
        cancelled = await rt.cancel(second.id, reason="not needed")
        assert cancelled.state is S.CANCELLED
        assert rt.statistics()["waiting"] == 1
        jobs.gate("first").set()
        jobs.gate("third").set()
        assert await rt.result(first.id) == "first"
        assert await rt.result(third.id) == "third"
        kinds = [(e.kind, e.data.get("to")) for e in await rt.history(second.id)]
    assert kinds == [("state", "pending"), ("state", "cancelled")]
    assert jobs.started == ["first", "third"]


async def first_and_parked_second(rt: actors.Runtime) -> tuple[actors.TaskInfo, actors.TaskInfo]:
    """With max_running=1: "first" runs; "second", waiting, is stopped (its
    actor starts for the message), then sent "again": a new run whose actor
    parks for the slot."""
    first = await rt.submit("job", "first")
    second = await rt.submit("job", "second")
    assert (await rt.signal(second.id, Signal.STOP)).state is S.STOPPED
    await rt.send(second.id, "again")
    await trio.testing.wait_all_tasks_blocked()
    return first, second


async def test_a_signalled_waiting_task_gets_its_actor_and_its_run_still_waits(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    jobs = Gates()
    async with open_rt(jobs.app, max_running=1) as rt:
        first, second = await first_and_parked_second(rt)
        assert jobs.started == ["first"]
        jobs.gate("first").set()
        jobs.gate("again").set()
        assert await rt.result(first.id) == "first"
        assert await rt.result(second.id) == "again"
    assert jobs.started == ["first", "again"]
    assert jobs.most == 1


async def test_waiting_tasks_are_released_on_close_and_run_on_the_next_node(
    store_url: str, autojump_clock: trio.testing.MockClock
) -> None:
    jobs = Gates()
    async with reopenable(store_url) as store:
        async with actors.open_runtime(jobs.app, store, node_id="n1", max_running=1) as rt:
            infos = [await rt.submit("job", i) for i in range(3)]
            await until(lambda: jobs.started == [0])
            assert rt.statistics()["waiting"] == 2
        for i in range(3):
            jobs.gate(i).set()
        async with actors.open_runtime(jobs.app, store, node_id="n2") as rt:
            assert [await rt.result(info.id) for info in infos] == [0, 1, 2]
    assert sorted(jobs.started) == [0, 0, 1, 2]  # 0 ran on both nodes


async def test_a_bound_below_one_is_refused(store_url: str) -> None:
    with pytest.raises(ValueError, match="max_running must be at least 1"):
        async with actors.open_runtime(actors.App(), store_url, max_running=0):
            pass


async def test_pending_tasks_resumed_on_open_wait_without_actors_too(
    store_url: str, autojump_clock: trio.testing.MockClock
) -> None:
    jobs = Gates()
    async with reopenable(store_url) as store:
        async with actors.open_runtime(jobs.app, store, node_id="n1", max_running=1) as rt:
            infos = []
            for i in range(4):
                infos.append(await rt.submit("job", i))
                await trio.sleep(1)  # distinct creation times: "oldest" is defined
            await until(lambda: jobs.started == [0])
        async with actors.open_runtime(jobs.app, store, node_id="n2", max_running=2) as rt:
            # 0 was running (its actor resumes it first); 1, the oldest of
            # the pending ones, takes the other slot; 2 and 3 wait, no actor.
            await until(lambda: sorted(jobs.started) == [0, 0, 1])
            stats = rt.statistics()
            assert (stats["actors"], stats["waiting"]) == (2, 2)
            for i in range(4):
                jobs.gate(i).set()
            assert [await rt.result(info.id) for info in infos] == [0, 1, 2, 3]
    assert jobs.most == 2


async def test_a_run_cancelled_while_it_waits_for_a_slot_leaves_the_slot_free(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    jobs = Gates()
    async with open_rt(jobs.app, max_running=1) as rt:
        first, second = await first_and_parked_second(rt)
        assert (await rt.cancel(second.id)).state is S.CANCELLED
        jobs.gate("first").set()
        assert await rt.result(first.id) == "first"
        third = await rt.submit("job", "third")
        jobs.gate("third").set()
        assert await rt.result(third.id) == "third"
    assert jobs.started == ["first", "third"]


async def test_a_parent_waiting_for_its_child_lends_its_slot(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    app = actors.App()

    @app.task("child")
    async def child(ctx: actors.TaskContext, request: actors.Request) -> int:
        return int(await ctx.step("double", _echo, request.input * 2))

    @app.task("parent")
    async def parent(ctx: actors.TaskContext, request: actors.Request) -> int:
        kids = [await ctx.spawn("child", i) for i in range(3)]
        return sum([await ctx.result(kid.id) for kid in kids])

    async with open_rt(app, max_running=1) as rt:
        info = await rt.submit("parent")
        with trio.fail_after(60):  # trio's clock: a deadlock fails, it does not hang
            assert await rt.result(info.id) == 6
