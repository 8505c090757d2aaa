"""Errors raised by the storage layer.

::

    StorageError
    ├── StaleEpochError        a fenced write from an owner that lost the task
    ├── ConflictError          a compare-and-set on a task's state failed
    ├── RecordNotFoundError    the command names a task that does not exist
    ├── StorageClosedError     the storage actor is closed (or died)
    ├── BackendUnavailableError the backend cannot be reached or opened
    ├── InvalidWriteError      a command the backend cannot apply (also a ValueError)
    ├── CorruptStoreError      the database is not a taskactors store / is damaged
    └── SchemaVersionError     the database was made by a newer taskactors
"""

from __future__ import annotations


class StorageError(Exception):
    """Base class of every storage error."""

    def __reduce__(self) -> tuple[object, ...]:
        # Pickled as what it is, whatever its __init__ takes (the SQLite
        # writer process sends the errors of the writes it refused).
        # Its cause goes along (the driver's error a caller may inspect).
        return (_rebuild, (type(self), self.args, self.__dict__ or None, self.__cause__))


def _rebuild(
    cls: type[StorageError],
    args: tuple[object, ...],
    state: dict[str, object] | None,
    cause: BaseException | None = None,
) -> StorageError:
    error = cls.__new__(cls)
    error.args = args
    if state:
        error.__dict__.update(state)
    error.__cause__ = cause
    return error


class StaleEpochError(StorageError):
    """A write carried an epoch (or owner) that no longer owns the task."""

    def __init__(self, task_id: str, epoch: int, current_epoch: int) -> None:
        super().__init__(
            f"write for task {task_id} refused: epoch {epoch} is stale "
            f"(the task is at epoch {current_epoch})"
        )
        self.task_id = task_id
        self.epoch = epoch
        self.current_epoch = current_epoch


class ConflictError(StorageError):
    """A compare-and-set on a task's state found another state."""

    def __init__(self, task_id: str, expected: frozenset[str], actual: str) -> None:
        want = "|".join(sorted(expected))
        super().__init__(f"task {task_id} is {actual}, expected {want}")
        self.task_id = task_id
        self.expected = expected
        self.actual = actual


class RecordNotFoundError(StorageError):
    """The command names a task that does not exist."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"no task {task_id!r} in the store")
        self.task_id = task_id


class StorageClosedError(StorageError):
    """The storage actor is closed, or stopped because its backend broke."""


class BackendUnavailableError(StorageError):
    """The backend cannot be opened or reached."""


class InvalidWriteError(StorageError, ValueError):
    """A command that cannot be applied: its own fault, not the store's.

    A value the backend cannot encode (a string that is not valid Unicode, an
    integer out of range, a value of the wrong type...) or that its driver
    refuses for this command alone. The command changed nothing; the other
    writes of its batch are applied (issue #17). Retrying it fails again.
    The backend's error is the ``__cause__``.
    """

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"{kind} write refused: the store cannot apply it ({reason})")
        #: The command's class name (``CreateTask``, ``TaskWrite``...).
        self.kind = kind


class CorruptStoreError(StorageError):
    """The database is damaged or is not a taskactors store."""


class SchemaVersionError(StorageError):
    """The database schema is newer than this version of taskactors knows."""


class LeaseHeldError(StorageError):
    """A claim found the task owned by another node whose lease still holds."""

    def __init__(self, task_id: str, owner: str, lease_expires: float) -> None:
        super().__init__(f"task {task_id} is owned by node {owner!r} until {lease_expires:.3f}")
        self.task_id = task_id
        self.owner = owner
        self.lease_expires = lease_expires
