"""The trio driver: apps, task actors, their context, the runtime API and the event hub."""

from ._app import App as App
from ._app import TaskSpec as TaskSpec
from ._context import TaskContext as TaskContext
from ._context import TaskData as TaskData
from ._events import AllEventsStream as AllEventsStream
from ._events import EventStream as EventStream
from ._faults import CrashPoint as CrashPoint
from ._ids import default_node_id as default_node_id
from ._ids import new_task_id as new_task_id
from ._runtime import Runtime as Runtime
from ._runtime import open_runtime as open_runtime

__all__ = [
    "AllEventsStream",
    "App",
    "CrashPoint",
    "EventStream",
    "Runtime",
    "TaskContext",
    "TaskData",
    "TaskSpec",
    "default_node_id",
    "new_task_id",
    "open_runtime",
]
