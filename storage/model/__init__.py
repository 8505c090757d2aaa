"""The pure storage model: records, commands, errors, the codec and the fence
decision. No trio, no I/O."""

from ._codec import converter as converter
from ._codec import decode as decode
from ._codec import encode as encode
from ._codec import quote as quote
from ._commands import ClaimTask as ClaimTask
from ._commands import Command as Command
from ._commands import CompareAndSetKeyState as CompareAndSetKeyState
from ._commands import CreateResult as CreateResult
from ._commands import CreateTask as CreateTask
from ._commands import DeleteKeyState as DeleteKeyState
from ._commands import JournalWrite as JournalWrite
from ._commands import RegisterNode as RegisterNode
from ._commands import ReleaseTasks as ReleaseTasks
from ._commands import RemoveNode as RemoveNode
from ._commands import RenewLeases as RenewLeases
from ._commands import SetDeterministicValue as SetDeterministicValue
from ._commands import SetKeyState as SetKeyState
from ._commands import SetWorkflowData as SetWorkflowData
from ._commands import TaskWrite as TaskWrite
from ._commands import TaskWriteResult as TaskWriteResult
from ._commands import UpdateStatus as UpdateStatus
from ._errors import BackendUnavailableError as BackendUnavailableError
from ._errors import ConflictError as ConflictError
from ._errors import CorruptStoreError as CorruptStoreError
from ._errors import InvalidWriteError as InvalidWriteError
from ._errors import LeaseHeldError as LeaseHeldError
from ._errors import RecordNotFoundError as RecordNotFoundError
from ._errors import SchemaVersionError as SchemaVersionError
from ._errors import StaleEpochError as StaleEpochError
from ._errors import StorageClosedError as StorageClosedError
from ._errors import StorageError as StorageError
from ._fence import claimable as claimable
from ._fence import decide_claim as decide_claim
from ._fence import decide_compare_and_set as decide_compare_and_set
from ._fence import decide_task_write as decide_task_write
from ._fence import key_expires_at as key_expires_at
from ._fence import key_state_alive as key_state_alive
from ._fence import lease_holds as lease_holds
from ._fence import owned_by as owned_by
from ._records import ACTIVE_STATES as ACTIVE_STATES
from ._records import INFLIGHT_STATES as INFLIGHT_STATES
from ._records import TERMINAL_STATES as TERMINAL_STATES
from ._records import EventLike as EventLike
from ._records import ExceptionRecord as ExceptionRecord
from ._records import InboxItem as InboxItem
from ._records import JournalEntry as JournalEntry
from ._records import NewEvent as NewEvent
from ._records import NodeRecord as NodeRecord
from ._records import StoredEvent as StoredEvent
from ._records import TaskFilter as TaskFilter
from ._records import TaskRecord as TaskRecord
from ._records import TaskState as TaskState
from ._records import UsageRecord as UsageRecord
from ._validate import MAX_INT as MAX_INT
from ._validate import MAX_JSON_DEPTH as MAX_JSON_DEPTH
from ._validate import MIN_INT as MIN_INT
from ._validate import InvalidValueError as InvalidValueError
from ._validate import check_int as check_int
from ._validate import check_json as check_json
from ._validate import check_text as check_text
from ._validate import storable_int as storable_int
from ._validate import storable_json as storable_json
from ._validate import storable_text as storable_text

__all__ = [
    "ACTIVE_STATES",
    "INFLIGHT_STATES",
    "MAX_INT",
    "MAX_JSON_DEPTH",
    "MIN_INT",
    "TERMINAL_STATES",
    "BackendUnavailableError",
    "ClaimTask",
    "Command",
    "CompareAndSetKeyState",
    "ConflictError",
    "CorruptStoreError",
    "CreateResult",
    "CreateTask",
    "DeleteKeyState",
    "EventLike",
    "ExceptionRecord",
    "InboxItem",
    "InvalidValueError",
    "InvalidWriteError",
    "JournalEntry",
    "JournalWrite",
    "LeaseHeldError",
    "NewEvent",
    "NodeRecord",
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
    "StorageClosedError",
    "StorageError",
    "StoredEvent",
    "TaskFilter",
    "TaskRecord",
    "TaskState",
    "TaskWrite",
    "TaskWriteResult",
    "UpdateStatus",
    "UsageRecord",
    "check_int",
    "check_json",
    "check_text",
    "claimable",
    "converter",
    "decide_claim",
    "decide_compare_and_set",
    "decide_task_write",
    "decode",
    "encode",
    "key_expires_at",
    "key_state_alive",
    "lease_holds",
    "owned_by",
    "quote",
    "storable_int",
    "storable_json",
    "storable_text",
]
