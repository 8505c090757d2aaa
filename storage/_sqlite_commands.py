"""The write side of the SQLite backend: each command as SQL.

``apply_command`` runs one command on the writer connection, inside the
batch's transaction (``SQLiteBackend.apply`` owns the transaction and the
savepoint around each command). A refusal raises its ``StorageError`` before
anything is written, and the savepoint makes the command atomic anyway.
The semantics are those of the docstrings in ``_commands.py``, which the
in-memory reference backend (``_memory.py``) and the contract suite share.

Rows and records meet through the one converter: column names are the
records' field names, so ``converter.unstructure(record)`` is the statement's
parameters and ``converter.structure(dict(row), cls)`` is the record.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, assert_never

import attrs

from ._codec import converter, encode
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
from ._records import JournalEntry, NewEvent, NodeRecord, StoredEvent, TaskRecord, UsageRecord


def columns(cls: type[attrs.AttrsInstance]) -> str:
    """The quoted column list of a record's table (its field names, in order)."""
    return ", ".join(f'"{field.name}"' for field in attrs.fields(cls))


def _insert(table: str, cls: type[attrs.AttrsInstance], *, verb: str = "INSERT") -> str:
    names = [field.name for field in attrs.fields(cls)]
    values = ", ".join(f":{name}" for name in names)
    return f"{verb} INTO {table} ({columns(cls)}) VALUES ({values})"


TASK_COLUMNS = columns(TaskRecord)

_INSERT_TASK = _insert("tasks", TaskRecord)
_UPDATE_TASK = "UPDATE tasks SET {} WHERE id = :id".format(
    ", ".join(
        f'"{field.name}" = :{field.name}'
        for field in attrs.fields(TaskRecord)
        if field.name != "id"
    )
)
_INSERT_EVENT = _insert("events", StoredEvent)
_UPSERT_JOURNAL = _insert("journal", JournalEntry, verb="INSERT OR REPLACE")
_INSERT_USAGE = _insert("usage", UsageRecord, verb="INSERT OR IGNORE")
_UPSERT_NODE = _insert("nodes", NodeRecord, verb="INSERT OR REPLACE")
_UPSERT_EXCEPTION = (
    "INSERT OR REPLACE INTO exceptions (task_id, type, message, traceback, retryable)"
    " VALUES (:task_id, :type, :message, :traceback, :retryable)"
)
_RELEASE = "UPDATE tasks SET owner = NULL, lease_expires = NULL WHERE owner = ?"


def select_task(connection: sqlite3.Connection, task_id: str) -> TaskRecord | None:
    """The task with this id, or None."""
    row = connection.execute(
        f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,)
    ).fetchone()
    return None if row is None else converter.structure(dict(row), TaskRecord)


def key_state(connection: sqlite3.Connection, key: str, now: float) -> str | None:
    """The state of key, None if missing or expired at now."""
    row = connection.execute(
        "SELECT state FROM key_states WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)",
        (key, now),
    ).fetchone()
    return None if row is None else str(row[0])


def apply_command(connection: sqlite3.Connection, command: Command, now: float) -> object:
    """Apply one command; return its outcome or raise the StorageError refusing it."""
    match command:
        case CreateTask():
            return _create_task(connection, command, now)
        case TaskWrite():
            return _task_write(connection, command, now)
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
            connection.execute(_UPSERT_NODE, converter.unstructure(command.node))
            return None
        case RemoveNode():
            connection.execute("DELETE FROM nodes WHERE node_id = ?", (command.node_id,))
            return None
        case UpdateStatus():
            return _update_status(connection, command, now)
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
    task_id: str, last_seq: int, events: Sequence[NewEvent], now: float
) -> tuple[StoredEvent, ...]:
    return tuple(
        StoredEvent(task_id, last_seq + number, event.kind, now, event.data)
        for number, event in enumerate(events, start=1)
    )


def _insert_events(connection: sqlite3.Connection, events: Sequence[StoredEvent]) -> None:
    connection.executemany(_INSERT_EVENT, [converter.unstructure(event) for event in events])


def _require(connection: sqlite3.Connection, task_id: str) -> TaskRecord:
    record = select_task(connection, task_id)
    if record is None:
        raise RecordNotFoundError(task_id)
    return record


def _create_task(connection: sqlite3.Connection, command: CreateTask, now: float) -> CreateResult:
    existing = select_task(connection, command.record.id)
    if existing is not None:
        return CreateResult(existing, created=False)
    events = _stored_events(command.record.id, 0, command.events, now)
    record = attrs.evolve(command.record, last_seq=len(events))
    connection.execute(_INSERT_TASK, converter.unstructure(record))
    _insert_events(connection, events)
    return CreateResult(record, created=True, events=events)


