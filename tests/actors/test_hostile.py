"""A hostile websocket client cannot hurt another user nor the server (issue #17, point 4).

Two users share one server (``actors.serve_websocket`` in-process, on a real
SQLite store in ``tmp_path``). User A throws hostile frames: lone surrogates
(the JSON escape ``"\\ud800"``: valid JSON, not UTF-8-encodable) in every
string of every op, huge integers, NaN and Infinity, deep nesting, wrong
types, other users' task ids, unknown ops, binary and malformed frames. User
B meanwhile submits tasks of a few durable steps with its own task ids and
watches them. The properties:

- every reply to A carries a documented error code (or is a success that
  shows A nothing of B's), never ``internal``, never ``unavailable`` (the
  store is not down), and A's connection stays open;
- a request carrying a lone surrogate is never accepted (whatever it would
  write could not be stored), and another user's task id reads as
  ``not_found`` (``conflict`` for ``submit``);
- B's tasks all complete with the right results, each history is exactly
  the events of one clean run (seq 1..n, nothing doubled, no retry), and B
  never got ``unavailable``: A's frames never failed B's writes.

Sizes (for ``make soak``): ``TASKACTORS_FUZZ_FRAMES`` random frames after the
fixed catalogue (default 300), ``TASKACTORS_FUZZ_TASKS`` tasks of B (default
12), ``TASKACTORS_FUZZ_SEED`` (default 17; a failure names its seed).

No test here uses the autojump clock: the server talks over real sockets and
every wait is on a reply, an event or a task's state, never a sleep.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import random
import string
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio_websocket
from trio_websocket import ConnectionClosed

import actors
import actors.client

FRAMES = int(os.environ.get("TASKACTORS_FUZZ_FRAMES", "300"))
B_TASKS = int(os.environ.get("TASKACTORS_FUZZ_TASKS", "12"))
SEED = int(os.environ.get("TASKACTORS_FUZZ_SEED", "17"))
B_STEPS = 5

TOKENS = {"token-a": "alice", "token-b": "bob"}
#: The README's error-code table, minus ``internal`` (a server bug).
DOCUMENTED = frozenset(
    {
        "bad_json",
        "bad_request",
        "unknown_op",
        "unauthorized",
        "not_found",
        "unknown_name",
        "conflict",
        "invalid_transition",
        "not_cancelable",
        "rejected",
        "too_large",
        "too_many_subscriptions",
        "unknown_subscription",
        "unavailable",
    }
)
#: Codes that must never answer a hostile frame on a healthy server: a server
#: bug, or a store "down" because one request broke a shared batch.
NEVER = frozenset({"internal", "unavailable"})
WRITE_OPS = frozenset({"submit", "send", "cancel", "signal"})
SURROGATES = ("\ud800", "\udfff", "a\udc00b", "\udc00\ud800", "\ud83d")
HUGE_INTS = (2**63, 2**64, -(2**63) - 1, 10**400)


def short(value: int) -> str:
    """A huge integer's name in a label (10**400 has no float)."""
    text = str(value)
    return text if len(text) < 24 else f"{text[:4]}...({len(text)} digits)"


EVENT_OPS = frozenset({"event", "events", "end", "lagged"})


def square(value: int) -> int:
    return value * value


def make_app(pace: Callable[[], Awaitable[None]] | None = None) -> actors.App:
    """The handlers; ``pace`` (a step body awaits it) spreads B's steps over A's frames."""
    app = actors.App()

    async def paced_square(value: int) -> int:
        if pace is not None:
            await pace()
        return square(value)

    @app.task("work")
    async def work(ctx: actors.TaskContext, request: actors.Request) -> Any:
        """A few durable steps, each followed by progress and an event of its own."""
        steps, base = request.input["steps"], request.input["base"]
        total = 0
        for index in range(steps):
            total += await ctx.step(f"step-{index}", paced_square, base + index)
            ctx.progress(index + 1, steps)
            ctx.emit("note", {"step": index})
        return {"total": total}

    @app.task("hold")
    async def hold(ctx: actors.TaskContext, request: actors.Request) -> Any:
        """Waits for input forever: a live target for A's send, signal and cancel."""
        while True:
            await ctx.ask({"more": True})

    return app


def expected_result(base: int) -> dict[str, int]:
    return {"total": sum(square(base + i) for i in range(B_STEPS))}


