"""Where writes run by default: one worker thread, or inline in trio.

Theory of operation
-------------------
A blocking backend's writes run in one worker thread of the storage actor's
own (``open_thread_runner``), which runs the batches submitted one after
another, in the order submitted, each through ``_isolate.apply_isolating``:
a batch that fails for a command's fault is isolated in the thread before
the next batch starts, so every other write keeps its order (issue #17). A
backend that does not block (memory), or a store opened with
``threads=False``, writes inline in trio (``open_inline_runner``).

The thread takes the next job as soon as it is done with one, without going
back to trio: a batch decided while the one before it is written starts the
moment that one commits (issue #5; going through trio costs a turn of every
runnable task, tens of ms after a batch woke thousands of writers). Not
``trio.to_thread.run_sync`` either, whose limiter yields to every runnable
task before the thread starts. The thread lives while there is work; trio's
thread cache keeps it for the next.
"""

from __future__ import annotations

import collections
import functools
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

import outcome
import trio

from ._isolate import Applies, apply_isolating, isolate
from .model._commands import Command


class Plans(Protocol):
    """What a runner needs of a planning backend (``PlanningBackend`` has it)."""

    def execute_plan(self, plan: Any, commands: Sequence[Command], now: float) -> list[object]: ...

    def abandon(self, plan: Any) -> None: ...


class _Writing:
    """A job for the worker (``_Worker.submit``); await ``result()`` for
    what it returned."""

    def __init__(self, fn: Callable[[], list[object]]) -> None:
        self.fn = fn
        self._done = trio.Event()
        self._result: outcome.Outcome[list[object]] | None = None

    def _deliver(self, result: outcome.Outcome[list[object]]) -> None:
        self._result = result
        self._done.set()

    async def result(self) -> list[object]:
        """Wait for what ``fn`` returned, or raise what it raised. Not
        interruptible: the write goes on anyway, and its writers must learn
        the truth."""
        with trio.CancelScope(shield=True):
            await self._done.wait()
        assert self._result is not None
        return self._result.unwrap()


class _Worker:
    """The worker thread: runs the jobs submitted, one after another, in the
    order submitted (see the module docstring)."""

    def __init__(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._lock = threading.Lock()
        self._jobs: collections.deque[_Writing] = collections.deque()
        self._running = False

    def submit(self, fn: Callable[[], list[object]]) -> _Writing:
        """Queue ``fn()`` behind the jobs submitted before it."""
        job = _Writing(fn)
        with self._lock:
            self._jobs.append(job)
            if self._running:
                return job
            self._running = True
        trio.lowlevel.start_thread_soon(self._run, _ignore, name="taskactors storage writer")
        return job

    def _run(self) -> None:
        # In the worker thread.
        while True:
            with self._lock:
                if not self._jobs:
                    self._running = False
                    return
                job = self._jobs.popleft()
            self._token.run_sync_soon(job._deliver, outcome.capture(job.fn))


def _ignore(_: object) -> None:
    """What the worker thread's own end delivers: nothing (each job delivers its result)."""


def execute_isolating(
    backend: Applies, planner: Plans, plan: Any, commands: Sequence[Command], now: float
) -> list[object]:
    """``execute_plan``; if it fails for a command's fault, the batch's
    commands are isolated (``_isolate.isolate``), in the same call, before
    anything after it is written, and the plan is abandoned: the plans
    decided meanwhile, on rows that knew nothing of what the isolation
    wrote, are decided again when they are executed."""
    try:
        return planner.execute_plan(plan, commands, now)
    except Exception as exc:
        if not backend.blames_command(exc):
            raise
        try:
            return isolate(backend, commands, now, exc)
        finally:
            planner.abandon(plan)


class ThreadRunner:
    """A ``WriteRunner`` on the worker thread (see the module docstring)."""

    def __init__(self, backend: Applies, planner: Plans | None = None) -> None:
        self._backend = backend
        self._planner = planner
        self._worker = _Worker()

    async def apply(self, commands: Sequence[Command], now: float) -> list[object]:
        job = functools.partial(apply_isolating, self._backend, commands, now)
        return await self._worker.submit(job).result()

    async def send_plan(self, plan: Any, commands: Sequence[Command], now: float) -> _Writing:
        assert self._planner is not None, "a planning backend passes itself as planner"
        job = functools.partial(
            execute_isolating, self._backend, self._planner, plan, commands, now
        )
        return self._worker.submit(job)


class _Written:
    """A plan written already (inline)."""

    __slots__ = ("_outcomes",)

    def __init__(self, outcomes: list[object]) -> None:
        self._outcomes = outcomes

    async def result(self) -> list[object]:
        return self._outcomes


class InlineRunner:
    """A ``WriteRunner`` that writes in trio's thread, at once."""

    def __init__(self, backend: Applies, planner: Plans | None = None) -> None:
        self._backend = backend
        self._planner = planner

    async def apply(self, commands: Sequence[Command], now: float) -> list[object]:
        return apply_isolating(self._backend, commands, now)

    async def send_plan(self, plan: Any, commands: Sequence[Command], now: float) -> _Written:
        assert self._planner is not None, "a planning backend passes itself as planner"
        return _Written(execute_isolating(self._backend, self._planner, plan, commands, now))


@asynccontextmanager
async def open_thread_runner(
    backend: Applies, planner: Plans | None = None
) -> AsyncIterator[ThreadRunner]:
    """Writes in a worker thread (the default of a blocking backend; a
    planning backend passes itself as ``planner``)."""
    yield ThreadRunner(backend, planner)


@asynccontextmanager
async def open_inline_runner(
    backend: Applies, planner: Plans | None = None
) -> AsyncIterator[InlineRunner]:
    """Writes inline in trio (a backend that does not block)."""
    yield InlineRunner(backend, planner)
