"""taskactors: a durable actor runtime for long-running tasks, built on trio."""

import importlib
from typing import TYPE_CHECKING, Any

from storage import InvalidValueError as InvalidValueError
from storage import TaskState as TaskState

from .core._auth import TokensError as TokensError
from .core._auth import load_tokens as load_tokens
from .core._errors import ActorsError as ActorsError
from .core._errors import ActorStoppedError as ActorStoppedError
from .core._errors import HeartbeatTimeoutError as HeartbeatTimeoutError
from .core._errors import InvalidTransition as InvalidTransition
from .core._errors import NonDeterminismError as NonDeterminismError
from .core._errors import NotCancelable as NotCancelable
from .core._errors import OwnershipLostError as OwnershipLostError
from .core._errors import RequestRejected as RequestRejected
from .core._errors import RuntimeClosedError as RuntimeClosedError
from .core._errors import SubscriptionLagged as SubscriptionLagged
from .core._errors import TaskCancelled as TaskCancelled
from .core._errors import TaskExists as TaskExists
from .core._errors import TaskFailed as TaskFailed
from .core._errors import TaskNotFound as TaskNotFound
from .core._errors import TaskOwnedElsewhere as TaskOwnedElsewhere
from .core._errors import TaskTimeoutError as TaskTimeoutError
from .core._errors import UnknownTaskName as UnknownTaskName
from .core._info import TaskEvent as TaskEvent
from .core._info import TaskInfo as TaskInfo
from .core._lifecycle import Strategy as Strategy
from .core._messages import Request as Request
from .core._messages import Signal as Signal
from .runtime._app import App as App
from .runtime._app import TaskSpec as TaskSpec
from .runtime._context import TaskContext as TaskContext
from .runtime._context import TaskData as TaskData
from .runtime._events import AllEventsStream as AllEventsStream
from .runtime._events import EventStream as EventStream
from .runtime._runtime import Runtime as Runtime
from .runtime._runtime import open_runtime as open_runtime

if TYPE_CHECKING:
    from .client._client import Client as Client
    from .client._client import ClientError as ClientError
    from .client._client import open_client as open_client
    from .server._server import serve_websocket as serve_websocket

#: Names whose modules load the websocket stack (trio_websocket, wsproto, ssl):
#: imported on first use, so that ``import actors`` stays light for an app
#: that only embeds the runtime (issue #18).
_LAZY = {
    "Client": "actors.client",
    "ClientError": "actors.client",
    "open_client": "actors.client",
    "serve_websocket": "actors.server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


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
    "InvalidValueError",
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
