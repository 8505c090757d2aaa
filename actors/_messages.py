"""Messages a task actor takes from its mailbox, and the public Request/Signal."""

from __future__ import annotations

import enum
from typing import Any

import attrs
import trio

from ._errors import ActorStoppedError


class Signal(enum.Enum):
    """Control signals (the interrupt backend's)."""

    #: Abort the current request; the task stays open for the next Request.
    STOP = "stop"
    #: Suspend at the next safe point.
    PAUSE = "pause"
    #: Continue a paused task where it paused.
    RESUME = "resume"


@attrs.frozen
class Request:
    """The input of a handler run, as the handler receives it."""

    input: Any
    #: Run number: 1 for the submitted input, then one more per new run.
    run: int = 1


class Reply:
    """A one-shot answer slot: the actor resolves it, the caller waits on it.

    If the actor stops first, the caller gets ActorStoppedError (never a hang).
    """

    __slots__ = ("_done", "_error", "_value")

    def __init__(self) -> None:
        self._done = trio.Event()
        self._value: Any = None
        self._error: BaseException | None = None

    def resolve(self, value: Any = None) -> None:
        if not self._done.is_set():
            self._value = value
            self._done.set()

    def fail(self, error: BaseException) -> None:
        if not self._done.is_set():
            self._error = error
            self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    async def wait(self) -> Any:
        await self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value


@attrs.frozen
class SendInput:
    """A Request for the task (rt.send)."""

    input: Any
    reply: Reply = attrs.field(factory=Reply, eq=False)


@attrs.frozen
class SendSignal:
    signal: Signal
    reply: Reply = attrs.field(factory=Reply, eq=False)


@attrs.frozen
class CancelTask:
    reason: str | None = None
    reply: Reply = attrs.field(factory=Reply, eq=False)


@attrs.frozen
class RunEnded:
    """Internal: the handler run numbered ``run_token`` is over."""

    run_token: int


#: A message that a caller sends and waits on.
Ask = SendInput | SendSignal | CancelTask
Message = SendInput | SendSignal | CancelTask | RunEnded


def fail_message(message: Message, error: ActorStoppedError) -> None:
    """Answer a message the actor will never process."""
    if not isinstance(message, RunEnded):
        message.reply.fail(error)
