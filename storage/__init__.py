"""taskactors storage: storage actors and backends (memory, sqlite).

``storage`` never imports ``actors``: it keeps payloads as opaque JSON text.
"""

from ._backend import Backend as Backend
from ._clock import Clock as Clock
from ._clock import on_virtual_time as on_virtual_time
from ._open import backend_from_url as backend_from_url
from ._open import open as open
from .actor._pending import READY as READY
from .actor._pending import PendingWrite as PendingWrite
from .actor._pending import TaskDraft as TaskDraft
from .actor._store import Store as Store
from .actor._store import Subscription as Subscription
from .actor._store import exception_record as exception_record
from .actor._store import open_store as open_store
from .actor._writer import StorageActor as StorageActor
from .model._codec import converter as converter
from .model._codec import decode as decode
from .model._codec import encode as encode
from .model._codec import quote as quote
from .model._commands import ClaimTask as ClaimTask
from .model._commands import Command as Command
from .model._commands import CompareAndSetKeyState as CompareAndSetKeyState
from .model._commands import CreateResult as CreateResult
from .model._commands import CreateTask as CreateTask
from .model._commands import DeleteKeyState as DeleteKeyState
from .model._commands import JournalWrite as JournalWrite
from .model._commands import RegisterNode as RegisterNode
from .model._commands import ReleaseTasks as ReleaseTasks
from .model._commands import RemoveNode as RemoveNode
from .model._commands import RenewLeases as RenewLeases
from .model._commands import SetDeterministicValue as SetDeterministicValue
from .model._commands import SetKeyState as SetKeyState
from .model._commands import SetWorkflowData as SetWorkflowData
from .model._commands import TaskWrite as TaskWrite
from .model._commands import TaskWriteResult as TaskWriteResult
from .model._commands import UpdateStatus as UpdateStatus
from .model._errors import BackendUnavailableError as BackendUnavailableError
from .model._errors import ConflictError as ConflictError
from .model._errors import CorruptStoreError as CorruptStoreError
from .model._errors import InvalidWriteError as InvalidWriteError
from .model._errors import LeaseHeldError as LeaseHeldError
from .model._errors import RecordNotFoundError as RecordNotFoundError
from .model._errors import SchemaVersionError as SchemaVersionError
from .model._errors import StaleEpochError as StaleEpochError
from .model._errors import StorageClosedError as StorageClosedError
from .model._errors import StorageError as StorageError
from .model._records import ACTIVE_STATES as ACTIVE_STATES
from .model._records import INFLIGHT_STATES as INFLIGHT_STATES
from .model._records import TERMINAL_STATES as TERMINAL_STATES
from .model._records import EventLike as EventLike
from .model._records import ExceptionRecord as ExceptionRecord
from .model._records import InboxItem as InboxItem
from .model._records import JournalEntry as JournalEntry
from .model._records import NewEvent as NewEvent
from .model._records import NodeRecord as NodeRecord
from .model._records import StoredEvent as StoredEvent
from .model._records import TaskFilter as TaskFilter
from .model._records import TaskRecord as TaskRecord
from .model._records import TaskState as TaskState
from .model._records import UsageRecord as UsageRecord
from .model._validate import InvalidValueError as InvalidValueError

__all__ = [
    "ACTIVE_STATES",
    "INFLIGHT_STATES",
    "READY",
    "TERMINAL_STATES",
    "Backend",
    "BackendUnavailableError",
    "ClaimTask",
    "Clock",
    "Command",
    "CompareAndSetKeyState",
    "ConflictError",
    "CorruptStoreError",
    "CreateResult",
    "CreateTask",
    "DeleteKeyState",
    "ExceptionRecord",
    "InboxItem",
    "InvalidValueError",
    "InvalidWriteError",
    "JournalEntry",
    "JournalWrite",
    "LeaseHeldError",
    "NewEvent",
    "NodeRecord",
    "PendingWrite",
    "RecordNotFoundError",
    "RegisterNode",
    "ReleaseTasks",
    "RemoveNode",
    "RenewLeases",
    "SchemaVersionError",
    "SetDeterministicValue",
    "SetKeyState",
    "SetWorkflowData",
    "StaleEpochError",
    "StorageActor",
    "StorageClosedError",
    "StorageError",
    "Store",
    "StoredEvent",
    "Subscription",
    "TaskDraft",
    "TaskFilter",
    "TaskRecord",
    "TaskState",
    "TaskWrite",
    "TaskWriteResult",
    "UpdateStatus",
    "UsageRecord",
    "backend_from_url",
    "converter",
    "decode",
    "encode",
    "exception_record",
    "on_virtual_time",
    "open",
    "open_store",
]
