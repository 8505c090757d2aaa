"""SQLiteBackend: the embedded store, on the stdlib ``sqlite3`` module.

Theory of operation
-------------------
Writes: one writer connection, made by ``open`` and used only by ``apply``
and ``execute_plan``, which the storage actor calls from its single worker
thread, one batch at a time (a lock makes that an invariant rather than a
hope, so ``check_same_thread=False`` is safe). The storage actor decides a
batch in trio first when it can (``plan``, ``decide``), so the worker
thread mostly runs SQL, which lets go of the GIL. A batch is one ``BEGIN IMMEDIATE ...
COMMIT`` transaction: one fsync for everything in it (group commit), and a
handful of statements whatever its size (``_commands.WriteBatch``).
A command refused with a ``StorageError`` has changed nothing: the error
becomes that command's outcome and the batch goes on. Anything else that
fails (a driver error, the COMMIT itself) rolls the whole transaction back
and raises: then no command of the batch is applied, and the storage actor
fails every write of the batch.

Reads: separate connections, taken from a small pool for one read and given
back, so a connection is only ever used by one thread at a time and the pool
holds no more connections than reads that ran at once (the store client
runs at most four). In WAL mode a reader sees the last committed state and
never waits for the writer, so reads go on while a long batch is written.
Reader connections are ``query_only``.

Errors: ``sqlite3`` errors are mapped where they leave this module: a file
that is not a database or is damaged gives ``CorruptStoreError``; a database
locked beyond ``busy_timeout``, or a path that cannot be opened, gives
``BackendUnavailableError``; the ``sqlite3`` error is the ``__cause__``.
Errors that can only come from a bug (a constraint failed, a parameter of
the wrong type) are not mapped.

The backend is three classes, one a module: ``SQLiteConnections``
(``_connections.py``: the connections, open, migrate, close, the errors
mapped), ``SQLiteWrites`` on it (``_writes.py``: the batch's transaction,
the rows kept for plans, the writer process's hooks), and ``SQLiteBackend``
on that (here: the reads). The schema and its migrations are in
``_schema.py``, the decisions of each command in ``_commands.py`` and
their SQL in ``_statements.py``; the writer process in ``_process.py``
(the parent's end) and ``_child.py``. Rows are tuples; they map to records
by ``_rows.RowMapper`` (the columns are the records' fields, in order).
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .._backend import Backend
from ..model._records import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    ExceptionRecord,
    InboxItem,
    JournalEntry,
    NodeRecord,
    StoredEvent,
    TaskFilter,
    TaskRecord,
    TaskState,
)
from ..model._usage import aggregate_usage
from ._commands import key_state
from ._rows import RowMapper
from ._statements import EVENTS, EXCEPTIONS, JOURNAL, NODES, TASK_COLUMNS, TASKS, select_task
from ._writes import SQLiteWrites

_INBOX = RowMapper(InboxItem)

_ACTIVE = ", ".join(f"'{state.value}'" for state in sorted(ACTIVE_STATES, key=lambda s: s.value))
_TERMINAL = ", ".join(
    f"'{state.value}'" for state in sorted(TERMINAL_STATES, key=lambda s: s.value)
)
_OLDEST_FIRST = "ORDER BY created_at, id"
#: Task ids per query of a bulk read.
_IDS_PER_QUERY = 2000


def _oldest_first(record: TaskRecord) -> tuple[float, str]:
    return (record.created_at, record.id)


def _seq(event: StoredEvent) -> int:
    return event.seq


def _index(entry: JournalEntry) -> int:
    return entry.index


def _item_id(item: InboxItem) -> int:
    return item.id


R = TypeVar("R")


def _select(
    connection: sqlite3.Connection,
    mapper: RowMapper[R],
    inner: str,
    parameters: Sequence[object] = (),
) -> list[R]:
    """The records an inner ``SELECT <mapper's columns> ...`` finds, in its order.

    One row comes back (all the records as one JSON text), so the query
    costs one step of the statement whatever the number of records: each
    step lets go of the GIL and must take it back, which a busy trio thread
    makes slow (see ``_commands``). The order of the inner query is
    the order of the aggregate (it has its ORDER BY, and SQLite feeds an
    aggregate in the order of a subquery it does not flatten); callers that
    need an order still sort, cheaply, on already sorted input.
    """
    (text,) = connection.execute(
        f"SELECT json_group_array({mapper.json_array}) FROM ({inner})", parameters
    ).fetchone()
    return [mapper.from_json_row(row) for row in json.loads(text)]


class SQLiteBackend(SQLiteWrites, Backend):
    """A store in one SQLite file; see the module docstring.

    Args:
        path: the database file; it is created (with its schema) if missing.
        journal_mode: ``"wal"`` (the default: readers never wait for the
            writer), or ``"delete"``, ``"truncate"``, ``"persist"``.
        synchronous: ``"full"`` (the default: a committed batch survives a
            power loss), or ``"extra"``, ``"normal"``, ``"off"``.
        busy_timeout: seconds a connection waits for a lock held by another
            process before the operation fails with BackendUnavailableError.
        max_idle_readers: reader connections kept open between reads.
        writer: where the storage actor's writes run: ``"process"`` (the
            default: a child process of its own, see ``_process.py``)
            or ``"thread"`` (a worker thread of this process, which waits
            for the GIL whenever trio is busy: about a third slower under
            load, issue #5). A frozen application (PyInstaller and the
            like), or a system where no process can be started, writes from
            the thread.

    Raises:
        BackendUnavailableError: ``:memory:`` or an empty path (each reader
            connection would see its own empty database), or an unknown option.
    """

    blocking: bool = True
    shared: bool = True  # (a file other processes may open)

    def __repr__(self) -> str:
        return f"SQLiteBackend({self.path!r})"

    # -- reads: tasks ------------------------------------------------------------
    def _tasks(self, sql: str, parameters: Sequence[object] = ()) -> list[TaskRecord]:
        def query(connection: sqlite3.Connection) -> list[TaskRecord]:
            records = _select(connection, TASKS, sql, parameters)
            records.sort(key=_oldest_first)
            return records

        return self._read(query)

    def get_task(self, task_id: str) -> TaskRecord | None:
        return self._read(lambda connection: select_task(connection, task_id))

    def list_tasks(self, query: TaskFilter) -> list[TaskRecord]:
        """Tasks matching the filter, oldest first (created_at, then id)."""
        where: list[str] = []
        parameters: list[object] = []
        for column, value in (
            ("user_id", query.user_id),
            ("thread_id", query.thread_id),
            ("parent_id", query.parent_id),
            ("name", query.name),
            ("owner", query.owner),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                parameters.append(value)
        if query.states is not None:
            if not query.states:
                return []
            where.append(f"state IN ({', '.join('?' * len(query.states))})")
            parameters.extend(sorted(state.value for state in query.states))
        sql = f"SELECT {TASK_COLUMNS} FROM tasks"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" {_OLDEST_FIRST}"
        if query.limit is not None:
            sql += " LIMIT ?"
            parameters.append(max(query.limit, 0))  # SQLite reads LIMIT -1 as "no limit"
        return self._tasks(sql, parameters)

    def list_pending(self) -> list[TaskRecord]:
        """Tasks in state pending, oldest first."""
        return self._tasks(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE state = ? {_OLDEST_FIRST}",
            (TaskState.PENDING.value,),
        )

    def list_inflight(self) -> list[TaskRecord]:
        """Tasks in state pending or running, oldest first."""
        return self._tasks(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE state IN ({_ACTIVE}) {_OLDEST_FIRST}"
        )

    def list_claimable(self, node_id: str, now: float) -> list[TaskRecord]:
        """Pending or running tasks with no owner, owned by node_id, or whose
        lease expired before now; oldest first."""
        return self._tasks(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE state IN ({_ACTIVE})"
            " AND (owner IS NULL OR owner = ? OR lease_expires IS NULL OR lease_expires < ?)"
            f" {_OLDEST_FIRST}",
            (node_id, now),
        )

    # -- reads: history and results ------------------------------------------------
    def read_events(
        self, task_id: str, after: int = 0, limit: int | None = None
    ) -> list[StoredEvent]:
        """Events with seq > after, in seq order."""

        def query(connection: sqlite3.Connection) -> list[StoredEvent]:
            events = _select(
                connection,
                EVENTS,
                f"SELECT {EVENTS.columns} FROM events"
                " WHERE task_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (task_id, after, -1 if limit is None else max(limit, 0)),
            )
            events.sort(key=_seq)
            return events

        return self._read(query)

    def get_result(self, task_id: str) -> str | None:
        def query(connection: sqlite3.Connection) -> str | None:
            row = connection.execute(
                "SELECT value FROM results WHERE task_id = ?", (task_id,)
            ).fetchone()
            return None if row is None else str(row[0])

        return self._read(query)

    def get_exception(self, task_id: str) -> ExceptionRecord | None:
        def query(connection: sqlite3.Connection) -> ExceptionRecord | None:
            row = connection.execute(
                f"SELECT {EXCEPTIONS.columns} FROM exceptions WHERE task_id = ?", (task_id,)
            ).fetchone()
            return None if row is None else EXCEPTIONS.from_row(row)

        return self._read(query)

    def read_journal(self, task_id: str) -> list[JournalEntry]:
        """Journal entries in index order."""
        return self.read_journals([task_id])[task_id]

    def read_journals(self, task_ids: Sequence[str]) -> dict[str, list[JournalEntry]]:
        """The journals of many tasks (one query per few thousand tasks)."""
        return self._by_task(JOURNAL, "journal", '"index"', _index, task_ids)

    def list_inbox(self, task_id: str) -> list[InboxItem]:
        """Inbox items in id order."""
        return self.list_inboxes([task_id])[task_id]

    def list_inboxes(self, task_ids: Sequence[str]) -> dict[str, list[InboxItem]]:
        """The inboxes of many tasks (one query per few thousand tasks)."""
        return self._by_task(_INBOX, "inbox", "id", _item_id, task_ids)

    def _by_task(
        self,
        mapper: RowMapper[R],
        table: str,
        order: str,
        key: Callable[[R], int],
        task_ids: Sequence[str],
    ) -> dict[str, list[R]]:
        """The rows of ``table`` of each task, sorted by ``key`` (every id maps
        to a list, maybe empty): one query per _IDS_PER_QUERY distinct ids."""
        found: dict[str, list[R]] = {task_id: [] for task_id in task_ids}
        sql = (
            f"SELECT {mapper.columns} FROM {table}"
            f" WHERE task_id IN (SELECT value FROM json_each(?)) ORDER BY task_id, {order}"
        )

        def query(connection: sqlite3.Connection, chunk: Sequence[str]) -> None:
            for record in _select(connection, mapper, sql, (json.dumps(chunk),)):
                found[record.task_id].append(record)  # type: ignore[attr-defined]

        unique = list(found)
        for start in range(0, len(unique), _IDS_PER_QUERY):
            self._read(functools.partial(query, chunk=unique[start : start + _IDS_PER_QUERY]))
        for records in found.values():
            records.sort(key=key)
        return found

    # -- reads: keyed state, workflow data, deterministic values -----------------------
    def get_key_state(self, key: str, now: float) -> str | None:
        """The state of key, None if missing or expired at now."""
        return self._read(lambda connection: key_state(connection, key, now))

    def _value(self, table: str, workflow_id: str, key: str) -> str | None:
        def query(connection: sqlite3.Connection) -> str | None:
            row = connection.execute(
                f"SELECT value FROM {table} WHERE workflow_id = ? AND key = ?", (workflow_id, key)
            ).fetchone()
            return None if row is None else str(row[0])

        return self._read(query)

    def get_workflow_data(self, workflow_id: str, key: str) -> str | None:
        return self._value("workflow_data", workflow_id, key)

    def get_deterministic_value(self, workflow_id: str, key: str) -> str | None:
        return self._value("deterministic_values", workflow_id, key)

    # -- reads: usage and nodes ------------------------------------------------------
    def aggregate_tokens_by_thread(
        self, thread_id: str, include_active: bool, user_id: str | None = None
    ) -> dict[str, Any]:
        """Token usage of a thread's tasks: keys total_tokens, total_input_tokens,
        total_output_tokens, total_runs, by_model ({model: {"tokens", "runs"}}),
        by_caller ({caller: tokens}). Only tasks in a terminal state count,
        unless include_active. A usage report belongs to the thread its
        ``thread_id`` names; a report without a caller counts as "unknown"."""
        sql = (
            "SELECT usage.task_id, usage.model, usage.caller,"
            " usage.input_tokens, usage.output_tokens"
            " FROM usage JOIN tasks ON tasks.id = usage.task_id"
            " WHERE usage.thread_id = ?"
        )
        parameters: tuple[str, ...] = (thread_id,)
        if not include_active:
            sql += f" AND tasks.state IN ({_TERMINAL})"
        if user_id is not None:
            sql += " AND tasks.user_id = ?"
            parameters = (thread_id, user_id)
        # One statement, so the figures come from one snapshot.
        rows = self._read(lambda connection: connection.execute(sql, parameters).fetchall())

        return aggregate_usage(rows)

    def list_nodes(self, now: float) -> list[NodeRecord]:
        """Nodes whose lease holds at now, by start time then id."""

        def query(connection: sqlite3.Connection) -> list[NodeRecord]:
            nodes = _select(
                connection,
                NODES,
                f"SELECT {NODES.columns} FROM nodes"
                " WHERE lease_expires >= ? ORDER BY started_at, node_id",
                (now,),
            )
            nodes.sort(key=lambda node: (node.started_at, node.node_id))
            return nodes

        return self._read(query)
