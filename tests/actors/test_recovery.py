"""Recovery on open, graceful shutdown and fenced ownership across runtimes."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
import trio.testing

import actors
import storage
from actors import testing


@asynccontextmanager
async def reopenable(store_url: str) -> AsyncIterator[str | storage.Store]:
    """What to give open_runtime so that a second runtime sees the first's data.

    SQLite: the URL (each runtime opens the file anew). Memory: one shared store.
    """
    if store_url.startswith("sqlite"):
        yield store_url
    else:
        async with storage.open(store_url) as store:
            yield store


def blocking_app(ran: Counter[str], gate: dict[str, trio.Event]) -> actors.App:
    app = actors.App()

    async def body(name: str) -> str:
        ran[name] += 1
        if name in gate:
            await gate[name].wait()
        return name.upper()

    @app.task("job")
    async def job(ctx: actors.TaskContext, request: actors.Request) -> list[str]:
        out = [await ctx.step(name, body, name) for name in ("a", "b", "c")]
        return out

    return app


async def test_running_task_resumes_after_reopen_without_rerunning_finished_steps(
    store_url: str, autojump_clock: trio.abc.Clock
) -> None:
    ran: Counter[str] = Counter()
    gate = {"c": trio.Event()}
    app = blocking_app(ran, gate)
    async with reopenable(store_url) as store:
        async with actors.open_runtime(app, store, node_id="n1") as rt:
            info = await rt.submit("job", task_id="t1")
            await trio.testing.wait_all_tasks_blocked()
            assert ran == Counter({"a": 1, "b": 1, "c": 1})
        gate["c"].set()
        async with actors.open_runtime(app, store, node_id="n2") as rt:
            assert await rt.result(info.id) == ["A", "B", "C"]
            history = await rt.history(info.id)
    assert ran == Counter({"a": 1, "b": 1, "c": 2})
    assert [e.seq for e in history] == list(range(1, len(history) + 1))
    assert [e.kind for e in history].count("recovered") == 1


async def test_graceful_shutdown_leaves_running_task_unowned_and_resumable(
    store_url: str, autojump_clock: trio.abc.Clock
) -> None:
    ran: Counter[str] = Counter()
    app = blocking_app(ran, {"b": trio.Event()})
    async with reopenable(store_url) as store:
        async with actors.open_runtime(app, store, node_id="n1") as rt:
            info = await rt.submit("job")
            await trio.testing.wait_all_tasks_blocked()
        async with actors.open_runtime(actors.App(), store, node_id="other") as rt:
            record = await rt.store.get_task(info.id)
            assert record is not None
            assert record.state is actors.TaskState.RUNNING
            assert record.owner is None and record.lease_expires is None


async def test_paused_task_stays_paused_across_restart(
    store_url: str, autojump_clock: trio.abc.Clock
) -> None:
    ran: Counter[str] = Counter()
    gate = {"a": trio.Event()}
    app = blocking_app(ran, gate)
    async with reopenable(store_url) as store:
        async with actors.open_runtime(app, store, node_id="n1") as rt:
            info = await rt.submit("job")
            await trio.testing.wait_all_tasks_blocked()
            await rt.signal(info.id, actors.Signal.PAUSE)
            gate["a"].set()
            await rt.wait(info.id, states=["paused"])
        async with actors.open_runtime(app, store, node_id="n1") as rt:
            await trio.sleep(600)
            assert (await rt.get(info.id)).state is actors.TaskState.PAUSED
            assert ran == Counter({"a": 1})
            await rt.signal(info.id, actors.Signal.RESUME)
            assert await rt.result(info.id) == ["A", "B", "C"]
    assert ran == Counter({"a": 1, "b": 1, "c": 1})


async def test_input_required_task_waits_for_its_next_request_after_restart(
    store_url: str, autojump_clock: trio.abc.Clock
) -> None:
    app = actors.App()
    asked: list[Any] = []

    @app.task("ask")
    async def ask(ctx: actors.TaskContext, request: actors.Request) -> Any:
        asked.append(1)
        return {"answer": await ctx.ask("name?")}

    async with reopenable(store_url) as store:
        async with actors.open_runtime(app, store, node_id="n1") as rt:
            info = await rt.submit("ask")
            await rt.wait(info.id, states=["input_required"])
        async with actors.open_runtime(app, store, node_id="n2") as rt:
            await trio.sleep(600)
            assert (await rt.get(info.id)).state is actors.TaskState.INPUT_REQUIRED
            await rt.send(info.id, "ada")
            assert await rt.result(info.id) == {"answer": "ada"}


async def test_task_with_unknown_handler_is_listed_as_orphaned_not_crashed(
    store_url: str, autojump_clock: trio.abc.Clock
) -> None:
    ran: Counter[str] = Counter()
    app = blocking_app(ran, {"a": trio.Event()})
    async with reopenable(store_url) as store:
        async with actors.open_runtime(app, store, node_id="n1") as rt:
            info = await rt.submit("job")
            await trio.testing.wait_all_tasks_blocked()
        async with actors.open_runtime(actors.App(), store, node_id="n1") as rt:
            await trio.sleep(120)
            assert set(rt.orphaned) == {info.id}
            after = await rt.get(info.id)
            assert after.state is actors.TaskState.RUNNING
            assert rt.statistics()["actors"] == 0


async def test_lease_takeover_fences_the_old_owner(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    """Two runtimes on one SQLite file: B takes a task over once A's lease
    expires; A's later writes are refused, its actor stops, and nothing A did
    after losing the lease is visible."""
    url = f"sqlite:///{tmp_path}/shared.db"
    ran: Counter[str] = Counter()
    release_a = trio.Event()
    nodes: list[str] = []
    app = actors.App()

    async def body(name: str, node: str) -> str:
        ran[name, node] += 1
        if name == "b" and node == "A":
            await release_a.wait()
        return f"{name} by {node}"

    @app.task("job")
    async def job(ctx: actors.TaskContext, request: actors.Request) -> list[str]:
        node = nodes[-1] if ctx.attempt == 1 and len(nodes) == 1 else "B"
        return [await ctx.step(name, body, name, node) for name in ("a", "b", "c")]

    async with (
        actors.open_runtime(app, url, node_id="A", lease=10) as rt_a,
        actors.open_runtime(app, url, node_id="B", lease=10) as rt_b,
    ):
        nodes.append("A")
        info = await rt_a.submit("job", task_id="shared-task")
        await trio.testing.wait_all_tasks_blocked()
        assert ran == Counter({("a", "A"): 1, ("b", "A"): 1})
        with testing.stop_heartbeats(rt_a):
            nodes.append("B")
            await trio.sleep(30)  # A's lease expires, B's scan claims the task
            assert (await rt_b.result(info.id)) == ["a by A", "b by B", "c by B"]
            release_a.set()  # A's step body returns; A's write must be refused
            await trio.testing.wait_all_tasks_blocked()
        assert rt_a.statistics()["actors"] == 0
        history = await rt_b.history(info.id)
        record = await rt_b.store.get_task(info.id)
    assert record is not None and record.epoch >= 2
    assert [e.seq for e in history] == list(range(1, len(history) + 1))
    completed = [e.data["name"] for e in history if e.kind == "step_completed"]
    assert completed == ["a", "b", "c"]
    assert history[-1].data["to"] == "completed"
    assert ran[("b", "A")] == 1 and ran[("b", "B")] == 1
