"""``taskactors demo``: the demo app, served and driven through the websocket API.

The tour opens a runtime on an embedded SQLite file and a websocket server
in-process, then acts as a client like any other: it submits six tasks of
the demo app (``_demo.py``), follows each one with ``Client.watch`` and, as
events arrive, pauses and resumes one, stops and re-sends another, cancels
a third, answers the one that asks for input, and lets the last one fail.
Every action is a protocol request; every line shown is an event received.

Tasks left unfinished in the file by an earlier (perhaps interrupted) run
are cancelled first, so a run never waits on them; finished ones stay.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

import attrs
import trio

from ..client._client import (
    Client,
    ClientError,
    InvalidTransitionError,
    Json,
    NotFoundError,
    open_client,
)
from ..runtime._runtime import open_runtime
from ..server._server import serve_websocket
from ._demo import demo_app
from ._display import Display, bar, describe, short_id, table

#: The demo server's port when it is free (else any free port).
DEFAULT_PORT = 8765
_UNFINISHED = ["pending", "running", "paused", "input_required", "auth_required", "stopped"]


@attrs.define(eq=False)
class Scene:
    """One task of the tour, and what the tour does to it as its events arrive."""

    label: str
    name: str
    input: dict[str, Any]
    #: Called with (scene, event) for each event; may act on the task.
    react: Callable[[Scene, Json], Awaitable[None]] | None = None
    task_id: str = ""
    state: str = "pending"
    progress: str = ""
    steps: int = 0
    tokens: dict[str, int] = attrs.field(factory=dict)
    #: What the tour did (a word or two for the summary).
    acts: list[str] = attrs.field(factory=list)


class Tour:
    """The scripted run: six scenes on one client connection."""

    def __init__(self, client: Client, display: Display, speed: float, thread_id: str) -> None:
        self.client = client
        self.display = display
        self.speed = speed
        self.thread_id = thread_id
        delay = round(0.4 / speed, 3)
        self.scenes = [
            Scene("runs to the end", "ingest", {"documents": 8, "delay": delay}),
            Scene("paused, resumed", "ingest", {"documents": 8, "delay": delay}, self.pause),
            Scene("stopped, re-sent", "report", {"sections": 8, "delay": delay}, self.stop),
            Scene("cancelled", "ingest", {"documents": 10, "delay": delay}, self.cancel),
            Scene("asks for input", "research", {"topic": "trio", "delay": delay}, self.answer),
            Scene("fails", "sync", {"delay": delay}),
        ]

    async def hold(self, seconds: float) -> None:
        """A pause for the viewer (shortened by --speed)."""
        await trio.sleep(seconds / self.speed)

    def say(self, scene: Scene, text: str) -> None:
        self.display.line(f"{scene.name:<9}{short_id(scene.task_id)}  >> {text}")

    async def act(self, scene: Scene, what: str, call: Awaitable[Json]) -> None:
        """Make a request for a scene; a refusal is shown, not fatal."""
        self.say(scene, what)
        try:
            await call
        except (InvalidTransitionError, NotFoundError) as exc:
            self.say(scene, f"refused: {exc}")

    # -- reactions -------------------------------------------------------------------
    async def pause(self, scene: Scene, event: Json) -> None:
        if _progress(event) == 2 and "pause" not in scene.acts:
            scene.acts.append("pause")
            await self.act(scene, "pause", self.client.signal(scene.task_id, "pause"))
        elif _state(event) == "paused":
            await self.hold(1.5)
            scene.acts.append("resume")
            await self.act(scene, "resume", self.client.signal(scene.task_id, "resume"))

    async def stop(self, scene: Scene, event: Json) -> None:
        if _progress(event) == 3 and "stop" not in scene.acts:
            scene.acts.append("stop")
            await self.act(scene, "stop", self.client.signal(scene.task_id, "stop"))
        elif _state(event) == "stopped":
            await self.hold(1.0)
            scene.acts.append("re-send")
            text = "re-send the request: finished sections replay from the journal"
            await self.act(scene, text, self.client.send(scene.task_id, scene.input))

    async def cancel(self, scene: Scene, event: Json) -> None:
        if _progress(event) == 3 and "cancel" not in scene.acts:
            scene.acts.append("cancel")
            call = self.client.cancel(scene.task_id, reason="no longer needed")
            await self.act(scene, "cancel", call)

    async def answer(self, scene: Scene, event: Json) -> None:
        if _state(event) == "input_required":
            question = event["data"].get("question", {})
            self.say(scene, f"the task asks: {question.get('question', question)}")
            await self.hold(1.0)
            scene.acts.append("answer")
            call = self.client.send(scene.task_id, {"approve": True})
            await self.act(scene, 'answer {"approve": true}', call)

    # -- following ---------------------------------------------------------------------
    async def follow(self, scene: Scene) -> None:
        """Show a scene's events and react to them, to its terminal event."""
        async with self.client.watch(scene.task_id) as events:
            async for event in events:
                self.record(scene, event)
                shown = self.shown(event)
                self.draw(scene, redraw=not shown)
                if shown:
                    self.display.line(
                        f"{scene.name:<9}{short_id(scene.task_id)}  #{event['seq']:<3} "
                        f"{event['kind']:<15} {describe(event)}"
                    )
                if scene.react is not None:
                    await scene.react(scene, event)

    def shown(self, event: Json) -> bool:
        """Whether an event gets a line (the progress bars say the rest)."""
        kind = event["kind"]
        return kind != "step_started" and (kind != "progress" or not self.display.live)

    def record(self, scene: Scene, event: Json) -> None:
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        assert isinstance(data, dict)
        kind = event["kind"]
        if kind == "state":
            scene.state = str(data.get("to"))
        elif kind == "progress":
            scene.progress = bar(data["done"], data.get("total"), 20, fancy=self.display.fancy)
        elif kind == "step_completed":
            scene.steps += 1
        elif kind == "usage":
            tokens = int(data.get("input_tokens", 0)) + int(data.get("output_tokens", 0))
            model = str(data.get("model"))
            scene.tokens[model] = scene.tokens.get(model, 0) + tokens

    def draw(self, scene: Scene, *, redraw: bool = True) -> None:
        text = f"{scene.label:<17}{scene.name:<9}{scene.progress or '':<31} {scene.state}"
        self.display.row(scene.task_id, text, redraw=redraw)

    async def run(self) -> list[Json]:
        """Submit every scene, follow them all to the end; their final infos."""
        for scene in self.scenes:
            info = await self.client.submit(scene.name, scene.input, thread_id=self.thread_id)
            scene.task_id = info["id"]
            self.draw(scene)
        async with trio.open_nursery() as nursery:
            for scene in self.scenes:
                nursery.start_soon(self.follow, scene)
        self.display.close()
        return [await self.client.get(scene.task_id) for scene in self.scenes]