#: The kinds of one clean run of ``work``: no retry, no replayed step, nothing twice.
B_KINDS = [
    "state",
    "state",
    *["step_started", "step_completed", "progress", "note"] * B_STEPS,
    "state",
]


# -- the server --------------------------------------------------------------------------
@attrs.define
class Served:
    rt: actors.Runtime
    url: str


@asynccontextmanager
async def serving(tmp_path: Path, app: actors.App) -> AsyncIterator[Served]:
    store = f"sqlite:///{tmp_path}/hostile.db"
    serve = functools.partial(actors.serve_websocket, port=0, tokens=TOKENS)
    async with (
        actors.open_runtime(app, store, node_id="hostile") as rt,
        trio.open_nursery() as nursery,
    ):
        port = await nursery.start(serve, rt)
        yield Served(rt, f"ws://127.0.0.1:{port}")
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def connect(url: str, token: str) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    headers = [(b"Authorization", f"Bearer {token}".encode())]
    async with trio_websocket.open_websocket_url(
        url, extra_headers=headers, max_message_size=64 * 2**20
    ) as ws:
        yield ws


# -- hostile frames ----------------------------------------------------------------------
@attrs.frozen
class Hostile:
    """One frame of A's and what the README lets the server answer."""

    label: str
    payload: str | bytes
    #: Error codes that may answer it; None: any documented code or a success.
    expect: frozenset[str] | None = None
    #: Whether a success is allowed too (with ``expect`` set).
    ok: bool = False
    #: Whether the server may close the connection after it (auth with another token).
    may_close: bool = False


@attrs.define
class Targets:
    """Task ids the fuzzer aims at: A's own, and B's (as they appear)."""

    own: list[str]
    #: B's tasks that exist (A aims at them once B has created them: before,
    #: A could take a task id first, which is allowed).
    foreign: list[str] = attrs.field(factory=list)
    #: Every task id of B's, for the leak checks.
    others: frozenset[str] = frozenset()
    #: Live tasks of A's, each the target of one catalogued write (which may
    #: change it: a valid cancel ends it).
    fresh: list[str] = attrs.field(factory=list)
    subs: list[str] = attrs.field(factory=list)


class Raw:
    """Splices raw JSON text (NaN, 10**5000, 5000 levels) into a ``json.dumps`` frame."""

    def __init__(self) -> None:
        self.texts: dict[str, str] = {}

    def __call__(self, text: str) -> str:
        marker = f"\x00raw{len(self.texts)}\x00"
        self.texts[json.dumps(marker)] = text
        return marker

    def dumps(self, frame: Any) -> str:
        payload = json.dumps(frame)
        for marker, text in self.texts.items():
            payload = payload.replace(marker, text)
        return payload


Path_ = tuple[Any, ...]


def string_paths(value: Any, path: Path_ = ()) -> Iterator[tuple[Path_, bool]]:
    """Every string in ``value``: (path, is a dict key). Keys come as ("key", name)."""
    if isinstance(value, str):
        yield path, False
    elif isinstance(value, dict):
        for key, item in value.items():
            yield (*path, ("key", key)), True
            yield from string_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from string_paths(item, (*path, index))


def replace_at(value: Any, path: Path_, new: Any) -> Any:
    """A copy of ``value`` with the item (or dict key) at ``path`` replaced by ``new``."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(head, tuple):  # a dict key
        return {(new if k == head[1] else k): v for k, v in value.items()}
    if isinstance(value, dict):
        return {k: (replace_at(v, rest, new) if k == head else v) for k, v in value.items()}
    return [replace_at(v, rest, new) if i == head else v for i, v in enumerate(value)]


def full_frames(targets: Targets, rng: random.Random) -> dict[str, dict[str, Any]]:
    """A valid frame of every op of A's, with every optional field given."""
    own = rng.choice(targets.own)
    return {
        "submit": {
            "op": "submit",
            "name": "work",
            "input": {"steps": 1, "base": 0, "text": "hello"},
            "task_id": f"a-{rng.randrange(10**6)}",
            "thread_id": "a-thread",
            "metadata": {"key": "value"},
            "strategy": "enqueue",
        },
        "send": {"op": "send", "task_id": own, "input": {"text": "more"}},
        "cancel": {"op": "cancel", "task_id": own, "reason": "not needed"},
        "signal": {"op": "signal", "task_id": own, "signal": rng.choice(["pause", "resume"])},
        "get": {"op": "get", "task_id": own},
        "list": {"op": "list", "thread_id": "a-thread", "states": ["running"], "limit": 5},
        "history": {"op": "history", "task_id": own, "after": 0, "limit": 10},
        "subscribe": {"op": "subscribe", "task_id": own, "after": 0},
        "subscribe_all": {"op": "subscribe", "after": {own: 0}},
        "unsubscribe": {"op": "unsubscribe", "sub": rng.choice([*targets.subs, "s1"])},
        "usage": {"op": "usage", "thread_id": "a-thread", "include_active": True},
    }


