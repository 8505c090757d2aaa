"""TaskContext: what a handler uses to be durable.

Theory of operation
-------------------
A handler run is replayed from the task's *journal*: the ordered record of
its durable calls (steps, asks, checkpoints, recorded values, spawns,
joins). Each durable call takes the next position: if the journal has an
entry there, the call must match it (same kind and name, else
NonDeterminismError) and returns the stored value without running anything;
if not, the call does its work and records an entry before returning. So
after a crash, a restart, a STOP or a pause, finished steps return their
stored results and the handler continues where it was.

A handler may also resume from ``ctx.state`` (the latest checkpoint) instead
of replaying from the top: if the first durable call of a run does not match
the journal's first entry, the replay starts right after the latest
checkpoint instead. From then on positions are strict.

Safe points (every step boundary, ``ask`` and ``checkpoint``) are where a
requested PAUSE takes effect.

``emit``, ``progress`` and ``usage`` are synchronous: their writes are queued
to the storage actor in order, and the next durable call waits for them.
While replaying, ``emit`` and ``progress`` are not repeated (they were
recorded the first time) and a usage report is stored once per position.
"""

from __future__ import annotations

import functools
import inspect
import random as random_module
import uuid as uuid_module
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TypeVar

import trio

from storage import EventLike, TaskDraft, TaskRecord, decode, encode, on_virtual_time

from ..core._errors import NonDeterminismError, TaskFailed
from ..core._info import TaskInfo
from ..core._messages import Request
from ._fast import EXACT_JSON, KIND, MARK, NAME, VALUE, Entry, is_async, step_data
from ._faults import notify_steps

if TYPE_CHECKING:
    from storage import Clock, Store

    from ._supervisor import Supervisor

T = TypeVar("T")


class _Named(Protocol):
    @property
    def name(self) -> str: ...


class RunHost(Protocol):
    """What a TaskContext needs of its task actor (``TaskActor`` is one).

    Every call names the run it comes from by the run's cancel scope: the
    actor ignores (or stops) a run that was ended.
    """

    task_id: str
    journal: dict[int, Entry]
    journal_end: int
    #: Whether a PAUSE waits for the run's next safe point.
    pause_requested: bool
    #: The scope a heartbeat pushes back (None: no heartbeat_timeout).
    heartbeat_scope: trio.CancelScope | None

    @property
    def runtime(self) -> Supervisor: ...
    @property
    def spec(self) -> _Named: ...
    @property
    def record(self) -> TaskRecord: ...
    @property
    def root_id(self) -> str: ...
    @property
    def store(self) -> Store: ...
    @property
    def clock(self) -> Clock: ...

    def latest_checkpoint_index(self) -> int | None: ...
    def latest_checkpoint(self) -> Any: ...
    async def safe_point(self, scope: trio.CancelScope, cursor: int) -> None: ...
    def emit_nowait(self, scope: trio.CancelScope, kind: str, data: Any) -> None: ...
    def emit_text_nowait(self, scope: trio.CancelScope, kind: str, text: str) -> None: ...
    def progress_nowait(
        self, scope: trio.CancelScope, done: float, total: float | None
    ) -> None: ...
    def usage_nowait(
        self,
        scope: trio.CancelScope,
        key: str,
        model: str,
        input_tokens: int,
        output_tokens: int,
        caller: str | None,
    ) -> None: ...
    def record_nowait(
        self, scope: trio.CancelScope, index: int, kind: str, name: str, value: str
    ) -> None: ...
    async def record_entry(
        self,
        scope: trio.CancelScope,
        run: int,
        index: int,
        kind: str,
        name: str,
        value: str,
        events: Sequence[tuple[str, Any]] = (),
    ) -> None: ...
    def record_draft(
        self,
        scope: trio.CancelScope,
        run: int,
        index: int,
        kind: str,
        name: str,
        value: str,
        events: Sequence[EventLike],
    ) -> TaskDraft | None: ...
    def recorded(
        self, draft: TaskDraft, run: int, index: int, kind: str, name: str, value: str
    ) -> None: ...
    async def dead_run(self) -> NoReturn: ...
    async def answer_or_suspend(
        self, scope: trio.CancelScope, index: int, name: str, question: Any, auth: bool
    ) -> Any: ...
    def heartbeat(self) -> None: ...
    async def spawn_child(
        self,
        child_id: str,
        name: str,
        input: Any,
        metadata: dict[str, Any] | None,
        strategy: str | None,
    ) -> TaskInfo: ...
    async def join(self, task_id: str) -> dict[str, Any]: ...


