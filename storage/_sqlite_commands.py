"""The write side of the SQLite backend: each command as SQL.

Theory of operation
-------------------
``apply_command`` runs one command on the writer connection, inside the
batch's transaction (``SQLiteBackend.apply`` owns the transaction). The
semantics are those of the docstrings in ``_commands.py``, which the
in-memory reference backend (``_memory.py``) and the contract suite share.

Check, then write. A command that may be refused decides before it writes
anything: a ``TaskWrite`` is one ``UPDATE tasks ... WHERE`` its fence and its
compare-and-set hold ``RETURNING`` the row, so the check and the change are
one statement; when it matches nothing, a read says why (the refusal path
only). So a refused command has written nothing, and a batch needs no
savepoint per command.

Rows that only ever get inserted (events, journal entries, results, usage)
are not inserted command by command: ``Deferred`` collects them and inserts
each table's rows with one ``executemany`` at the end of the batch (or
before a statement that must see them, such as a rollback's journal
``DELETE``). That is where group commit pays: a batch of thousands of
writes costs a few statements per table, not a few per write (issue #5).

Rows and records meet through ``_rows.RowMapper``: column names are the
records' field names, in field order.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any, assert_never

import attrs

from ._codec import encode
from ._commands import (
    ClaimTask,
    Command,
    CompareAndSetKeyState,
    CreateResult,
    CreateTask,
    DeleteKeyState,
    RegisterNode,
    ReleaseTasks,
    RemoveNode,
    RenewLeases,
    SetDeterministicValue,
    SetKeyState,
    SetWorkflowData,
    TaskWrite,
    TaskWriteResult,
    UpdateStatus,
)
from ._errors import ConflictError, LeaseHeldError, RecordNotFoundError, StaleEpochError
from ._records import (
    ExceptionRecord,
    JournalEntry,
    NewEvent,
    NodeRecord,
    StoredEvent,
    TaskRecord,
    UsageRecord,
)
from ._rows import RowMapper

TASKS = RowMapper(TaskRecord)
EVENTS = RowMapper(StoredEvent)
JOURNAL = RowMapper(JournalEntry)
EXCEPTIONS = RowMapper(ExceptionRecord)
NODES = RowMapper(NodeRecord)
USAGE = RowMapper(UsageRecord)

TASK_COLUMNS = TASKS.columns

_INSERT_TASK = (
    f"INSERT INTO tasks ({TASKS.columns}) VALUES {TASKS.placeholders} ON CONFLICT (id) DO NOTHING"
)
_SELECT_TASK = f"SELECT {TASKS.columns} FROM tasks WHERE id = ?"
_INSERT_EVENT = f"INSERT INTO events ({EVENTS.columns}) VALUES {EVENTS.placeholders}"
_UPSERT_JOURNAL = (
    f"INSERT OR REPLACE INTO journal ({JOURNAL.columns}) VALUES {JOURNAL.placeholders}"
)
_UPSERT_RESULT = "INSERT OR REPLACE INTO results (task_id, value) VALUES (?, ?)"
_INSERT_USAGE = f"INSERT OR IGNORE INTO usage ({USAGE.columns}) VALUES {USAGE.placeholders}"
_UPSERT_NODE = f"INSERT OR REPLACE INTO nodes ({NODES.columns}) VALUES {NODES.placeholders}"
_UPSERT_EXCEPTION = (
    f"INSERT OR REPLACE INTO exceptions (task_id, {EXCEPTIONS.columns})"
    f" VALUES (?, {EXCEPTIONS.placeholders[1:]}"
)
_RELEASE = "UPDATE tasks SET owner = NULL, lease_expires = NULL WHERE owner = ?"


class Deferred:
    """Insert-only rows of a batch, inserted in bulk by ``flush``."""

    __slots__ = ("events", "journal", "results", "usage")

    def __init__(self) -> None:
        self.events: list[StoredEvent] = []
        self.journal: list[tuple[Any, ...]] = []
        self.results: list[tuple[str, str]] = []
        self.usage: list[tuple[Any, ...]] = []

    def flush(self, connection: sqlite3.Connection) -> None:
        """Insert what was collected, in order, and forget it."""
        if self.events:
            connection.executemany(_INSERT_EVENT, _event_rows(self.events))
            self.events = []
        if self.journal:
            connection.executemany(_UPSERT_JOURNAL, self.journal)
            self.journal = []
        if self.results:
            connection.executemany(_UPSERT_RESULT, self.results)
            self.results = []
        if self.usage:
            connection.executemany(_INSERT_USAGE, self.usage)
            self.usage = []


def _event_rows(events: list[StoredEvent]) -> Iterator[tuple[Any, ...]]:
    for event in events:
        yield (event.task_id, event.seq, event.kind, event.at, event.data)


def select_task(connection: sqlite3.Connection, task_id: str) -> TaskRecord | None:
    """The task with this id, or None."""
    row = connection.execute(_SELECT_TASK, (task_id,)).fetchone()
    return None if row is None else TASKS.from_row(row)


def key_state(connection: sqlite3.Connection, key: str, now: float) -> str | None:
    """The state of key, None if missing or expired at now."""
    row = connection.execute(
        "SELECT state FROM key_states WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)",
        (key, now),
    ).fetchone()
    return None if row is None else str(row[0])


def apply_command(
    connection: sqlite3.Connection, command: Command, now: float, deferred: Deferred
) -> object:
    """Apply one command; return its outcome or raise the StorageError refusing it
    (having written nothing)."""
    match command:
        case TaskWrite():
            return _task_write(connection, command, now, deferred)
        case CreateTask():
            return _create_task(connection, command, now, deferred)
        case ClaimTask():
            return _claim_task(connection, command, now)
        case RenewLeases():
            connection.execute(
                "UPDATE nodes SET lease_expires = ? WHERE node_id = ?",
                (command.lease_until, command.node_id),
            )
            return connection.execute(
                "UPDATE tasks SET lease_expires = ? WHERE owner = ?",
                (command.lease_until, command.node_id),
            ).rowcount
        case ReleaseTasks():
            if command.task_ids is None:
                return connection.execute(_RELEASE, (command.node_id,)).rowcount
            # A task released once no longer matches ``owner = ?``: a
            # repeated id counts once.
            return connection.executemany(
                _RELEASE + " AND id = ?",
                [(command.node_id, task_id) for task_id in command.task_ids],
            ).rowcount
        case RegisterNode():
            connection.execute(_UPSERT_NODE, NODES.to_row(command.node))
            return None
        case RemoveNode():
            connection.execute("DELETE FROM nodes WHERE node_id = ?", (command.node_id,))
            return None
        case UpdateStatus():
            return _update_status(connection, command, now, deferred)
        case SetKeyState():
            _set_key_state(connection, command.key, command.state, command.ttl, now)
            return None
        case CompareAndSetKeyState():
            current = key_state(connection, command.key, now)
            if (current == command.expected_state) == command.negate:
                return False
            _set_key_state(connection, command.key, command.new_state, command.ttl, now)
            return True
        case DeleteKeyState():
            connection.execute("DELETE FROM key_states WHERE key = ?", (command.key,))
            return None
        case SetWorkflowData():
            connection.execute(
                "INSERT OR REPLACE INTO workflow_data (workflow_id, key, value) VALUES (?, ?, ?)",
                (command.workflow_id, command.key, command.value),
            )
            return None
        case SetDeterministicValue():
            connection.execute(
                "INSERT OR REPLACE INTO deterministic_values (workflow_id, key, value)"
                " VALUES (?, ?, ?)",
                (command.workflow_id, command.key, command.value),
            )
            return None
        case _:
            assert_never(command)


def _stored_events(
    task_id: str, first_seq: int, events: Sequence[NewEvent], now: float
) -> tuple[StoredEvent, ...]:
    return tuple(
        StoredEvent(task_id, seq, event.kind, now, event.data)
        for seq, event in enumerate(events, start=first_seq)
    )


def _create_task(
    connection: sqlite3.Connection, command: CreateTask, now: float, deferred: Deferred
) -> CreateResult:
    record = command.record
    if record.last_seq != len(command.events):
        record = attrs.evolve(record, last_seq=len(command.events))
    if connection.execute(_INSERT_TASK, TASKS.to_row(record)).rowcount == 0:
        existing = select_task(connection, record.id)
        assert existing is not None
        return CreateResult(existing, created=False)
    events = _stored_events(record.id, 1, command.events, now)
    deferred.events.extend(events)
    return CreateResult(record, created=True, events=events)


#: SQL of a TaskWrite's UPDATE, by the shape of the write (which columns it
#: sets, whether it is fenced, how many states it expects).
_UPDATES: dict[tuple[Any, ...], str] = {}


def _update_sql(write: TaskWrite, expect: int | None) -> str:
    shape = (
        write.state is not None,
        write.input is not None,
        write.run is not None,
        write.progress is not None,
        write.error is not None,
        write.release,
        write.epoch is not None,
        expect,
    )
    sql = _UPDATES.get(shape)
    if sql is None:
        sets = ["updated_at = ?", "last_seq = last_seq + ?"]
        for changes, column in zip(
            shape[:5], ("state", "input", "run", "progress_done", "error"), strict=True
        ):
            if changes:
                sets.append(f"{column} = ?")
                if column == "progress_done":
                    sets.append("progress_total = ?")
        if write.release:
            sets.append("owner = NULL, lease_expires = NULL")
        where = "id = ?"
        if write.epoch is not None:
            where += " AND epoch = ? AND lease_expires >= ?"
        if expect is not None:
            where += f" AND state IN ({', '.join('?' * expect)})" if expect else " AND 0"
        sql = _UPDATES[shape] = (
            f"UPDATE tasks SET {', '.join(sets)} WHERE {where} RETURNING {TASKS.columns}"
        )
    return sql


def _refusal(connection: sqlite3.Connection, write: TaskWrite, now: float) -> Exception:
    """Why a TaskWrite's UPDATE matched no row."""
    record = select_task(connection, write.task_id)
    if record is None:
        return RecordNotFoundError(write.task_id)
    if write.epoch is not None and (
        write.epoch != record.epoch or record.lease_expires is None or record.lease_expires < now
    ):
        return StaleEpochError(record.id, write.epoch, record.epoch)
    assert write.expect is not None and record.state not in write.expect
    return ConflictError(
        record.id, frozenset(state.value for state in write.expect), record.state.value
    )


