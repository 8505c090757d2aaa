"""A write that cannot be applied fails alone (issue #17); see ``_backend.py``.

Pure: no trio, no I/O of its own (it calls the backend's ``apply``). The
runners call it where they apply a batch (``_worker.py``, SQLite's writer
process), so a poisoned batch is isolated before the next batch is applied,
and every other write keeps its order.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Protocol

from .model._commands import Command, TaskWrite
from .model._errors import BackendUnavailableError, InvalidWriteError, StorageError

#: Errors that are the fault of the value a command carries, whatever the
#: backend: a string that cannot be encoded (UnicodeError), a number out of
#: range (OverflowError), a value of the wrong type for a binding
#: (TypeError, ValueError), a command that cannot cross to a writer
#: process (PickleError). (InvalidWriteError is a ValueError: a runner may
#: raise it for a batch to say "a command in it".)
COMMAND_FAULTS: tuple[type[Exception], ...] = (
    ValueError,
    TypeError,
    ArithmeticError,
    LookupError,
    pickle.PickleError,
)


def blames_command(error: Exception) -> bool:
    """The default ``Backend.blames_command``: one of ``COMMAND_FAULTS``.

    Everything else (OSError, a StorageError such as BackendUnavailableError,
    a driver's operational error) is the store's failure: the batch fails,
    and may be retried.
    """
    return isinstance(error, COMMAND_FAULTS)


class Applies(Protocol):
    """What isolating needs of a backend (``Backend`` has it)."""

    def apply(self, commands: Sequence[Command], now: float) -> list[object]: ...

    def blames_command(self, error: Exception) -> bool: ...


def command_kind(command: Command) -> str:
    """The name of a command's kind, as errors show it (a TaskDraft is a TaskWrite)."""
    return "TaskWrite" if isinstance(command, TaskWrite) else type(command).__name__


def invalid_write(command: Command, error: Exception) -> InvalidWriteError:
    """The outcome of a command that cannot be applied (``error`` its cause)."""
    refused = InvalidWriteError(command_kind(command), f"{type(error).__name__}: {error}")
    refused.__cause__ = error
    return refused


def apply_isolating(backend: Applies, commands: Sequence[Command], now: float) -> list[object]:
    """``backend.apply``, where a poisoned command fails alone (issue #17).

    If the batch raises an error the backend blames on a command, its
    commands are applied again in halves, each half in its own transaction,
    down to the commands at fault, whose outcome is ``InvalidWriteError``;
    the others are applied in order. A half that fails for the store's own
    fault meanwhile fails alone (``BackendUnavailableError``), after the
    halves before it committed.

    Raises:
        what ``apply`` raised, if the whole batch failed for the store.
    """
    try:
        return backend.apply(commands, now)
    except Exception as exc:
        if not backend.blames_command(exc):
            raise
        return isolate(backend, commands, now, exc)


def isolate(
    backend: Applies, commands: Sequence[Command], now: float, error: Exception
) -> list[object]:
    """The outcomes of a batch that failed with ``error``, a command's fault:
    see ``apply_isolating``. (One command: it is the one.)"""
    if len(commands) == 1:
        return [invalid_write(commands[0], error)]
    middle = len(commands) // 2
    outcomes: list[object] = []
    for part in (commands[:middle], commands[middle:]):
        try:
            outcomes.extend(apply_isolating(backend, part, now))
        except Exception as exc:  # the store failed meanwhile: this part is lost
            outcomes.extend([store_failure(exc, len(part))] * len(part))
    return outcomes


def store_failure(error: Exception, count: int) -> StorageError:
    """What each write of a batch that failed for the store fails with."""
    if isinstance(error, StorageError):
        return error
    failure = BackendUnavailableError(f"batch of {count} writes failed: {error!r}")
    failure.__cause__ = error
    return failure
