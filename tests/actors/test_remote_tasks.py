"""Tasks another process runs: on a shared store (a SQLite file) their
commits reach this process's reads but not its hub, so waits and
subscriptions on them read the store again every REMOTE_POLL seconds; a
cancel from another node stops the run within a lease renewal.

Two runtimes on one file, each with its own store (as two processes would
have), on trio's virtual clock (the cancel: on every backend). Each test
runs under a virtual-time limit: a wait that never hears of a commit fails
instead of hanging.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import pytest
import trio
import trio.testing

import actors
import storage
from actors import TaskState
from actors.runtime._events import REMOTE_POLL

from .test_recovery import reopenable

S = TaskState

#: Virtual seconds a test may take (the leases' scans included).
LIMIT = 600


class Gated:
    """``job``: three steps, each waiting for its gate; ``broken`` fails."""

    def __init__(self) -> None:
        self.gates = [trio.Event() for _ in range(3)]
        self.app = actors.App()

        @self.app.task("job")
        async def job(ctx: actors.TaskContext, request: actors.Request) -> list[int]:
            return [await ctx.step(f"s{i}", self.gates[i].wait) or i for i in range(3)]

        @self.app.task("broken")
        async def broken(ctx: actors.TaskContext, request: actors.Request) -> None:
            await ctx.step("wait", self.gates[0].wait)
            raise ValueError("no luck")


@asynccontextmanager
async def open_node(tmp_path: Path, app: actors.App, node_id: str) -> AsyncIterator[actors.Runtime]:
    async with actors.open_runtime(app, f"sqlite:///{tmp_path}/tasks.db", node_id=node_id) as rt:
        yield rt


async def test_another_process_waits_for_a_task_and_gets_its_result_or_error(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    jobs = Gated()
    with trio.fail_after(LIMIT):
        async with open_node(tmp_path, jobs.app, "a") as a, open_node(tmp_path, jobs.app, "b") as b:
            info = await a.submit("job")
            broken = await a.submit("broken")
            assert (await b.wait(info.id, states=[S.RUNNING])).state is S.RUNNING
            for gate in jobs.gates:
                gate.set()
            started = trio.current_time()
            assert await b.result(info.id) == [0, 1, 2]
            assert trio.current_time() - started <= REMOTE_POLL
            with pytest.raises(actors.TaskFailed, match="no luck"):
                await b.result(broken.id)


async def test_a_subscription_to_a_task_another_process_runs_is_live(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    jobs = Gated()
    seen: list[tuple[int, str]] = []
    with trio.fail_after(LIMIT):
        async with open_node(tmp_path, jobs.app, "a") as a, open_node(tmp_path, jobs.app, "b") as b:
            info = await a.submit("job")
            async with b.subscribe(info.id) as stream:
                async for event in stream:
                    seen.append((event.seq, event.kind))
                    if event.kind == "step_started":
                        # Each step waits for its gate: its start came live,
                        # not with the rest at the end.
                        assert not jobs.gates[event.data["index"]].is_set()
                        jobs.gates[event.data["index"]].set()
            assert (await a.get(info.id)).state is S.COMPLETED
    assert [seq for seq, _ in seen] == list(range(1, len(seen) + 1))
    kinds = [kind for _, kind in seen]
    assert kinds.count("step_completed") == 3
    assert kinds[-1] == "state"


async def test_a_subscription_follows_a_task_that_moves_to_this_process(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    jobs = Gated()
    seen: list[actors.TaskEvent] = []
    second_step = trio.Event()

    with trio.fail_after(LIMIT):
        async with open_node(tmp_path, jobs.app, "b") as b, trio.open_nursery() as nursery:
            async with open_node(tmp_path, jobs.app, "a") as a:
                info = await a.submit("job")

                async def follow() -> None:
                    async with b.subscribe(info.id) as stream:
                        async for event in stream:
                            seen.append(event)
                            if event.kind == "step_started" and event.data["index"] == 1:
                                second_step.set()

                nursery.start_soon(follow)
                jobs.gates[0].set()
                await second_step.wait()  # (heard through b's polls of the store)
            # a closed: the task, still running, was released, and b's next
            # scan takes it: its first step is replayed, the others run here.
            jobs.gates[1].set()
            jobs.gates[2].set()
            assert await b.result(info.id) == [0, 1, 2]
    seqs = [e.seq for e in seen]
    assert seqs == list(range(1, len(seqs) + 1))
    assert "recovered" in [e.kind for e in seen]
    assert (seen[-1].kind, seen[-1].data["to"]) == ("state", "completed")


async def test_a_cancel_from_another_node_stops_the_run_there_within_a_renewal(
    store_url: str, autojump_clock: trio.testing.MockClock
) -> None:
    app = actors.App()
    entered = trio.Event()
    interrupted = trio.Event()

    async def forever() -> None:
        entered.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            interrupted.set()
            raise

    @app.task("job")
    async def job(ctx: actors.TaskContext, request: actors.Request) -> None:
        await ctx.step("forever", forever)

    with trio.fail_after(LIMIT):
        async with (
            reopenable(store_url) as where,
            actors.open_runtime(app, where, node_id="a", lease=30) as a,
            actors.open_runtime(app, where, node_id="b") as b,
        ):
            info = await a.submit("job")
            await entered.wait()
            cancelled_at = trio.current_time()
            assert (await b.cancel(info.id, reason="from b")).state is S.CANCELLED
            # a's step is interrupted at a's next lease renewal, not when
            # (never) it writes again; a then lets go of the task.
            await interrupted.wait()
            assert trio.current_time() - cancelled_at <= 30 / 3
            while a.statistics()["actors"]:
                await trio.testing.wait_all_tasks_blocked()
            stored = await b.get(info.id)
            assert (stored.state, stored.owner) == (S.CANCELLED, None)
            with pytest.raises(actors.TaskCancelled):
                await b.result(info.id)


class _LegacyBackend:
    """A backend written before ``Backend.shared``: everything but that."""

    def __init__(self) -> None:
        self._inner = storage.backend_from_url("memory://")

    def __getattr__(self, name: str) -> Any:
        if name == "shared":
            raise AttributeError(name)
        return getattr(self._inner, name)


async def test_a_backend_that_does_not_say_whether_it_is_shared_still_runs_tasks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    jobs = Gated()
    for gate in jobs.gates:
        gate.set()
    with trio.fail_after(LIMIT):
        async with (
            storage.open_store(cast(storage.Backend, _LegacyBackend())) as store,
            actors.open_runtime(jobs.app, store, node_id="a") as rt,
        ):
            info = await rt.submit("job")
            assert await rt.result(info.id) == [0, 1, 2]


async def test_a_process_alone_on_its_store_reads_nothing_while_it_waits(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    app = actors.App()

    @app.task("asker")
    async def asker(ctx: actors.TaskContext, request: actors.Request) -> Any:
        return await ctx.ask("go on?")  # passivated: no actor while it waits

    reads = 0
    with trio.fail_after(LIMIT):
        async with open_node(tmp_path, app, "a") as a:
            info = await a.submit("asker")
            await a.wait(info.id, states=[S.INPUT_REQUIRED])
            store = a.store
            get_task, read_events = store.get_task, store.read_events

            async def counting_get_task(task_id: str) -> Any:
                nonlocal reads
                reads += 1
                return await get_task(task_id)

            async def counting_read_events(task_id: str, *args: Any) -> Any:
                nonlocal reads
                reads += 1
                return await read_events(task_id, *args)

            store.get_task = counting_get_task  # type: ignore[method-assign]
            store.read_events = counting_read_events  # type: ignore[method-assign]
            results: list[Any] = []

            async def wait_for_result() -> None:
                results.append(await a.result(info.id))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait_for_result)
                await trio.sleep(60)  # (virtual) four scans, no other node
                polled = reads
                await a.send(info.id, "yes")
            assert results == ["yes"]
    # Its waits polled nothing: the only node on its store hears every commit.
    assert polled <= 1
