"""The storage actor (the single writer, group commit) and the store client built on it."""

from ._pending import READY as READY
from ._pending import PendingWrite as PendingWrite
from ._pending import TaskDraft as TaskDraft
from ._store import Store as Store
from ._store import Subscription as Subscription
from ._store import exception_record as exception_record
from ._store import open_store as open_store
from ._writer import StorageActor as StorageActor

__all__ = [
    "READY",
    "PendingWrite",
    "StorageActor",
    "Store",
    "Subscription",
    "TaskDraft",
    "exception_record",
    "open_store",
]
