"""The demo app that ``taskactors demo`` runs on an embedded SQLite file."""

from __future__ import annotations

from typing import Any

import trio

from ._app import App
from ._context import TaskContext
from ._messages import Request

demo_app = App()


async def _work(label: str, seconds: float) -> str:
    await trio.sleep(seconds)
    return f"{label} done"


@demo_app.task("pipeline", retries=1, timeout=60)
async def pipeline(ctx: TaskContext, request: Request) -> dict[str, Any]:
    """Extract, transform, load: three durable steps with progress."""
    items = int(request.input.get("items", 3))
    plan = await ctx.step("plan", lambda: [f"item-{i}" for i in range(items)])
    results = []
    for i, item in enumerate(plan):
        results.append(await ctx.step(f"process-{item}", _work, item, 0.15))
        ctx.progress(i + 1, len(plan))
    ctx.usage(
        model="demo-small", input_tokens=40 * items, output_tokens=12 * items, caller="lead_agent"
    )
    return {"processed": len(results), "started_at": ctx.now()}


@demo_app.task("approval", timeout=60)
async def approval(ctx: TaskContext, request: Request) -> dict[str, Any]:
    """Drafts something, then asks a human before publishing."""
    draft = await ctx.step("draft", _work, "draft", 0.2)
    ctx.usage(model="demo-large", input_tokens=300, output_tokens=120, caller="subagent")
    answer = await ctx.ask({"question": "publish the draft?", "draft": draft})
    if answer.get("approve"):
        await ctx.step("publish", _work, "publish", 0.1)
    return {"published": bool(answer.get("approve"))}


_flaky_attempts: dict[str, int] = {}


def _flaky(task_id: str) -> str:
    _flaky_attempts[task_id] = _flaky_attempts.get(task_id, 0) + 1
    if _flaky_attempts[task_id] == 1:
        raise ConnectionError("upstream hiccup (first attempt fails on purpose)")
    return "fetched on a retry"


@demo_app.task("flaky", retries=2, backoff=0.2)
async def flaky(ctx: TaskContext, request: Request) -> str:
    """Fails once, then succeeds when the runtime retries it."""
    value: str = await ctx.step("fetch", _flaky, ctx.task_id)
    return value
