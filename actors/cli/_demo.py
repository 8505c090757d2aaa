"""The demo app: what ``taskactors demo`` runs, and what ``taskactors serve`` serves
unless given ``--app``.

Four handlers, each a few durable steps. Every step sleeps ``delay`` seconds
to stand for real work (a fetch, a model call), reports progress and token
usage; the input may set ``delay`` and the sizes.
"""

from __future__ import annotations

from typing import Any

import trio

from ..core._messages import Request
from ..runtime._app import App
from ..runtime._context import TaskContext

demo_app = App()


async def work(label: str, seconds: float) -> str:
    """Pretend to do something for ``seconds``."""
    await trio.sleep(seconds)
    return f"{label}: done"


def options(request: Request) -> dict[str, Any]:
    return request.input if isinstance(request.input, dict) else {}


@demo_app.task("ingest", timeout=300)
async def ingest(ctx: TaskContext, request: Request) -> dict[str, Any]:
    """Fetch and index a batch of documents: one durable step each."""
    count = int(options(request).get("documents", 8))
    delay = float(options(request).get("delay", 0.4))
    for i in range(count):
        await ctx.step(f"fetch-{i}", work, f"document {i}", delay)
        ctx.progress(i + 1, count)
    ctx.usage(model="embed-small", input_tokens=250 * count, caller="indexer")
    return {"indexed": count}


@demo_app.task("report", timeout=300)
async def report(ctx: TaskContext, request: Request) -> dict[str, Any]:
    """Write a report section by section (a re-run replays the sections written)."""
    sections = int(options(request).get("sections", 8))
    delay = float(options(request).get("delay", 0.4))
    for i in range(sections):
        await ctx.step(f"section-{i}", work, f"section {i}", delay)
        ctx.progress(i + 1, sections)
    ctx.usage(model="writer-medium", input_tokens=400 * sections, output_tokens=150 * sections)
    return {"sections": sections, "run": ctx.run}


def make_plan(topic: str, sources: int) -> list[str]:
    """A sync step: runs in a worker thread."""
    return [f"{topic}, source {i}" for i in range(sources)]


@demo_app.task("research", timeout=300)
async def research(ctx: TaskContext, request: Request) -> dict[str, Any]:
    """Plan, search each source, then ask a human before publishing."""
    topic = str(options(request).get("topic", "trio"))
    delay = float(options(request).get("delay", 0.4))
    plan = await ctx.step("plan", make_plan, topic, 4)
    ctx.usage(model="planner-large", input_tokens=600, output_tokens=200, caller="lead_agent")
    for i, source in enumerate(plan):
        await ctx.step(f"search-{i}", work, source, delay)
        ctx.usage(model="search-small", input_tokens=300, output_tokens=60, caller="subagent")
        ctx.progress(i + 1, len(plan) + 1)
    answer = await ctx.ask({"question": f"publish the findings on {topic}?"})
    approved = isinstance(answer, dict) and bool(answer.get("approve"))
    if approved:
        await ctx.step("publish", work, "publish", delay)
    ctx.progress(len(plan) + 1, len(plan) + 1)
    return {"topic": topic, "sources": len(plan), "published": approved}


def call_upstream(endpoint: str) -> str:
    raise ConnectionError(f"{endpoint} is unreachable")


@demo_app.task("sync", retries=2, backoff=0.2, timeout=60)
async def sync(ctx: TaskContext, request: Request) -> str:
    """Sync with an upstream that is down: retried twice, then it fails."""
    endpoint = str(options(request).get("endpoint", "https://upstream.invalid"))
    await ctx.step("snapshot", work, "snapshot", float(options(request).get("delay", 0.4)))
    result: str = await ctx.step("push", call_upstream, endpoint)
    return result
