"""The SQLite writer in a process of its own (the default for a file store).

Why a process
-------------
The ``sqlite3`` module lets go of the GIL while SQLite works and takes it
back after each statement. A writer *thread* beside a busy trio thread waits
for the GIL each time: CPython hands it over only after the switch interval
(5 ms) has passed. Measured on scenario a of ``bench/`` (issue #5): the
writer thread was busy the whole run, 60% of it waiting for the GIL, while
trio sat idle a third of the time waiting for the writer. A child process
has a GIL of its own: trio talks to it over two pipes, which trio polls like
any socket, and neither side ever waits for the other's interpreter.

What crosses the pipes
----------------------
Frames of ``<length: 4 bytes little endian><kind: 1 byte><body>``, in order;
the child answers each frame with one reply, in order.

- ``PLAN``: the rows a plan decided in trio (``SQLiteBackend.plan``): the
  tasks to insert, update and touch, the events, journal entries, results
  and usage rows, as ``marshal`` data (a list of str, int, float and None a
  table, its rows laid end to end: the fastest codec there is for them, and
  both ends are the same Python). The child writes them in one transaction
  with the statements the thread would use (``WriteBatch.write_flat_rows``), and
  replies ``OK``. If another connection wrote since its last batch, or a
  "new" task existed after all, it rolls back and replies ``STALE``; from
  then on it refuses every ``PLAN`` (they were decided on the same rows)
  until a ``RESUME``.
- ``APPLY``: commands to apply the long way (``SQLiteBackend.apply`` in the
  child: decided on rows read in the transaction), as ``pickle`` data; the
  reply carries the outcomes, the rows the batch left (the parent keeps
  them, so that the next writes of those tasks can be planned again) and
  whether another connection had written. Used for a batch that cannot be
  planned, and for each plan the child refused (in order: a refused plan is
  applied before any later one).
- ``RESUME``: the parent has applied every refused plan; plans are accepted
  again.

The parent never writes to the database while the child lives: the child's
``PRAGMA data_version`` then means what it means for the thread, another
process wrote. The child ignores SIGINT (Ctrl-C reaches the whole process
group; the parent closes the store properly, then the child's stdin) and
exits when its stdin closes; if the parent dies, the closed pipe ends the
child too. If the child dies, the writes it had not answered fail with
``BackendUnavailableError`` naming its exit code (each may or may not be in
the store: the parent forgets the rows it held, and reads them again), and
a new child takes over; a child that dies as soon as it starts, three times
in a row, is given up, and every later write fails saying so.
"""

from __future__ import annotations

import collections
import logging
import marshal
import os
import pickle
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol

import trio

from .._backend import WriteRunner
from .._isolate import invalid_write
from .._worker import open_thread_runner
from ..model._errors import (
    BackendUnavailableError,
    InvalidWriteError,
    StorageClosedError,
    StorageError,
)
from ._pipe import _HEADER, APPLY, FAILED, OK, PLAN, RESUME, _frame

if TYPE_CHECKING:
    from ..model._commands import Command
    from ._commands import WriteBatch

log = logging.getLogger("taskactors.storage")
#: Seconds a cancelled store still waits for the answers to frames it sent.
_HEAR_OUT = 30.0
#: A child that dies this many times in a row, each within ``_QUICK_DEATH``
#: seconds of its start, is not started again (it cannot open the file...).
_QUICK_DEATHS = 3
_QUICK_DEATH = 2.0
#: The folder holding the ``storage`` package: the child imports it from there.
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class WriterHost(Protocol):
    """What the parent's end needs of its backend (``SQLiteBackend`` has
    it): the rows the parent holds to plan on, and, if no process can be
    started, what the worker thread needs to write instead."""

    def child_args(self) -> list[str]:
        """The arguments of ``python -m storage.sqlite._child``."""
        ...

    def plan_is_current(self, batch: WriteBatch) -> bool: ...

    def plan_rows(self, batch: WriteBatch) -> tuple[list[Any], ...]: ...

    def plan_written(self, batch: WriteBatch) -> None: ...

    def rows_applied(
        self, commands: Sequence[Command], rows: dict[str, list[Any]], forget_all: bool
    ) -> None: ...

    def forget_rows(self) -> None: ...

    def abandon(self, batch: WriteBatch) -> None: ...

    def blames_command(self, error: Exception) -> bool: ...

    def apply(self, commands: Sequence[Command], now: float) -> list[object]: ...

    def execute_plan(
        self, batch: WriteBatch, commands: Sequence[Command], now: float
    ) -> list[object]: ...