#: Event kinds the runtime writes; ``ctx.emit`` may not use them.
RESERVED_KINDS = frozenset(
    {
        "state",
        "step_started",
        "step_completed",
        "step_failed",
        "checkpoint",
        "progress",
        "usage",
        "retry",
        "request_received",
        "request_queued",
        "request_dropped",
        "input_received",
        "recovered",
        "spawned",
    }
)


class TaskData:
    """Key/value data shared by every task of a task tree (``ctx.data``)."""

    __slots__ = ("_actor",)

    def __init__(self, actor: RunHost) -> None:
        self._actor = actor

    async def get(self, key: str, default: Any = None) -> Any:
        """The value stored under key, or default."""
        return await self._actor.store.get_workflow_data(self._actor.root_id, key, default)

    async def set(self, key: str, value: Any) -> None:
        """Store a JSON value under key for the whole task tree."""
        await self._actor.store.set_workflow_data(self._actor.root_id, key, value)


class TaskContext:
    """The handler's handle on its task. One per handler attempt."""

    __slots__ = (
        "_actor",
        "_cursor",
        "_fresh",
        "_scope",
        "_started",
        "_state",
        "_usage_count",
        "_usage_position",
        "attempt",
        "request",
    )

    def __init__(
        self, actor: RunHost, request: Request, attempt: int, scope: trio.CancelScope
    ) -> None:
        self._actor = actor
        self.request = request
        #: 1 for the first attempt of this run, 2 for its first retry...
        self.attempt = attempt
        self._cursor = 0
        self._started = False
        # True once this attempt passed the end of the journal: from then on
        # emit/progress are new. Code before the point where an earlier run
        # was suspended (its MARK entry) ran already, so it stays quiet too.
        self._fresh = actor.journal_end == 0
        self._usage_position = -1
        self._usage_count = 0
        self._state: Any = actor.latest_checkpoint() if actor.journal else None
        #: The cancel scope of the run this context belongs to.
        self._scope = scope

    @property
    def data(self) -> TaskData:
        """Key/value data shared by the whole task tree (``await ctx.data.get(key)``)."""
        return TaskData(self._actor)

    # -- identity ------------------------------------------------------------
    @property
    def task_id(self) -> str:
        return self._actor.task_id

    @property
    def name(self) -> str:
        return self._actor.spec.name

    @property
    def user_id(self) -> str | None:
        return self._actor.record.user_id

    @property
    def thread_id(self) -> str | None:
        return self._actor.record.thread_id

    @property
    def parent_id(self) -> str | None:
        return self._actor.record.parent_id

    @property
    def run(self) -> int:
        return self.request.run

    @property
    def state(self) -> Any:
        """The latest checkpointed state (None before the first checkpoint)."""
        return self._state

    @property
    def replaying(self) -> bool:
        """Whether this attempt is still replaying what an earlier one did."""
        return not self._fresh

    # -- journal -------------------------------------------------------------
    def _next(self, kind: str, name: str) -> tuple[int, Entry | None]:
        journal = self._actor.journal
        if not self._started:
            self._started = True
            first = journal.get(0)
            if (
                first is not None
                and first[KIND] != MARK
                and not (first[KIND] == kind and first[NAME] == name)
            ):
                resume = self._actor.latest_checkpoint_index()
                if resume is not None:
                    self._cursor = resume + 1
        index = self._cursor
        self._cursor += 1
        recorded = journal.get(index)
        entry = None if recorded is not None and recorded[KIND] == MARK else recorded
        if entry is not None and (entry[KIND] != kind or entry[NAME] != name):
            raise NonDeterminismError(
                f"task {self.task_id}: replay asked for {kind} {name!r} at position {index}, "
                f"but the recorded run has {entry[KIND]} {entry[NAME]!r} there; "
                "the handler must make its durable calls in the same order on every run"
            )
        if recorded is None and index < self._actor.journal_end:
            missing = index
            raise NonDeterminismError(
                f"task {self.task_id}: replay asked for {kind} {name!r} at position {missing}, "
                "where the recorded run has nothing but later entries; the journal was changed"
            )
        if entry is None:
            self._fresh = True
        return index, entry

    # -- durable calls ---------------------------------------------------------
    async def step(
        self,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        retries: int = 0,
        backoff: float = 1.0,
    ) -> Any:
        """Run ``fn(*args)`` once, durably; return its (JSON) result.

        A sync ``fn`` runs in a worker thread. The result is stored before the
        next step starts; on a replay the stored result is returned and fn
        does not run. A failing fn is retried ``retries`` times with
        exponential backoff on trio's clock, then its exception propagates.

        The returned value is the stored JSON form (a tuple comes back as a
        list), the same on the first run and on a replay.

        Cancellation (Cancel, STOP, shutdown) interrupts fn at once; a sync fn
        is abandoned in its thread and its result discarded.

        Raises:
            NonDeterminismError: the journal has another entry at this position.
            TypeError: fn's result is not JSON-serializable.
        """
        actor = self._actor
        if actor.pause_requested:
            await actor.safe_point(self._scope, self._cursor)
        index, entry = self._next("step", name)
        if entry is not None:
            await trio.lowlevel.checkpoint()  # a replay is a cancel point too
            return decode(entry[VALUE])
        where = step_data(name, index)
        actor.emit_text_nowait(self._scope, "step_started", where)
        runtime = actor.runtime
        observed = runtime.step_observers  # (empty: one truth test per point)
        if observed:
            await notify_steps(runtime.step_observers, "before_step", self.task_id, name, index)
        attempt = 0
        while True:  # (the body and its retries, inline: one coroutine less per step)
            attempt += 1
            if actor.heartbeat_scope is not None:
                self.heartbeat()
            try:
                if is_async(fn):
                    value = await fn(*args)
                else:
                    value = await _call_sync(fn, *args)
            except Exception as exc:
                if not self._step_failed(name, index, attempt, exc, retries):
                    raise
                await trio.sleep(backoff * 2 ** (attempt - 1))
                continue
            break
        text = self._step_text(name, value)
        if observed:
            await notify_steps(runtime.step_observers, "after_body", self.task_id, name, index)
        # record_entry, inline: a waiting step holds two coroutines less.
        run = self.request.run
        completed = (("step_completed", where),)
        draft = actor.record_draft(self._scope, run, index, "step", name, text, completed)
        if draft is None:
            await actor.dead_run()
        await draft.wait_quietly()
        actor.recorded(draft, run, index, "step", name, text)
        await trio.lowlevel.checkpoint_if_cancelled()
        if observed:
            await notify_steps(runtime.step_observers, "after_store", self.task_id, name, index)
        if actor.pause_requested:
            await actor.safe_point(self._scope, self._cursor)
        return value if type(value) in EXACT_JSON else decode(text)

    def _step_failed(
        self, name: str, index: int, attempt: int, error: Exception, retries: int
    ) -> bool:
        """Record that a step's body raised; whether the step tries again."""
        will_retry = attempt <= retries
        data = {
            "name": name,
            "index": index,
            "attempt": attempt,
            "error": f"{type(error).__qualname__}: {error}",
            "will_retry": will_retry,
        }
        self._actor.emit_nowait(self._scope, "step_failed", data)
        return will_retry

    def _step_text(self, name: str, value: Any) -> str:
        """A step's result as the JSON text to store.

        Raises:
            TypeError: the result is not JSON-serializable.
        """
        try:
            return encode(value)
        except TypeError as exc:
            raise TypeError(f"step {name!r} of task {self.task_id}: {exc}") from None

    async def checkpoint(self, state: Any) -> None:
        """Store a snapshot of the handler's own state; ``ctx.state`` returns it.

        A safe point. On a later run ``ctx.state`` starts as the latest
        checkpoint, so a handler can resume from it.
        """
        await self._actor.safe_point(self._scope, self._cursor)
        index, entry = self._next("checkpoint", "checkpoint")
        if entry is not None:
            self._state = decode(entry[VALUE])
            return
        text = encode(state)
        await self._actor.record_entry(
            self._scope,
            self.request.run,
            index,
            "checkpoint",
            "checkpoint",
            text,
            events=(("checkpoint", {"index": index}),),
        )
        self._state = decode(text)
        await self._actor.safe_point(self._scope, self._cursor)

    async def ask(self, question: Any = None, *, auth: bool = False) -> Any:
        """Wait for the next Request and return its input.

        If a Request is already waiting in the task's inbox it answers at
        once. Otherwise the task goes to ``input_required`` (or
        ``auth_required`` with ``auth=True``), the run is suspended (no actor
        stays in memory) and the next Request resumes it: this call then
        returns that Request's input. A safe point.
        """
        await self._actor.safe_point(self._scope, self._cursor)
        name = "auth" if auth else "input"
        index, entry = self._next("ask", name)
        if entry is not None:
            return decode(entry[VALUE])
        return await self._actor.answer_or_suspend(self._scope, index, name, question, auth)

    def _value(self, name: str, make: Callable[[], Any]) -> Any:
        index, entry = self._next("value", name)
        if entry is not None:
            return decode(entry[VALUE])
        text = encode(make())
        self._actor.record_nowait(self._scope, index, "value", name, text)
        return decode(text)

    def now(self) -> float:
        """Seconds since the epoch, recorded once and replayed identically."""
        return float(self._value("now", self._actor.clock.now))

    def uuid(self) -> str:
        """A random UUID (text), recorded once and replayed identically."""
        return str(self._value("uuid", lambda: str(uuid_module.uuid4())))

    def random(self) -> float:
        """A float in [0, 1), recorded once and replayed identically."""
        return float(self._value("random", random_module.random))

    async def spawn(
        self,
        name: str,
        input: Any = None,
        *,
        metadata: dict[str, Any] | None = None,
        strategy: str | None = None,
    ) -> TaskInfo:
        """Start a child task (once, durably); cancelling this task cancels it.

        The child shares ``ctx.data`` with this task tree and is listed under
        it (``rt.list(parent_id=...)``). Children still running when this task
        finishes are cancelled.
        """
        index, entry = self._next("spawn", name)
        child_id = decode(entry[VALUE]) if entry is not None else f"{self.task_id}.{index}"
        info = await self._actor.spawn_child(child_id, name, input, metadata, strategy)
        if entry is None:
            await self._actor.record_entry(
                self._scope,
                self.request.run,
                index,
                "spawn",
                name,
                encode(child_id),
                events=(("spawned", {"task_id": child_id, "name": name}),),
            )
        return info

    async def result(self, task_id: str) -> Any:
        """Wait for a task (typically a child) to finish; return its result (durably).

        Raises:
            TaskFailed: the task failed or was cancelled (also on replay).
        """
        index, entry = self._next("join", task_id)
        if entry is None:
            outcome = await self._actor.join(task_id)
            await self._actor.record_entry(
                self._scope, self.request.run, index, "join", task_id, encode(outcome)
            )
        else:
            outcome = decode(entry[VALUE])
        if "error" in outcome:
            error = outcome["error"]
            raise TaskFailed(task_id, error["type"], error["message"], error.get("traceback", ""))
        return outcome["result"]

    # -- fire-and-forget -----------------------------------------------------
    def emit(self, kind: str, data: Any = None) -> None:
        """Append an event of your own kind to the task's history.

        Raises:
            ValueError: the kind is one the runtime uses.
            TypeError: data is not JSON-serializable.
        """
        if kind in RESERVED_KINDS or not kind:
            raise ValueError(f"event kind {kind!r} is reserved by the runtime")
        if not self.replaying:
            self._actor.emit_nowait(self._scope, kind, data)

    def progress(self, done: float, total: float | None = None) -> None:
        """Report progress (shown in TaskInfo.progress and as a progress event)."""
        if not self.replaying:
            self._actor.progress_nowait(self._scope, done, total)

    def usage(
        self,
        *,
        model: str,
        input_tokens: int = 0,
        output_tokens: int = 0,
        caller: str | None = None,
    ) -> None:
        """Report token usage; aggregated by ``rt.usage(thread_id=...)``.

        Not repeated by a replay; stored once per position of a run, so the
        code re-run after a crash does not count twice either.
        """
        if self.replaying:
            return
        if self._usage_position != self._cursor:
            self._usage_position = self._cursor
            self._usage_count = 0
        key = f"{self._cursor}:{self._usage_count}"
        self._usage_count += 1
        self._actor.usage_nowait(self._scope, key, model, input_tokens, output_tokens, caller)

    def heartbeat(self) -> None:
        """Tell the runtime the run is alive (pushes back heartbeat_timeout)."""
        self._actor.heartbeat()


async def _call_sync(fn: Callable[..., Any], *args: Any) -> Any:
    if on_virtual_time():
        # Tests on trio's virtual clock: a thread would let the clock jump
        # over the step (see storage.on_virtual_time).
        result = fn(*args)
    else:
        result = await trio.to_thread.run_sync(functools.partial(fn, *args), abandon_on_cancel=True)
    if inspect.isawaitable(result):
        return await result
    return result
