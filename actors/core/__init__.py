"""The sans-IO core: the task lifecycle, messages, errors, task info, tokens and the
websocket protocol's names (``_wire``). No trio, no I/O."""

from ._auth import TokensError as TokensError
from ._auth import bearer_token as bearer_token
from ._auth import describe_auth as describe_auth
from ._auth import load_tokens as load_tokens
from ._auth import user_for_token as user_for_token
from ._errors import ActorsError as ActorsError
from ._errors import ActorStoppedError as ActorStoppedError
from ._errors import HeartbeatTimeoutError as HeartbeatTimeoutError
from ._errors import InvalidTransition as InvalidTransition
from ._errors import NonDeterminismError as NonDeterminismError
from ._errors import NotCancelable as NotCancelable
from ._errors import OwnershipLostError as OwnershipLostError
from ._errors import RequestRejected as RequestRejected
from ._errors import RuntimeClosedError as RuntimeClosedError
from ._errors import SubscriptionLagged as SubscriptionLagged
from ._errors import TaskCancelled as TaskCancelled
from ._errors import TaskExists as TaskExists
from ._errors import TaskFailed as TaskFailed
from ._errors import TaskNotFound as TaskNotFound
from ._errors import TaskOwnedElsewhere as TaskOwnedElsewhere
from ._errors import TaskTimeoutError as TaskTimeoutError
from ._errors import UnknownTaskName as UnknownTaskName
from ._info import TaskEvent as TaskEvent
from ._info import TaskInfo as TaskInfo
from ._lifecycle import Command as Command
from ._lifecycle import RequestAction as RequestAction
from ._lifecycle import Strategy as Strategy
from ._lifecycle import is_noop as is_noop
from ._lifecycle import on_request as on_request
from ._lifecycle import transition as transition
from ._messages import CancelTask as CancelTask
from ._messages import Request as Request
from ._messages import SendInput as SendInput
from ._messages import SendSignal as SendSignal
from ._messages import Signal as Signal
from ._wire import ErrorCode as ErrorCode
from ._wire import FrameKind as FrameKind
from ._wire import Op as Op

__all__ = [
    "ActorStoppedError",
    "ActorsError",
    "CancelTask",
    "Command",
    "ErrorCode",
    "FrameKind",
    "HeartbeatTimeoutError",
    "InvalidTransition",
    "NonDeterminismError",
    "NotCancelable",
    "Op",
    "OwnershipLostError",
    "Request",
    "RequestAction",
    "RequestRejected",
    "RuntimeClosedError",
    "SendInput",
    "SendSignal",
    "Signal",
    "Strategy",
    "SubscriptionLagged",
    "TaskCancelled",
    "TaskEvent",
    "TaskExists",
    "TaskFailed",
    "TaskInfo",
    "TaskNotFound",
    "TaskOwnedElsewhere",
    "TaskTimeoutError",
    "TokensError",
    "UnknownTaskName",
    "bearer_token",
    "describe_auth",
    "is_noop",
    "load_tokens",
    "on_request",
    "transition",
    "user_for_token",
]