def _task_write(
    connection: sqlite3.Connection, write: TaskWrite, now: float, deferred: Deferred
) -> TaskWriteResult:
    if not write.changes_anything:
        # A bare probe of the fence: check it, change nothing (not even updated_at).
        record = select_task(connection, write.task_id)
        if (
            record is None
            or (
                write.epoch is not None
                and (
                    write.epoch != record.epoch
                    or record.lease_expires is None
                    or record.lease_expires < now
                )
            )
            or (write.expect is not None and record.state not in write.expect)
        ):
            raise _refusal(connection, write, now)
        return TaskWriteResult(record)

    expect = sorted(state.value for state in write.expect) if write.expect is not None else None
    parameters: list[Any] = [now, len(write.events)]
    if write.state is not None:
        parameters.append(write.state.value)
    if write.input is not None:
        parameters.append(write.input)
    if write.run is not None:
        parameters.append(write.run)
    if write.progress is not None:
        parameters.extend(write.progress)
    if write.error is not None:
        parameters.append(write.error)
    parameters.append(write.task_id)
    if write.epoch is not None:
        parameters.extend((write.epoch, now))
    if expect is not None:
        parameters.extend(expect)
    rows = connection.execute(
        _update_sql(write, len(expect) if expect is not None else None), parameters
    ).fetchall()
    if not rows:
        raise _refusal(connection, write, now)
    record = TASKS.from_row(rows[0])
    task_id = record.id

    events = _stored_events(task_id, record.last_seq - len(write.events) + 1, write.events, now)
    deferred.events.extend(events)
    if write.discard_run is not None:
        deferred.flush(connection)  # the DELETE must see the journal rows of this batch
        connection.execute(
            "DELETE FROM journal WHERE task_id = ? AND run = ?", (task_id, write.discard_run)
        )
    for item in write.journal:
        deferred.journal.append(
            (task_id, item.index, item.kind, item.name, item.value, item.run, now)
        )

    # Removals first: the items this write adds survive its own inbox_clear.
    if write.inbox_clear:
        connection.execute("DELETE FROM inbox WHERE task_id = ?", (task_id,))
    if write.inbox_consume:
        connection.executemany(
            "DELETE FROM inbox WHERE task_id = ? AND id = ?",
            [(task_id, item_id) for item_id in write.inbox_consume],
        )
    inbox_ids = tuple(_add_to_inbox(connection, task_id, text, now) for text in write.inbox_add)

    if write.result is not None:
        deferred.results.append((task_id, write.result))
    if write.exception is not None:
        connection.execute(_UPSERT_EXCEPTION, (task_id, *EXCEPTIONS.to_row(write.exception)))
    # A usage report belongs to the task the write names, whatever it says.
    for usage in write.usage:
        deferred.usage.append((task_id, *USAGE.to_row(usage)[1:]))
    return TaskWriteResult(record, events, inbox_ids)