def surrogate_frame(name: str, frame: dict[str, Any], path: Path_, lone: str) -> Hostile:
    """``frame`` with the string at ``path`` (or a dict key) turned into a lone surrogate."""
    hostile = replace_at(frame, path, lone)
    op = frame["op"]
    where = "/".join(f"<key {p[1]}>" if isinstance(p, tuple) else str(p) for p in path)
    label = f"{name}: lone surrogate {lone!r} at {where}"
    if op in WRITE_OPS and path != ("id",):
        # Whatever it would write could not be stored: it must be refused, with
        # any code saying so (never internal, never unavailable).
        return Hostile(label, json.dumps(hostile), REFUSED)
    return Hostile(label, json.dumps(hostile))


def catalogue(targets: Targets, rng: random.Random) -> list[Hostile]:
    """The fixed cases of the issue, every one of them, before the random frames."""
    cases: list[Hostile] = []
    for name, frame in full_frames(targets, rng).items():
        frame = {"id": f"c-{name}", **frame}
        for path, _ in string_paths(frame):
            if frame["op"] in ("send", "cancel", "signal") and targets.fresh:
                frame = {**frame, "task_id": targets.fresh.pop()}
            cases.append(surrogate_frame(name, frame, path, rng.choice(SURROGATES)))
    own = targets.own[0]
    bad = frozenset({"bad_request"})
    for value in HUGE_INTS:
        for op in ("history", "subscribe"):
            frame = {"id": f"h-{op}", "op": op, "task_id": own, "after": value}
            cases.append(Hostile(f"{op} after={short(value)}", json.dumps(frame), bad))
        frame = {"id": "h-list", "op": "list", "limit": value}
        cases.append(Hostile(f"list limit={short(value)}", json.dumps(frame), bad))
        frame = {"id": value, "op": "get", "task_id": own}
        cases.append(Hostile(f"get with id={short(value)}", json.dumps(frame)))
        frame = submit_junk(value)
        cases.append(Hostile(f"submit input junk={short(value)}", json.dumps(frame)))
    raw = Raw()
    frame = submit_junk(raw("1" + "0" * 5000))
    cases.append(Hostile("submit input 10**5000", raw.dumps(frame)))
    for text in ("NaN", "Infinity", "-Infinity"):
        raw = Raw()
        cases.append(
            Hostile(
                f"submit input {text}", raw.dumps(submit_junk(raw(text))), frozenset({"bad_json"})
            )
        )
        raw = Raw()
        frame = {"op": "history", "task_id": own, "after": raw(text)}
        cases.append(Hostile(f"history after {text}", raw.dumps(frame), frozenset({"bad_json"})))
    raw = Raw()
    cases.append(Hostile("submit input 1e400", raw.dumps(submit_junk(raw("1e400")))))
    for depth in (10, 65, 1000, 5000):
        for where in ("input", "metadata", "frame"):
            cases.append(deep_frame(depth, where, own))
    for foreign in targets.foreign[:2]:
        cases.extend(foreign_frames(foreign))
    for op in ("nope", "SUBMIT", "", "\ud800", "__class__"):
        frame = {"id": "u", "op": op, "task_id": own}
        cases.append(Hostile(f"unknown op {op!r}", json.dumps(frame), UNKNOWN_OP))
    cases.extend(malformed_frames(own))
    cases.append(Hostile("binary frame", b"\x00\xff\xfe", frozenset({"bad_json"})))
    cases.append(
        Hostile("JSON as binary", json.dumps({"op": "get", "task_id": own}).encode(), BAD_JSON)
    )
    return cases


UNKNOWN_OP = frozenset({"unknown_op", "bad_request"})
REFUSED = DOCUMENTED - NEVER
BAD_JSON = frozenset({"bad_json"})


