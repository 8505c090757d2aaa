"""Errors raised by the runtime.

::

    ActorsError
    ├── TaskNotFound            unknown id, or a task of another user
    ├── UnknownTaskName         submit names no registered handler
    ├── InvalidTransition       the lifecycle refuses the message in this state
    │   ├── NotCancelable       cancel of a completed, failed or rejected task
    │   └── RequestRejected     a Request refused by the task's "reject" strategy
    ├── TaskFailed              rt.result of a failed task (type, message, traceback)
    │   └── TaskTimeoutError    (stored) the task ran past its timeout
    ├── TaskCancelled           rt.result of a cancelled task
    ├── NonDeterminismError     a replay asked for journal entries in another order
    ├── HeartbeatTimeoutError   a run gave no sign of life within heartbeat_timeout
    ├── ActorStoppedError       the actor stopped before answering (pykka's pending asks)
    ├── OwnershipLostError      another node took the task over (fencing)
    ├── SubscriptionLagged      a subscriber fell too far behind; resume after .resume_after
    └── RuntimeClosedError      the runtime is closing or closed
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from storage import ExceptionRecord


class ActorsError(Exception):
    """Base class of every runtime error."""


class TaskNotFound(ActorsError, LookupError):
    """No such task (or it belongs to another user: the two read the same)."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id!r} not found")
        self.task_id = task_id


class UnknownTaskName(ActorsError, LookupError):
    """No handler is registered under this name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no task handler named {name!r} is registered")
        self.name = name


class InvalidTransition(ActorsError):
    """The lifecycle refuses ``command`` in ``state``; nothing changed."""

    def __init__(self, command: str, state: str, task_id: str | None = None, why: str = "") -> None:
        who = f"task {task_id}" if task_id else "a task"
        text = f"cannot {command} {who} in state {state}"
        super().__init__(f"{text}: {why}" if why else text)
        self.command = command
        self.state = state
        self.task_id = task_id


class NotCancelable(InvalidTransition):
    """Cancel of a task that already finished (completed, failed or rejected)."""


class RequestRejected(InvalidTransition):
    """A Request refused because the task is busy and its strategy is "reject"."""


class TaskFailed(ActorsError):
    """The task failed; carries what was stored of the original exception."""

    def __init__(
        self,
        task_id: str,
        type_name: str,
        message: str,
        traceback: str = "",
        retryable: bool = False,
    ) -> None:
        super().__init__(f"task {task_id} failed: {type_name}: {message}")
        self.task_id = task_id
        self.type_name = type_name
        self.message = message
        self.traceback = traceback
        self.retryable = retryable

    @classmethod
    def from_record(cls, task_id: str, record: ExceptionRecord) -> TaskFailed:
        """The error for a stored exception record."""
        return cls(task_id, record.type, record.message, record.traceback, record.retryable)


class TaskTimeoutError(ActorsError):
    """The task ran longer than its ``timeout`` (stored as the task's exception)."""


class TaskCancelled(ActorsError):
    """The task was cancelled."""

    def __init__(self, task_id: str, reason: str | None = None) -> None:
        text = f"task {task_id} was cancelled"
        super().__init__(f"{text}: {reason}" if reason else text)
        self.task_id = task_id
        self.reason = reason


class NonDeterminismError(ActorsError):
    """A replay asked for journal entries in another order than the recorded run."""


class HeartbeatTimeoutError(ActorsError):
    """The run gave no heartbeat within the task's heartbeat_timeout."""


class ActorStoppedError(ActorsError):
    """The task's actor stopped before it could answer."""


class OwnershipLostError(ActorsError):
    """Another node owns the task now; this node's actor for it stopped."""


class SubscriptionLagged(ActorsError):
    """The subscriber fell behind its buffer; subscribe again with after=resume_after."""

    def __init__(self, task_id: str | None, resume_after: int) -> None:
        super().__init__(f"subscriber lagged; resume with after={resume_after}")
        self.task_id = task_id
        self.resume_after = resume_after


class RuntimeClosedError(ActorsError):
    """The runtime is closing or closed."""


class TaskOwnedElsewhere(ActorsError):
    """Another live node runs this task; send the message through that node."""

    def __init__(self, task_id: str, owner: str) -> None:
        super().__init__(f"task {task_id} is run by node {owner!r}")
        self.task_id = task_id
        self.owner = owner


class TaskExists(ActorsError):
    """A submit named a task id that is taken by another user's task."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task id {task_id!r} is taken")
        self.task_id = task_id