def _add_to_inbox(connection: sqlite3.Connection, task_id: str, text: str, now: float) -> int:
    cursor = connection.execute(
        "INSERT INTO inbox (task_id, input, at) VALUES (?, ?, ?)", (task_id, text, now)
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def _claim_task(connection: sqlite3.Connection, command: ClaimTask, now: float) -> TaskRecord:
    record = select_task(connection, command.task_id)
    if record is None:
        raise RecordNotFoundError(command.task_id)
    if command.states is not None and record.state not in command.states:
        raise ConflictError(
            record.id, frozenset(state.value for state in command.states), record.state.value
        )
    if (
        not command.force
        and record.owner is not None
        and record.owner != command.node_id
        and record.lease_expires is not None
        and record.lease_expires >= now
    ):
        raise LeaseHeldError(record.id, record.owner, record.lease_expires)
    connection.execute(
        "UPDATE tasks SET owner = ?, lease_expires = ?, epoch = ? WHERE id = ?",
        (command.node_id, command.lease_until, record.epoch + 1, record.id),
    )
    return attrs.evolve(
        record, owner=command.node_id, lease_expires=command.lease_until, epoch=record.epoch + 1
    )


def _update_status(
    connection: sqlite3.Connection, command: UpdateStatus, now: float, deferred: Deferred
) -> TaskWriteResult | None:
    record = select_task(connection, command.task_id)
    if record is None:
        return None
    data: dict[str, str] = {"from": record.state.value, "to": command.status.value}
    if command.error is not None:
        data["error"] = command.error
    events = _stored_events(record.id, record.last_seq + 1, [NewEvent("state", encode(data))], now)
    record = attrs.evolve(
        record,
        state=command.status,
        error=command.error if command.error is not None else record.error,
        updated_at=now,
        last_seq=record.last_seq + len(events),
    )
    connection.execute(
        "UPDATE tasks SET state = ?, error = ?, updated_at = ?, last_seq = ? WHERE id = ?",
        (record.state.value, record.error, now, record.last_seq, record.id),
    )
    deferred.events.extend(events)
    return TaskWriteResult(record, events)


def _set_key_state(
    connection: sqlite3.Connection, key: str, state: str, ttl: float | None, now: float
) -> None:
    connection.execute(
        "INSERT OR REPLACE INTO key_states (key, state, expires_at) VALUES (?, ?, ?)",
        (key, state, None if ttl is None else now + ttl),
    )