def submit_junk(junk: Any) -> dict[str, Any]:
    """A submit of a one-step ``work`` carrying ``junk`` in its input, where ``work``
    ignores it (so an accepted one still completes)."""
    return {"op": "submit", "name": "work", "input": {"steps": 1, "base": 0, "junk": junk}}


def deep_frame(depth: int, where: str, own: str) -> Hostile:
    raw = Raw()
    nested = raw("[" * depth + "0" + "]" * depth)
    if where == "input":
        frame: Any = submit_junk(nested)
    elif where == "metadata":
        frame = {**submit_junk(0), "metadata": {"deep": nested}}
    else:
        frame = {"op": "history", "task_id": own, "limit": nested}
    # The frame itself adds a level or two; the README refuses over 64.
    expect = None if depth < 60 else frozenset({"bad_request", "bad_json"})
    if where == "frame" and depth < 60:
        expect = frozenset({"bad_request"})
    return Hostile(f"{depth} levels deep in {where}", raw.dumps(frame), expect)


def foreign_frames(foreign: str) -> list[Hostile]:
    """Another user's task id in every op that takes one: it reads as not found."""
    not_found = frozenset({"not_found"})
    frames = [
        ("get", {"op": "get", "task_id": foreign}),
        ("send", {"op": "send", "task_id": foreign, "input": 1}),
        ("cancel", {"op": "cancel", "task_id": foreign}),
        ("signal", {"op": "signal", "task_id": foreign, "signal": "pause"}),
        ("history", {"op": "history", "task_id": foreign}),
        ("subscribe", {"op": "subscribe", "task_id": foreign}),
    ]
    cases = [Hostile(f"{op} of B's task", json.dumps(f), not_found) for op, f in frames]
    frame = {"op": "submit", "name": "work", "input": None, "task_id": foreign}
    cases.append(Hostile("submit with B's task id", json.dumps(frame), frozenset({"conflict"})))
    # An all-tasks subscription resuming B's task must not replay it: an error
    # or a subscription that sends nothing of B's (checked on every event frame).
    frame = {"op": "subscribe", "after": {foreign: 0}}
    cases.append(Hostile("subscribe_all after B's task", json.dumps(frame)))
    return cases


def malformed_frames(own: str) -> list[Hostile]:
    bad_request = frozenset({"bad_request"})
    return [
        Hostile("truncated JSON", '{"op": "get", "task_id": ', BAD_JSON),
        Hostile("trailing garbage", '{"op": "get", "task_id": "x"} x', BAD_JSON),
        Hostile("bad escape", '{"op": "get", "task_id": "\\uZZZZ"}', BAD_JSON),
        Hostile("empty frame", "", BAD_JSON),
        Hostile("NUL", "\x00", BAD_JSON),
        Hostile("a JSON array", "[]", bad_request),
        Hostile("a JSON string", '"get"', bad_request),
        Hostile("a JSON number", "17", bad_request),
        Hostile("null", "null", bad_request),
        Hostile("no op", json.dumps({"task_id": own}), bad_request),
        Hostile("op not a string", json.dumps({"op": 7}), UNKNOWN_OP),
        Hostile("unknown field", json.dumps({"op": "get", "task_id": own, "x": 1}), bad_request),
        Hostile("duplicate op", '{"op": "get", "op": "list"}', None),
        Hostile("id a list", json.dumps({"id": [1], "op": "get", "task_id": own}), bad_request),
        Hostile("id a float", json.dumps({"id": 1.5, "op": "get", "task_id": own}), bad_request),
        Hostile("id a bool", json.dumps({"id": True, "op": "get", "task_id": own}), bad_request),
        Hostile("limit a bool", json.dumps({"op": "list", "limit": True}), bad_request),
        Hostile("limit 0", json.dumps({"op": "list", "limit": 0}), bad_request),
        Hostile(
            "after -1", json.dumps({"op": "history", "task_id": own, "after": -1}), bad_request
        ),
        Hostile("states a string", json.dumps({"op": "list", "states": "running"}), bad_request),
        Hostile("unknown state", json.dumps({"op": "list", "states": ["zombie"]}), bad_request),
        Hostile(
            "unknown signal",
            json.dumps({"op": "signal", "task_id": own, "signal": "kill"}),
            bad_request,
        ),
        Hostile(
            "unknown strategy", json.dumps({**submit_junk(0), "strategy": "yolo"}), bad_request
        ),
        Hostile(
            "unknown handler",
            json.dumps({"op": "submit", "name": "nope", "input": 1}),
            frozenset({"unknown_name"}),
        ),
        Hostile("valid emoji pair", json.dumps(submit_junk("\ud83d\ude00")), None),
        Hostile(
            "auth with B's token",
            json.dumps({"op": "auth", "token": "token-b"}),
            frozenset({"unauthorized"}),
            may_close=True,
        ),
        Hostile(
            "auth with a surrogate",
            json.dumps({"op": "auth", "token": "\ud800"}),
            frozenset({"unauthorized", "bad_request"}),
            may_close=True,
        ),
        Hostile(
            "frame over max_frame",
            json.dumps(submit_junk("x" * (1 << 20))),
            frozenset({"too_large"}),
        ),
    ]


