"""Context variables: every handler starts from the context the runtime was
opened in, whoever started its actor (a submitter, a message's sender, the
task whose run slot it took, a parent) and whichever process runs it."""

from __future__ import annotations

import contextvars
from typing import Any

import trio
import trio.testing

import actors

from .conftest import OpenRuntime

who: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="unset")


def seeing_app() -> actors.App:
    """``job`` returns the ``who`` it saw, then sets ``who`` to its input and
    waits a while (so that the tasks after it wait for its run slot);
    ``asker`` returns what it saw before and after an ask; ``parent``, what
    it and its child saw."""
    app = actors.App()

    @app.task("job")
    async def job(ctx: actors.TaskContext, request: actors.Request) -> str:
        seen = who.get()
        who.set(str(request.input))
        await trio.sleep(1)
        return seen

    @app.task("parent")
    async def parent(ctx: actors.TaskContext, request: actors.Request) -> Any:
        who.set("the parent")
        child = await ctx.spawn("job", "the child")
        return [who.get(), await ctx.result(child.id)]

    @app.task("asker")
    async def asker(ctx: actors.TaskContext, request: actors.Request) -> Any:
        before = who.get()
        answer = await ctx.ask("go on?")  # passivated: the answer revives it
        return [before, who.get(), answer]

    return app


async def test_a_task_that_waited_for_a_slot_does_not_see_the_vars_of_the_one_before(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    token = who.set("the application")
    try:
        async with open_rt(seeing_app(), max_running=1) as rt:
            first = await rt.submit("job", "alice")
            second = await rt.submit("job", "bob")  # waits, then takes alice's slot
            assert rt.statistics()["waiting"] == 1
            assert await rt.result(first.id) == "the application"
            assert await rt.result(second.id) == "the application"
    finally:
        who.reset(token)


async def test_handlers_see_the_runtime_context_not_the_submitter_or_sender(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    token = who.set("the application")
    try:
        async with open_rt(seeing_app()) as rt:
            results: dict[str, Any] = {}

            async def submitter() -> None:
                who.set("a submitter")
                info = await rt.submit("job", "x")
                results["job"] = await rt.result(info.id)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(submitter)
            asking = await rt.submit("asker")
            await rt.wait(asking.id, states=["input_required"])

            async def sender() -> None:
                who.set("a sender")
                await rt.send(asking.id, "yes")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender)
            results["asker"] = await rt.result(asking.id)
    finally:
        who.reset(token)
    assert results["job"] == "the application"
    assert results["asker"] == ["the application", "the application", "yes"]


async def test_a_child_task_does_not_see_its_parents_vars(
    open_rt: OpenRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_rt(seeing_app()) as rt:
        info = await rt.submit("parent")
        assert await rt.result(info.id) == ["the parent", "unset"]
