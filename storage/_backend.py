"""The protocols every store implements, and how a backend's writes run.

Theory of operation
-------------------
A backend is synchronous: the storage actor calls ``apply`` with a batch of
commands, and the store client calls the read methods. A backend whose
calls block (``blocking = True``: SQLite, PostgreSQL, Redis drivers) is
driven from worker threads: reads from a small reader pool, so a backend
must allow one writer and concurrent readers. The in-memory backend does not
block and is called inline from trio.

Where the writes run is the backend's to say: ``open_write_runner`` opens a
``WriteRunner`` for the storage actor, by default one worker thread of its
own for a blocking backend (``_worker.py``) and inline for the others;
SQLite supplies a writer process (``sqlite/_process.py``). A runner applies
batches in the order given, and isolates poison (below) before it applies
the next batch.

A write that cannot be applied fails alone (issue #17). When a batch raises
an error that ``blames_command`` puts on a command (a string that cannot be
encoded, a value out of range, a driver error tied to one command) rather
than on the store (locked, disk full, a dead writer), the runner
(``_isolate.apply_isolating``)
applies it again in halves, each in its own transaction, down to the
guilty commands, which get ``InvalidWriteError``: every other command is
applied and answered in order. A store failure fails the batch as before.

Backends never read a clock: ``now`` (seconds since the epoch, from the
runtime's clock) comes with every call that needs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, runtime_checkable

from . import _isolate
from ._worker import open_inline_runner, open_thread_runner
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


class Writing(Protocol):
    """A batch on its way to being written (``WriteRunner.send_plan``)."""

    async def result(self) -> list[object]:
        """Its outcomes once written, or raise what failed the batch. Not
        interruptible: the write goes on anyway, and its writers must learn
        the truth."""
        ...


class WriteRunner(Protocol):
    """Where a backend's writes run (a worker thread, a writer process).

    Used by the storage actor alone, which sends batches in order (one task
    decides and sends plans, one answers them). A runner applies them in
    that order and isolates a batch's poisoned commands (``_isolate.apply_isolating``)
    before it applies the next batch.
    """

    async def apply(self, commands: Sequence[Command], now: float) -> list[object]:
        """Apply a batch the long way; one outcome per command. Raises only
        for a store failure (then none of it is applied)."""
        ...

    async def send_plan(self, plan: Any, commands: Sequence[Command], now: float) -> Writing:
        """Start writing a decided plan of a ``PlanningBackend``."""
        ...


class Backend(Protocol):
    """A store's engine. See the module docstring for the threading contract.

    A backend class may subclass it to inherit the defaults of
    ``blames_command`` and ``open_write_runner``.
    """

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

    def blames_command(self, error: Exception) -> bool:
        """Whether an error that failed a batch is the fault of a command in
        it (isolate it: ``_isolate.apply_isolating``) rather than of the store (fail
        the batch). The default: ``_isolate.blames_command``."""
        return _isolate.blames_command(error)

    def open_write_runner(self) -> AbstractAsyncContextManager[WriteRunner]:
        """For the storage actor: where this backend's writes run, for the
        life of the actor. The default: a worker thread of its own if the
        backend blocks, else inline in trio."""
        return open_thread_runner(self) if self.blocking else open_inline_runner(self)

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