# The random frames: one valid frame of a random op, then one mutation of it.
WRONG_VALUES: tuple[Any, ...] = (0, -1, 1.5, True, False, [], ["x"], {}, {"a": 1}, "x", "")


def random_frame(rng: random.Random, targets: Targets) -> Hostile:
    frames = full_frames(targets, rng)
    name = rng.choice(sorted(frames))
    frame: dict[str, Any] = {
        k: v for k, v in frames[name].items() if k == "op" or rng.random() < 0.7
    }
    if name in ("submit", "send") and "input" not in frame:
        frame["input"] = None
    frame = {"id": rng.choice([rng.randrange(10**9), f"r{rng.randrange(10**6)}"]), **frame}
    kind = rng.choice(
        ["surrogate"] * 4
        + ["poison"] * 3
        + ["huge", "float", "deep", "wrong_type", "foreign", "unknown_op"]
        + ["binary", "valid", "random_text"]
    )
    if kind == "poison":
        # What failed every write of the batch it was in (issue #17).
        field = rng.choice(["task_id", "thread_id"])
        hostile = {**submit_junk(0), field: rng.choice(SURROGATES)}
        return Hostile(f"submit {field} lone surrogate", json.dumps(hostile), REFUSED)
    if kind == "surrogate":
        paths = [path for path, _ in string_paths(frame)]
        path = rng.choice(paths)
        return surrogate_frame(name, frame, path, rng.choice(SURROGATES))
    if kind == "huge":
        value = rng.choice(HUGE_INTS)
        if name in ("history", "list", "subscribe") and rng.random() < 0.7:
            field = "limit" if name == "list" else "after"
            hostile = {**frame, field: value}
            return Hostile(
                f"{name} {field}={short(value)}", json.dumps(hostile), frozenset({"bad_request"})
            )
        return Hostile(f"submit junk={short(value)}", json.dumps(submit_junk(value)))
    if kind == "float":
        raw = Raw()
        text = rng.choice(["NaN", "Infinity", "-Infinity"])
        target = rng.choice([k for k in frame if k != "op"] or ["id"])
        hostile = {**frame, target: raw(text)}
        return Hostile(f"{name} {target}={text}", raw.dumps(hostile), BAD_JSON)
    if kind == "deep":
        return deep_frame(
            rng.choice([10, 65, 1000, 5000]),
            rng.choice(["input", "metadata", "frame"]),
            rng.choice(targets.own),
        )
    if kind == "wrong_type":
        fields = [k for k in frame if k not in ("op", "id", "input")]
        if not fields:
            return Hostile(f"{name} valid", json.dumps(frame))
        field = rng.choice(fields)
        value = rng.choice(WRONG_VALUES)
        hostile = {**frame, field: value}
        # A string field given a string stays well-typed (it may still be refused).
        # ``after`` takes a seq or (subscribing to all tasks) an object of seqs.
        same_type = type(value) is type(frame[field]) or (
            field == "after" and (isinstance(value, dict) or type(value) is int)
        )
        expect = None if same_type else frozenset({"bad_request"})
        return Hostile(f"{name} {field}={value!r}", json.dumps(hostile), expect)
    if kind == "foreign" and targets.foreign:
        return rng.choice(foreign_frames(rng.choice(targets.foreign)))
    if kind == "unknown_op":
        op = "".join(rng.choices(string.ascii_letters + "_", k=rng.randrange(1, 12)))
        hostile = {**frame, "op": op}
        return Hostile(f"unknown op {op!r}", json.dumps(hostile), UNKNOWN_OP)
    if kind == "binary":
        return Hostile("binary frame", rng.randbytes(rng.randrange(0, 64)), BAD_JSON)
    if kind == "random_text":
        text = json.dumps(frame)
        cut = rng.randrange(len(text))
        return Hostile(f"{name} cut at {cut}", text[:cut], None)
    return Hostile(f"{name} valid", json.dumps(frame))