def _task_write(connection: sqlite3.Connection, write: TaskWrite, now: float) -> TaskWriteResult:
    record = _require(connection, write.task_id)
    if write.epoch is not None and (
        write.epoch != record.epoch or record.lease_expires is None or record.lease_expires < now
    ):
        raise StaleEpochError(record.id, write.epoch, record.epoch)
    if write.expect is not None and record.state not in write.expect:
        raise ConflictError(
            record.id, frozenset(state.value for state in write.expect), record.state.value
        )
    if write == TaskWrite(write.task_id, epoch=write.epoch, expect=write.expect):
        return TaskWriteResult(record)  # a bare probe of the fence: nothing changes

    events = _stored_events(record.id, record.last_seq, write.events, now)
    changes: dict[str, Any] = {"updated_at": now, "last_seq": record.last_seq + len(events)}
    if write.state is not None:
        changes["state"] = write.state
    if write.input is not None:
        changes["input"] = write.input
    if write.run is not None:
        changes["run"] = write.run
    if write.progress is not None:
        changes["progress_done"], changes["progress_total"] = write.progress
    if write.error is not None:
        changes["error"] = write.error
    if write.release:
        changes["owner"] = None
        changes["lease_expires"] = None
    record = attrs.evolve(record, **changes)
    connection.execute(_UPDATE_TASK, converter.unstructure(record))
    _insert_events(connection, events)

    if write.discard_run is not None:
        connection.execute(
            "DELETE FROM journal WHERE task_id = ? AND run = ?", (record.id, write.discard_run)
        )
    connection.executemany(
        _UPSERT_JOURNAL,
        [
            converter.unstructure(
                JournalEntry(record.id, item.index, item.kind, item.name, item.value, item.run, now)
            )
            for item in write.journal
        ],
    )

    # Removals first: the items this write adds survive its own inbox_clear.
    if write.inbox_clear:
        connection.execute("DELETE FROM inbox WHERE task_id = ?", (record.id,))
    connection.executemany(
        "DELETE FROM inbox WHERE task_id = ? AND id = ?",
        [(record.id, item_id) for item_id in write.inbox_consume],
    )
    inbox_ids = tuple(_add_to_inbox(connection, record.id, text, now) for text in write.inbox_add)

    if write.result is not None:
        connection.execute(
            "INSERT OR REPLACE INTO results (task_id, value) VALUES (?, ?)",
            (record.id, write.result),
        )
    if write.exception is not None:
        connection.execute(
            _UPSERT_EXCEPTION, {"task_id": record.id, **converter.unstructure(write.exception)}
        )
    # A usage report belongs to the task the write names, whatever it says.
    connection.executemany(
        _INSERT_USAGE,
        [converter.unstructure(attrs.evolve(usage, task_id=record.id)) for usage in write.usage],
    )
    return TaskWriteResult(record, events, inbox_ids)


def _add_to_inbox(connection: sqlite3.Connection, task_id: str, text: str, now: float) -> int:
    cursor = connection.execute(
        "INSERT INTO inbox (task_id, input, at) VALUES (?, ?, ?)", (task_id, text, now)
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def _claim_task(connection: sqlite3.Connection, command: ClaimTask, now: float) -> TaskRecord:
    record = _require(connection, command.task_id)
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
    record = attrs.evolve(
        record, owner=command.node_id, lease_expires=command.lease_until, epoch=record.epoch + 1
    )
    connection.execute(_UPDATE_TASK, converter.unstructure(record))
    return record


def _update_status(
    connection: sqlite3.Connection, command: UpdateStatus, now: float
) -> TaskWriteResult | None:
    record = select_task(connection, command.task_id)
    if record is None:
        return None
    data: dict[str, str] = {"from": record.state.value, "to": command.status.value}
    if command.error is not None:
        data["error"] = command.error
    events = _stored_events(record.id, record.last_seq, [NewEvent("state", encode(data))], now)
    record = attrs.evolve(
        record,
        state=command.status,
        error=command.error if command.error is not None else record.error,
        updated_at=now,
        last_seq=record.last_seq + len(events),
    )
    connection.execute(_UPDATE_TASK, converter.unstructure(record))
    _insert_events(connection, events)
    return TaskWriteResult(record, events)


def _set_key_state(
    connection: sqlite3.Connection, key: str, state: str, ttl: float | None, now: float
) -> None:
    connection.execute(
        "INSERT OR REPLACE INTO key_states (key, state, expires_at) VALUES (?, ?, ?)",
        (key, state, None if ttl is None else now + ttl),
    )
