"""The backend protocol every store implements.

A backend is synchronous: the storage actor calls ``apply`` with a batch of
commands, and the store client calls the read methods. A backend whose
calls block (``blocking = True``: SQLite, PostgreSQL, Redis drivers) is
driven from worker threads: ``apply`` from the storage actor's single writer
thread, reads from a small reader pool, so a backend must allow one writer
and concurrent readers. The in-memory backend does not block and is called
inline from trio.

Backends never read a clock: ``now`` (seconds since the epoch, from the
runtime's clock) comes with every call that needs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from .model._commands import Command
from .model._records import (
    ExceptionRecord,
    InboxItem,
    JournalEntry,
    NodeRecord,
    StoredEvent,
    TaskFilter,
    TaskRecord,
)


class Backend(Protocol):
    """A store's engine. See the module docstring for the threading contract."""

    #: Whether calls block (run them in worker threads).
    blocking: bool
    #: Whether other processes may write the same data (a file, a server):
    #: their commits reach this store's reads, never its commit listeners.
    #: (A backend without it is taken to be shared.)
    shared: bool

    def open(self) -> None:
        """Connect, create or migrate the schema. Raises BackendUnavailableError,
        CorruptStoreError, SchemaVersionError."""

    def close(self) -> None:
        """Release every connection. Idempotent."""

    def apply(self, commands: Sequence[Command], now: float) -> list[object]:
        """Apply commands in order, in one transaction; one outcome per command.

        An outcome is the command's result or the StorageError instance that
        refused it (and changed nothing). A failure of the batch itself (the
        commit failed) raises: then none of the batch is applied.
        """
        ...

    # -- tasks -------------------------------------------------------------
    def get_task(self, task_id: str) -> TaskRecord | None: ...

    def list_tasks(self, query: TaskFilter) -> list[TaskRecord]:
        """Tasks matching the filter, oldest first (created_at, then id)."""
        ...

    def list_pending(self) -> list[TaskRecord]:
        """Tasks in state pending, oldest first."""
        ...

    def list_inflight(self) -> list[TaskRecord]:
        """Tasks in state pending or running, oldest first."""
        ...

    def list_claimable(self, node_id: str, now: float) -> list[TaskRecord]:
        """Pending or running tasks with no owner, owned by node_id, or whose
        lease expired before now; oldest first."""
        ...

    # -- history and results ------------------------------------------------
    def read_events(
        self, task_id: str, after: int = 0, limit: int | None = None
    ) -> list[StoredEvent]:
        """Events with seq > after, in seq order."""
        ...

    def get_result(self, task_id: str) -> str | None: ...

    def get_exception(self, task_id: str) -> ExceptionRecord | None: ...

    def read_journal(self, task_id: str) -> list[JournalEntry]:
        """Journal entries in index order."""
        ...

    def list_inbox(self, task_id: str) -> list[InboxItem]:
        """Inbox items in id order."""
        ...

    def read_journals(self, task_ids: Sequence[str]) -> dict[str, list[JournalEntry]]:
        """``read_journal`` of many tasks at once: every id maps to its entries
        (an unknown id to an empty list)."""
        ...

    def list_inboxes(self, task_ids: Sequence[str]) -> dict[str, list[InboxItem]]:
        """``list_inbox`` of many tasks at once: every id maps to its items."""
        ...

    # -- keyed state, workflow data, deterministic values ---------------------
    def get_key_state(self, key: str, now: float) -> str | None:
        """The state of key, None if missing or expired at now."""
        ...

    def get_workflow_data(self, workflow_id: str, key: str) -> str | None: ...

    def get_deterministic_value(self, workflow_id: str, key: str) -> str | None: ...

    # -- usage and nodes -----------------------------------------------------
    def aggregate_tokens_by_thread(
        self, thread_id: str, include_active: bool, user_id: str | None = None
    ) -> dict[str, Any]:
        """Token usage of a thread's tasks: keys total_tokens, total_input_tokens,
        total_output_tokens, total_runs, by_model ({model: {"tokens", "runs"}}),
        by_caller ({caller: tokens}). Only tasks in a terminal state count,
        unless include_active; only tasks of ``user_id`` when given."""
        ...

    def list_nodes(self, now: float) -> list[NodeRecord]:
        """Nodes whose lease holds at now."""
        ...


@runtime_checkable
class PlanningBackend(Protocol):
    """A blocking backend that can split ``apply`` in two (SQLite).

    ``plan`` makes a plan for a batch from what the backend holds in memory
    (None: it cannot; call ``apply``); ``decide`` decides its commands, a
    slice at a time, in the caller's thread; ``execute_plan`` then writes it,
    in the worker thread, and returns the outcomes (deciding again from the
    database itself if the plan went stale). A plan that will not be executed
    is given back with ``abandon``. The storage actor uses it so that
    deciding, which is Python, runs in trio (between checkpoints), and only
    the writing, which lets go of the GIL, runs beside it.
    """

    def plan(self, commands: Sequence[Command], now: float) -> Any: ...

    def decide(self, plan: Any, commands: Sequence[Command]) -> None: ...

    def abandon(self, plan: Any) -> None: ...

    def execute_plan(self, plan: Any, commands: Sequence[Command], now: float) -> list[object]: ...