# -- throwing and judging ----------------------------------------------------------------
@attrs.define
class Thrown:
    """What A saw: each frame's reply (or how the connection ended), and leaks."""

    replies: list[tuple[Hostile, Any]] = attrs.field(factory=list)
    problems: list[str] = attrs.field(factory=list)
    count: int = 0
    finished: bool = False
    reached: dict[int, trio.Event] = attrs.field(factory=dict)

    def progress_to(self, count: int) -> None:
        self.count = count
        for wanted, event in self.reached.items():
            if wanted <= count or self.finished:
                event.set()

    def finish(self) -> None:
        self.finished = True
        self.progress_to(self.count)

    async def wait_for(self, count: int) -> None:
        """Wait until A has had ``count`` replies (or has thrown everything)."""
        if self.count < count and not self.finished:
            await self.reached.setdefault(count, trio.Event()).wait()

    async def next_frame(self) -> None:
        """A pace for B's steps: one of A's frames per step."""
        await self.wait_for(self.count + 1)


def judge(frame: Hostile, reply: Any, foreign: set[str]) -> str | None:
    """Why ``reply`` is not an answer the README allows for ``frame`` (None: it is)."""
    where = f"{frame.label!r}: {str(reply)[:300]}"
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        return f"not a reply frame: {where}"
    if reply["ok"]:
        if leaked(reply.get("result"), foreign):
            return f"a success shows B's task: {where}"
        if frame.expect is not None and not frame.ok:
            return f"accepted, must be refused: {where}"
        return None
    code = reply.get("error", {}).get("code")
    if code in NEVER:
        return f"{code}: {where}"
    if code not in DOCUMENTED:
        return f"undocumented code {code!r}: {where}"
    if frame.expect is not None and code not in frame.expect:
        return f"{code}, expected one of {sorted(frame.expect)}: {where}"
    return None


def leaked(value: Any, foreign: set[str]) -> bool:
    """Whether a reply or event shows a task of B's."""
    if isinstance(value, list):
        return any(leaked(v, foreign) for v in value)
    if isinstance(value, dict):
        if value.get("user_id") not in (None, "alice") or value.get("task_id") in foreign:
            return True
        return value.get("id") in foreign and "state" in value
    return False


async def exchange(
    ws: trio_websocket.WebSocketConnection, frame: Hostile, thrown: Thrown, foreign: set[str]
) -> Any:
    """Send one frame and return the next frame that is not an event (its reply:
    a connection answers in order)."""
    await ws.send_message(frame.payload)
    while True:
        text = await ws.get_message()
        try:
            reply = json.loads(text)
        except ValueError:
            return text
        if isinstance(reply, dict) and reply.get("op") in EVENT_OPS:
            events = reply.get("events") or [reply.get("event")]
            if leaked(events, foreign):
                thrown.problems.append(f"an event of B's task on A's connection: {text[:300]}")
            continue
        return reply


async def throw(url: str, frames: Iterator[Hostile], thrown: Thrown, targets: Targets) -> None:
    """A's loop: one frame at a time, each reply judged; reconnect if the server
    closes the connection (a problem unless the frame may close it)."""
    try:
        await throw_all(url, frames, thrown, targets)
    finally:
        thrown.finish()


