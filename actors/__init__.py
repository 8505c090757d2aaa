"""taskactors: a durable actor runtime for long-running tasks, built on trio."""

from storage import TaskState as TaskState

from ._app import App as App
from ._app import TaskSpec as TaskSpec
from ._auth import TokensError as TokensError
from ._auth import load_tokens as load_tokens
from ._client import Client as Client
from ._client import ClientError as ClientError
from ._client import open_client as open_client
from ._context import TaskContext as TaskContext
from ._context import TaskData as TaskData
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
from ._events import AllEventsStream as AllEventsStream
from ._events import EventStream as EventStream
from ._info import TaskEvent as TaskEvent
from ._info import TaskInfo as TaskInfo
from ._lifecycle import Strategy as Strategy
from ._messages import Request as Request
from ._messages import Signal as Signal
from ._runtime import Runtime as Runtime
from ._runtime import open_runtime as open_runtime
from ._server import serve_websocket as serve_websocket

__all__ = [
    "ActorStoppedError",
    "ActorsError",
    "AllEventsStream",
    "App",
    "Client",
    "ClientError",
    "EventStream",
    "HeartbeatTimeoutError",
    "InvalidTransition",
    "NonDeterminismError",
    "NotCancelable",
    "OwnershipLostError",
    "Request",
    "RequestRejected",
    "Runtime",
    "RuntimeClosedError",
    "Signal",
    "Strategy",
    "SubscriptionLagged",
    "TaskCancelled",
    "TaskContext",
    "TaskData",
    "TaskEvent",
    "TaskExists",
    "TaskFailed",
    "TaskInfo",
    "TaskNotFound",
    "TaskOwnedElsewhere",
    "TaskSpec",
    "TaskState",
    "TaskTimeoutError",
    "TokensError",
    "UnknownTaskName",
    "load_tokens",
    "open_client",
    "open_runtime",
    "serve_websocket",
]