# -- the parent ------------------------------------------------------------------
class _Reply:
    """The answer to one frame, when it comes."""

    __slots__ = ("_done", "body", "kind")

    def __init__(self) -> None:
        self._done = trio.Event()
        self.kind = b""
        self.body = b""

    def fail(self, error: StorageError) -> None:
        self.kind, self.body = FAILED, pickle.dumps(error)
        self._done.set()

    async def wait(self) -> None:
        # Not interruptible: the child goes on with the frame anyway, and its
        # writers must learn the truth.
        with trio.CancelScope(shield=True):
            await self._done.wait()


class WriterProcess:
    """The parent's end: sends frames, matches replies, replays refused plans.

    Made by ``open_writer_process``; used by the storage actor alone (one
    task decides and sends plans, one answers them; see ``StorageActor``).
    """

    def __init__(self, backend: WriterHost, process: trio.Process) -> None:
        self._backend = backend
        self._adopt(process)
        #: Deaths in a row, each within ``_QUICK_DEATH`` s of its start.
        self._quick_deaths = 0
        #: Set when the store closes the child's stdin: its end is no death.
        self._closing = False
        self._send_lock = trio.Lock()
        self._replies: collections.deque[_Reply] = collections.deque()
        #: PLAN frames sent and not answered yet.
        self._plans_in_flight = 0
        #: Set while refused plans are being applied the long way: no plan is
        #: sent meanwhile (it would be refused, and written after them).
        self._draining: trio.Event | None = None
        self._broken: StorageError | None = None

    def _adopt(self, process: trio.Process) -> None:
        assert process.stdin is not None and process.stdout is not None
        self._process = process
        self._stdin = process.stdin
        self._stdout = process.stdout
        self._started = time.monotonic()

    # -- sending -----------------------------------------------------------
    async def _send(self, kind: bytes, body: bytes, reply: bool = True) -> _Reply:
        """Send a frame; its reply to come (one that failed already if the
        child is gone: a write fails, the storage actor goes on)."""
        answer = _Reply()
        if self._broken is None:
            async with self._send_lock:
                # (again: the reader may have ended while this waited)
                if self._broken is None:
                    if reply:
                        self._replies.append(answer)
                    try:
                        # Whole frames only: a frame cut short would garble the stream.
                        with trio.CancelScope(shield=True):
                            await self._stdin.send_all(_frame(kind, body))
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass  # the child is gone: the reader fails this write, then restarts it
        if self._broken is not None and not answer._done.is_set():
            # Never sent (or its answer failed with the rest): not written.
            answer.fail(self._broken)
        return answer

    def _fail(self, reason: str, *, closed: bool = False) -> None:
        """Fail every write waiting for an answer, and every later one."""
        if self._broken is None:
            self._broken = StorageClosedError(reason) if closed else BackendUnavailableError(reason)
        self._fail_replies(self._broken)

    def _fail_replies(self, error: StorageError) -> None:
        self._backend.forget_rows()  # (what the child wrote last is unknown)
        while self._replies:
            self._replies.popleft().fail(error)

    async def _restart(self) -> bool:
        """The child is gone: fail the writes it did not answer, start
        another. False (every write fails from now on) if none starts, or if
        the children keep dying as soon as they start."""
        async with self._send_lock:  # no frame goes to the dead child meanwhile
            code = await self._process.wait()
            self._fail_replies(_unanswered(code))
            quick = time.monotonic() - self._started < _QUICK_DEATH
            self._quick_deaths = self._quick_deaths + 1 if quick else 0
            if self._quick_deaths >= _QUICK_DEATHS:
                self._fail(
                    f"the SQLite writer process exited (code {code}), {self._quick_deaths} times "
                    "in a row as soon as it started: writes fail until the store is opened again"
                )
                return False
            with trio.CancelScope(shield=True):  # (a child started is a child adopted)
                try:
                    process = await _spawn(self._backend)
                except OSError as exc:
                    self._fail(f"the SQLite writer process exited (code {code}): {exc}")
                    return False
                await self._stdin.aclose()
                self._adopt(process)
        log.warning("the SQLite writer process exited (code %s); a new one took over", code)
        return True

    async def read_replies(self) -> None:
        """Match the child's replies to the frames sent, in order, until the
        child's stdout closes. Cancelled with frames unanswered, it goes on
        until they are answered (shielded, for at most ``_HEAR_OUT``
        seconds): the child writes them anyway, and their writers, who wait
        for the truth, must learn it."""
        buffer = bytearray()
        try:
            while (
                await self._read(buffer, until_answered=False)
                and not self._closing
                and await self._restart()
            ):
                buffer = bytearray()
        finally:
            if self._replies and self._broken is None:
                with trio.CancelScope(shield=True), trio.move_on_after(_HEAR_OUT):
                    await self._read(buffer, until_answered=True)
            if self._replies:
                self._fail("the SQLite writer process did not answer in time")
            # No one reads replies from here on: a frame sent now would wait
            # for its answer forever, so none is sent (its write fails).
            self._fail("the store closed before this write reached its writer process", closed=True)

    async def _read(self, buffer: bytearray, *, until_answered: bool) -> bool:
        """Read replies (until none is awaited, if ``until_answered``); True
        if the child's stdout closed (the child is gone)."""
        while not (until_answered and not self._replies):
            try:
                data = await self._stdout.receive_some(1 << 20)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                if until_answered:
                    self._fail_replies(_unanswered(await self._process.wait()))
                return True
            buffer += data
            while len(buffer) >= _HEADER:
                size = int.from_bytes(buffer[:_HEADER], "little")
                if len(buffer) < _HEADER + size:
                    break
                body = bytes(buffer[_HEADER : _HEADER + size])
                del buffer[: _HEADER + size]
                if not self._replies:
                    self._fail("the SQLite writer process answered a frame never sent")
                    return False
                reply = self._replies.popleft()
                reply.kind, reply.body = body[:1], body[1:]
                reply._done.set()
        return False

    # -- the storage actor's calls -------------------------------------------
    async def send_plan(
        self, plan: WriteBatch, commands: Sequence[Command], now: float
    ) -> SentPlan:
        """Send a decided plan (the deciding task); ``finish`` it in order (the
        committing task). A plan decided on rows forgotten since goes the long
        way instead, in its place."""
        while self._draining is not None:
            await self._draining.wait()
        backend = self._backend
        if not backend.plan_is_current(plan):
            backend.abandon(plan)
            reply = await self._send(APPLY, _apply_body(commands, now))
            return SentPlan(self, plan, commands, now, reply)
        # Counted before it is sent: a refusal being answered meanwhile must
        # not end its drain (and resume plans) before this one is answered.
        self._plans_in_flight += 1
        try:
            reply = await self._send(PLAN, marshal.dumps(backend.plan_rows(plan)))
        except BaseException:  # cancelled before it was sent
            self._plans_in_flight -= 1
            raise
        return SentPlan(self, plan, commands, now, reply, planned=True)

    async def finish(self, sent: SentPlan) -> list[object]:
        """The outcomes of a plan sent: its own if the child wrote it, else
        those of applying its commands the long way (after it, in order)."""
        reply = sent.reply
        await reply.wait()
        if not sent.planned:
            return self._applied(reply, sent.commands)
        self._plans_in_flight -= 1
        if reply.kind == OK:
            self._backend.plan_written(sent.plan)
            return sent.plan.outcomes
        # Refused (stale) or failed: the child refuses every plan sent after
        # it, and this task applies each the long way; none is sent meanwhile.
        if self._draining is None:
            self._draining = trio.Event()
        self._backend.forget_rows()
        try:
            if reply.kind == FAILED:
                error = pickle.loads(reply.body)
                assert isinstance(error, BaseException)
                if not isinstance(error, InvalidWriteError):
                    raise error
                # A command's fault (issue #17): the long way isolates it.
            return await self.apply(sent.commands, sent.now)
        finally:
            await self._resume_if_drained()

    async def _resume_if_drained(self) -> None:
        if self._draining is not None and self._plans_in_flight == 0:
            draining, self._draining = self._draining, None
            try:
                await self._send(RESUME, b"", reply=False)
            finally:
                draining.set()

    async def apply(self, commands: Sequence[Command], now: float) -> list[object]:
        """Apply commands the long way, in the child, which isolates a
        command at fault (issue #17); their outcomes."""
        try:
            body = _apply_body(commands, now)
        except Exception as exc:
            if not self._backend.blames_command(exc):
                raise
            return await self._apply_crossing(commands, now)
        reply = await self._send(APPLY, body)
        await reply.wait()
        return self._applied(reply, commands)

    async def _apply_crossing(self, commands: Sequence[Command], now: float) -> list[object]:
        """Apply the commands that can cross to the child (pickle); the
        others fail alone with InvalidWriteError, applied nowhere."""
        outcomes: list[object] = [None] * len(commands)
        crossing: list[int] = []
        for index, command in enumerate(commands):
            try:
                pickle.dumps(command, pickle.HIGHEST_PROTOCOL)
            except Exception as exc:
                outcomes[index] = invalid_write(command, exc)
            else:
                crossing.append(index)
        if crossing:
            applied = await self.apply([commands[index] for index in crossing], now)
            for index, outcome in zip(crossing, applied, strict=True):
                outcomes[index] = outcome
        return outcomes

    def _applied(self, reply: _Reply, commands: Sequence[Command]) -> list[object]:
        result = pickle.loads(reply.body)
        if isinstance(result, BaseException):
            self._backend.forget_rows()
            raise result
        outcomes, rows, forget_all = result
        self._backend.rows_applied(commands, rows, forget_all)
        return list(outcomes)