async def throw_all(url: str, frames: Iterator[Hostile], thrown: Thrown, targets: Targets) -> None:
    foreign = set(targets.others) | set(targets.foreign)
    done = 0
    pending = None
    while True:
        async with connect(url, "token-a") as ws:
            try:
                for frame in frames:
                    pending = frame
                    with trio.move_on_after(15) as timeout:
                        reply = await exchange(ws, frame, thrown, foreign)
                    if timeout.cancelled_caught:
                        thrown.problems.append(f"no reply within 15 s: {frame.label!r}")
                        return
                    thrown.replies.append((frame, reply))
                    problem = judge(frame, reply, foreign)
                    if problem is not None:
                        thrown.problems.append(problem)
                    result = reply.get("result") if isinstance(reply, dict) else None
                    if isinstance(result, dict) and isinstance(result.get("sub"), str):
                        targets.subs.append(result["sub"])
                    done += 1
                    thrown.progress_to(done)
                return
            except ConnectionClosed as closed:
                assert pending is not None
                done += 1
                thrown.progress_to(done)
                if not pending.may_close:
                    why = f"the server closed A's connection ({closed.reason})"
                    thrown.problems.append(f"{why} after {pending.label!r}")


# -- user B ------------------------------------------------------------------------------
@attrs.define
class Watched:
    task_id: str
    base: int
    events: list[dict[str, Any]] = attrs.field(factory=list)
    unavailable: int = 0
    error: str | None = None


async def run_b_task(client: actors.client.Client, task: Watched, created: list[str]) -> None:
    """Submit (again while the server says unavailable: the task id makes it
    idempotent) and watch one task, resubscribing after a lag with ``after``."""
    for _ in range(50):
        try:
            await client.submit(
                "work",
                {"steps": B_STEPS, "base": task.base},
                task_id=task.task_id,
                thread_id="b-thread",
            )
            created.append(task.task_id)
            break
        except actors.client.UnavailableError:
            task.unavailable += 1
        except actors.ClientError as exc:
            task.error = f"submit refused ({exc!r}) after {task.unavailable} unavailable"
            return
    else:
        task.error = "submit unavailable 50 times"
        return
    while True:
        last = task.events[-1]["seq"] if task.events else 0
        try:
            async with client.subscribe(task.task_id, after=last) as events:
                async for event in events:
                    task.events.append(event)
            return
        except actors.SubscriptionLagged:
            continue


async def user_b(
    url: str, thrown: Thrown, tasks: list[Watched], per_task: int, created: list[str]
) -> None:
    """B's tasks, each started once A has thrown its share of frames, so that B's
    writes share the store's batches with A's hostile ones."""
    async with (
        actors.client.open_client(url, token="token-b") as client,
        trio.open_nursery() as nursery,
    ):
        for index, task in enumerate(tasks):
            await thrown.wait_for(index * per_task)
            nursery.start_soon(watch_with_deadline, client, task, created)


async def watch_with_deadline(
    client: actors.client.Client, task: Watched, created: list[str]
) -> None:
    with trio.move_on_after(30) as scope:
        await run_b_task(client, task, created)
    if scope.cancelled_caught:
        task.error = f"not finished within 30 s; events: {[e['kind'] for e in task.events]}"


def check_b(task: Watched) -> list[str]:
    """What is wrong with one of B's tasks (empty: nothing)."""
    problems = []
    name = task.task_id
    if task.error is not None:
        problems.append(f"{name}: {task.error}")
    if task.unavailable:
        problems.append(f"{name}: submit answered unavailable {task.unavailable} time(s)")
    seqs = [e["seq"] for e in task.events]
    if seqs != list(range(1, len(seqs) + 1)):
        problems.append(f"{name}: seqs not contiguous from 1: {seqs}")
    kinds = [e["kind"] for e in task.events]
    if kinds != B_KINDS:
        problems.append(f"{name}: not one clean run: {kinds}")
    elif task.events[-1]["data"].get("to") != "completed":
        problems.append(f"{name}: ended {task.events[-1]['data']}")
    return problems


# -- the tests ---------------------------------------------------------------------------
async def start_targets(url: str) -> Targets:
    """A's own tasks: holds waiting for input (live targets) and a finished one."""
    own = ["a-hold-0", "a-hold-1", "a-hold-2", "a-done"]
    fresh = [f"a-fresh-{i}" for i in range(FRESH)]
    async with actors.client.open_client(url, token="token-a") as client:
        for task_id in [*own[:3], *fresh]:
            await client.submit("hold", None, task_id=task_id, thread_id="a-thread")
        await client.submit("work", {"steps": 1, "base": 1}, task_id="a-done", thread_id="a-thread")
    return Targets(own=own, fresh=fresh)


#: Enough live targets for the catalogued surrogates in send, cancel and signal.
FRESH = 30


def report(seed: int, problems: list[str]) -> str:
    head = f"seed {seed} (TASKACTORS_FUZZ_SEED): {len(problems)} problem(s)"
    return "\n".join([head, *problems[:60]])


