"""The hot-path shortcuts of the runtime, each behind one small named helper.

The runtime writes a few events and journal entries for every step of every
task (10,000 3-step tasks a second, issue #5), so a handful of things are
done by hand here rather than the general way. Each says why; everything
else in the package uses these names and never repeats the trick.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable
from typing import Any, Final

from storage import TaskState, encode, quote

# -- journal entries -----------------------------------------------------------

#: A journal entry as a task actor keeps it: (kind, name, value, run), the
#: value as JSON text; read with the positions below. A plain tuple of
#: strings and an int: the collector stops tracking it at its first pass,
#: where a named tuple stays tracked as long as the actor lives (an actor
#: holds one per durable call; issue #5).
Entry = tuple[str, str, str, int]
KIND: Final = 0
NAME: Final = 1
VALUE: Final = 2
RUN: Final = 3

#: Journal kind of the marker left where a run was suspended (pause, ask): a
#: later run replays quietly up to it (emit/progress are not repeated).
MARK: Final = "mark"


# -- state sets and lookups ----------------------------------------------------

#: The one-state sets a write expects, made once: each write expects one,
#: and a frozenset made per write would be one more object per write.
ONLY: Final = {state: frozenset({state}) for state in TaskState}
RUNNING: Final = ONLY[TaskState.RUNNING]

#: A state's value -> the state (a lookup, where TaskState(value) is a call).
STATES: Final = {state.value: state for state in TaskState}


# -- the runtime's own event data, as JSON text --------------------------------
# Hand-built: the runtime's own events have a fixed shape, and the encoder
# costs more than an f-string (they are written for every step and move).


def state_data(old: TaskState, new: TaskState, data: dict[str, Any] | None) -> str:
    """The data of a ``state`` event: {"from", "to", **data}."""
    head = f'{{"from":"{old.value}","to":"{new.value}"'
    return f"{head},{encode(data)[1:]}" if data else head + "}"


def step_data(name: str, index: int) -> str:
    """The data of ``step_started`` and ``step_completed``: {"name", "index"}."""
    return f'{{"name":{quote(name)},"index":{index}}}'


def pending_data(name: str) -> str:
    """The data of a new task's first ``state`` event: {"to": "pending", "name"}."""
    return f'{{"to":"pending","name":{quote(name)}}}'


# -- step results and bodies ---------------------------------------------------

#: Types whose value is its own JSON round trip: a step returns its value
#: as it is, without decoding the text it stored.
EXACT_JSON: Final = frozenset({str, int, float, bool, type(None)})


def is_async(fn: Callable[..., Any]) -> bool:
    """Whether calling ``fn`` makes a coroutine to await."""
    if type(fn) is types.FunctionType:  # the usual case, without inspect's unwrapping
        return bool(fn.__code__.co_flags & inspect.CO_COROUTINE)
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004
    )