class SentPlan:
    """A plan on its way (see ``WriterProcess.send_plan``); await
    ``result()`` for its outcomes (``WriterProcess.finish``)."""

    __slots__ = ("commands", "now", "plan", "planned", "reply", "writer")

    def __init__(
        self,
        writer: WriterProcess,
        plan: WriteBatch,
        commands: Sequence[Command],
        now: float,
        reply: _Reply,
        planned: bool = False,
    ) -> None:
        self.plan = plan
        self.commands = commands
        self.now = now
        self.reply = reply
        #: False: sent as its commands, to apply the long way.
        self.planned = planned
        self.writer = writer

    async def result(self) -> list[object]:
        return await self.writer.finish(self)


def _unanswered(code: int) -> BackendUnavailableError:
    """What a write the dead child did not answer fails with."""
    return BackendUnavailableError(
        f"the SQLite writer process exited (code {code}) before answering: "
        "this write may or may not be in the store"
    )


def _apply_body(commands: Sequence[Command], now: float) -> bytes:
    return pickle.dumps((list(commands), now), pickle.HIGHEST_PROTOCOL)


@asynccontextmanager
async def open_writer_process(backend: WriterHost) -> AsyncIterator[WriteRunner]:
    """Start the child for an open backend; on exit, close its stdin and
    wait until it has written everything sent and ended. If no process can
    be started: a warning, and the worker thread's runner instead."""
    try:
        process = await _spawn(backend)
    except OSError as exc:
        log.warning("cannot start the SQLite writer process (%s): writing from a thread", exc)
        async with open_thread_runner(backend, backend) as runner:
            yield runner
        return
    writer = WriterProcess(backend, process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.read_replies)
            try:
                yield writer
            finally:
                with trio.CancelScope(shield=True):
                    writer._closing = True
                    await writer._stdin.aclose()
                    with trio.move_on_after(30):
                        await writer._process.wait()
                    if writer._process.returncode is None:
                        writer._process.kill()
                        await writer._process.wait()
    finally:
        if writer._process.returncode is None:
            writer._process.kill()


async def _spawn(backend: WriterHost) -> trio.Process:
    """Start a child for the backend. Raises OSError."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [_PACKAGE_ROOT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    return await trio.lowlevel.open_process(
        [sys.executable, "-m", "storage.sqlite._child", *backend.child_args()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