async def test_every_catalogued_hostile_frame_gets_a_documented_refusal(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    async with serving(tmp_path, make_app()) as served:
        targets = await start_targets(served.url)
        await served.rt.submit("work", {"steps": 1, "base": 0}, task_id="b-x", user_id="bob")
        targets.foreign.append("b-x")
        await served.rt.wait("a-done", user_id="alice")
        await served.rt.wait("b-x", user_id="bob")
        thrown = Thrown()
        with trio.fail_after(45):
            await throw(served.url, iter(catalogue(targets, rng)), thrown, targets)
        await check_server_up(served, thrown)
        assert await served.rt.result("b-x", user_id="bob") == {"total": 0}
    problems = thrown.problems
    if os.environ.get("TASKACTORS_FUZZ_VERBOSE"):
        for frame, reply in thrown.replies:
            print(f"{frame.label!r} -> {str(reply)[:200]}")
    assert not problems, report(SEED, problems)


async def check_server_up(served: Served, thrown: Thrown) -> None:
    """After all that, a new connection of A's still gets answers."""
    with trio.move_on_after(10):
        await served.rt.wait("a-done", user_id="alice")
    async with actors.client.open_client(served.url, token="token-a") as client:
        try:
            got = await client.get("a-done")
        except actors.ClientError as exc:
            thrown.problems.append(f"the server no longer answers a plain get: {exc!r}")
        else:
            if got["state"] != "completed":
                thrown.problems.append(f"A's finished task reads {got['state']}")


async def test_a_hostile_user_never_fails_another_users_tasks(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    tasks = [Watched(f"b-{i}", base=i) for i in range(B_TASKS)]
    foreign = {task.task_id for task in tasks}
    thrown = Thrown()
    async with serving(tmp_path, make_app(pace=thrown.next_frame)) as served:
        targets = await start_targets(served.url)
        targets.others = frozenset(foreign)
        fixed = catalogue(targets, rng)
        total = len(fixed) + FRAMES
        # The random frames are made as they are thrown, aimed at B's tasks of the moment.
        frames = itertools.chain(fixed, (random_frame(rng, targets) for _ in range(FRAMES)))
        per_task = max(1, total // (B_TASKS + 1))
        with trio.fail_after(max(50, FRAMES // 10)):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(user_b, served.url, thrown, tasks, per_task, targets.foreign)
                await throw(served.url, frames, thrown, targets)
        await check_server_up(served, thrown)
        b_problems = [p for task in tasks for p in check_b(task)]
        for task in tasks:
            if task.error is None:
                with trio.move_on_after(10):
                    try:
                        result = await served.rt.result(task.task_id, user_id="bob")
                    except actors.ActorsError as exc:
                        result = repr(exc)
                    if result != expected_result(task.base):
                        b_problems.append(f"{task.task_id}: result {result!r}")
    assert thrown.count == total  # every frame got a reply (or closed the connection)
    assert not b_problems, report(SEED, b_problems)  # B was hurt
    problems = thrown.problems
    assert not problems, report(SEED, problems)


@pytest.mark.parametrize("seed", [SEED + 1, SEED + 2])
def test_the_random_frames_are_reproducible(seed: int) -> None:
    targets = Targets(own=["a"], foreign=["b"])
    first = [random_frame(random.Random(seed), targets).payload for _ in range(3)]
    second = [random_frame(random.Random(seed), targets).payload for _ in range(3)]
    assert first == second


def test_the_catalogue_puts_a_surrogate_in_every_string_of_every_op() -> None:
    targets = Targets(own=["a"], foreign=["b"])
    labels = {
        case.label.split(": ")[0]
        for case in catalogue(targets, random.Random(0))
        if "surrogate" in case.label
    }
    assert labels >= {
        "submit",
        "send",
        "cancel",
        "signal",
        "get",
        "list",
        "history",
        "subscribe",
        "unsubscribe",
        "usage",
    }
    submit = [
        c.label for c in catalogue(targets, random.Random(0)) if c.label.startswith("submit: lone")
    ]
    for where in (
        "name",
        "input/text",
        "task_id",
        "thread_id",
        "metadata/<key key>",
        "metadata/key",
        "strategy",
    ):
        assert any(label.endswith(f" at {where}") for label in submit), where