def _progress(event: Json) -> float | None:
    data = event.get("data")
    return data.get("done") if event.get("kind") == "progress" and isinstance(data, dict) else None


def _state(event: Json) -> str | None:
    data = event.get("data")
    return data.get("to") if event.get("kind") == "state" and isinstance(data, dict) else None


async def _tidy(client: Client, out: TextIO) -> None:
    """Cancel what an earlier run left unfinished, so it never waits on us.

    Tasks of handlers this app lacks (orphans of another app) are left alone.
    """
    leftovers = await client.list(states=_UNFINISHED)
    ours = [info for info in leftovers if info["name"] in demo_app]
    cancelled = 0
    for info in ours:
        try:
            await client.cancel(info["id"], reason="left by an earlier demo run")
        except ClientError as exc:
            print(f"could not cancel {info['name']} {short_id(info['id'])}: {exc}", file=out)
        else:
            cancelled += 1
    if cancelled:
        print(f"cancelled {cancelled} task(s) an earlier run left unfinished", file=out)
    if len(ours) < len(leftovers):
        others = len(leftovers) - len(ours)
        print(f"left {others} unfinished task(s) of other handlers as they are", file=out)


def _summary(tour: Tour, infos: list[Json], usage: Json) -> str:
    rows = []
    for scene, info in zip(tour.scenes, infos, strict=True):
        duration = float(info["updated_at"]) - float(info["created_at"])
        tokens = ", ".join(f"{model} {n}" for model, n in sorted(scene.tokens.items()))
        rows.append(
            [
                scene.name,
                short_id(info["id"]),
                scene.label,
                info["state"],
                scene.steps,
                f"{duration:.1f} s",
                tokens or "-",
            ]
        )
    headers = ["TASK", "ID", "SCENARIO", "STATE", "STEPS", "DURATION", "TOKENS BY MODEL"]
    lines = ["", "summary", table(headers, rows), ""]
    for scene, info in zip(tour.scenes, infos, strict=True):
        if info.get("error"):
            lines.append(f"{scene.name} {short_id(info['id'])} failed: {info['error']}")
    by_model = ", ".join(
        f"{model} {figures['tokens']}" for model, figures in sorted(usage["by_model"].items())
    )
    lines.append(
        f"thread {tour.thread_id}: {usage['total_tokens']} tokens in {usage['total_runs']} "
        f"task(s) ({by_model or 'none'})"
    )
    return "\n".join(lines)


async def _start_server(nursery: trio.Nursery, serve: Callable[..., Any], port: int | None) -> int:
    """Listen on ``port`` (default 8765, or any free port if it is taken)."""
    if port is None:
        port = DEFAULT_PORT
        try:
            bound: int = await nursery.start(functools.partial(serve, port=port))
        except* OSError:
            # Taken (serve_websocket's nursery may wrap the OSError in a group).
            port = 0
        else:
            return bound
    bound = await nursery.start(functools.partial(serve, port=port))
    return bound


async def run_demo(
    store: str,
    *,
    port: int | None = None,
    speed: float = 1.0,
    out: TextIO,
    live: bool | None = None,
) -> int:
    """Run the tour on ``store``; its exit status (0)."""
    started = time.monotonic()
    async with open_runtime(demo_app, store) as rt, trio.open_nursery() as server:
        serve = functools.partial(serve_websocket, rt, host="127.0.0.1", tokens=None)
        bound = await _start_server(server, serve, port)
        url = f"ws://127.0.0.1:{bound}"
        print(f"taskactors demo: store {store}, server {url}", file=out)
        print(f"(from another terminal: taskactors ls --url {url})\n", file=out)
        async with open_client(url) as client:
            await _tidy(client, out)
            thread_id = f"demo-{uuid.uuid4().hex[:6]}"
            tour = Tour(client, Display(out, live=live), speed, thread_id)
            infos = await tour.run()
            usage = await client.usage(thread_id)
        print(_summary(tour, infos, usage), file=out)
        server.cancel_scope.cancel()
    print(f"\ndone in {time.monotonic() - started:.1f} s", file=out, flush=True)
    return 0
