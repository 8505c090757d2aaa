"""Messages a task actor handles, and the public Request and Signal."""

from __future__ import annotations

import enum
from typing import Any

import attrs


class Signal(enum.StrEnum):
    """Control signals (the interrupt backend's)."""

    # Hashed as its value, which it equals (Enum hashes the member's name).
    __hash__ = str.__hash__

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
