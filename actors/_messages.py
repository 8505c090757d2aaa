"""Messages a task actor handles, the public Request/Signal, and the Reply slot."""

from __future__ import annotations

import enum
from typing import Any

import attrs
import trio


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


@attrs.frozen
class SendSignal:
    """A control signal for the task (rt.signal)."""

    signal: Signal


@attrs.frozen
class CancelTask:
    """Cancel the task (rt.cancel)."""

    reason: str | None = None


#: A message a caller hands to a task actor (see ``ActorLock``).
Message = SendInput | SendSignal | CancelTask
