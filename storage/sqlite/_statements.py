"""The SQL of the SQLite backend's writes: the statement texts, the row
layout they bind, and the writers of many rows in few statements.

``WriteBatch`` (``_commands.py``) decides a batch; what it writes goes
through here: one multi-row statement per table, in the few sizes of
``STATEMENT_SIZES`` (why so few statements: ``_commands.py``). The writer
process sets ``STATEMENT_SIZES`` to sizes of its own (``_child.py``).
"""

from __future__ import annotations

import functools
import itertools
import operator
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from ..model._commands import ClaimTask, Command, CreateTask, TaskWrite, UpdateStatus
from ..model._records import (
    TERMINAL_STATES,
    ExceptionRecord,
    JournalEntry,
    NodeRecord,
    StoredEvent,
    TaskRecord,
    TaskState,
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
#: TASKS.from_row, bound once: a result of each write keeps it until read.
_READ_TASK = TASKS.from_row
_FIELDS = [field.name for field in attrs.fields(TaskRecord)]
_AT = {name: position for position, name in enumerate(_FIELDS)}
ID, STATE, INPUT, UPDATED = _AT["id"], _AT["state"], _AT["input"], _AT["updated_at"]
OWNER, LEASE, EPOCH, RUN = _AT["owner"], _AT["lease_expires"], _AT["epoch"], _AT["run"]
LAST_SEQ, DONE, TOTAL, ERROR = (
    _AT["last_seq"],
    _AT["progress_done"],
    _AT["progress_total"],
    _AT["error"],
)
#: Columns a write may change (the others are set once, when the task is created).
_MUTABLE: tuple[str, ...] = ("state", "input", "updated_at", "owner", "lease_expires", "epoch")
_MUTABLE += ("run", "last_seq", "progress_done", "progress_total", "error")
_mutable = operator.itemgetter(*(_AT[name] for name in _MUTABLE))
#: The mutable columns no index holds. A write that changes none of state,
#: owner and lease (a step result, an event, progress) updates only these:
#: SQLite rewrites the entries of every index whose columns a SET names,
#: changed or not (issue #5: the update of a task row was the writer's
#: largest cost, ~25 us a row, most of it the two indexes).
_UNINDEXED: tuple[str, ...] = tuple(
    name for name in _MUTABLE if name not in ("state", "owner", "lease_expires")
)
_unindexed = operator.itemgetter(*(_AT[name] for name in _UNINDEXED))
_TERMINAL = frozenset(state.value for state in TERMINAL_STATES)
#: A row's state text -> the state (a dict lookup, where TaskState(text) is a call).
_STATE = {state.value: state for state in TaskState}
#: A stored event from a tuple, without NamedTuple's Python-level __new__.
_new_tuple = tuple.__new__

#: Every task named in a JSON array of ids, as one JSON text (see RowMapper.json_array).
_LOAD = (
    f"SELECT json_group_array({TASKS.json_array}) FROM tasks"
    " WHERE id IN (SELECT value FROM json_each(?))"
)
_SELECT_TASK = f"SELECT {TASKS.columns} FROM tasks WHERE id = ?"
_UPDATE = (
    "WITH v ({columns}) AS (VALUES {{rows}}) UPDATE tasks SET {sets} FROM v"
    " WHERE tasks.id = v.id AND v.id IS NOT 0"
)
_UPDATE_TASKS = _UPDATE.format(
    columns=", ".join(f'"{name}"' for name in ("id", *_MUTABLE)),
    sets=", ".join(f'"{name}" = v."{name}"' for name in _MUTABLE),
)
_TOUCH_TASKS = _UPDATE.format(
    columns=", ".join(f'"{name}"' for name in ("id", *_UNINDEXED)),
    sets=", ".join(f'"{name}" = v."{name}"' for name in _UNINDEXED),
)
_PADDED = " SELECT * FROM (VALUES {rows}) WHERE column1 IS NOT 0"
_INSERT_TASKS = f"INSERT INTO tasks ({TASKS.columns})" + _PADDED
_INSERT_EVENTS = f"INSERT INTO events ({EVENTS.columns})" + _PADDED
_UPSERT_JOURNAL = f"INSERT OR REPLACE INTO journal ({JOURNAL.columns})" + _PADDED
_UPSERT_RESULTS = "INSERT OR REPLACE INTO results (task_id, value)" + _PADDED
_INSERT_USAGE = f"INSERT OR IGNORE INTO usage ({USAGE.columns})" + _PADDED
#: A batch's multi-row statements and the values a row of each, in the
#: order a batch runs them: its tasks (new, changed, touched), then its
#: events, journal entries, results and usage reports.
_TASK_WRITES = (
    (_INSERT_TASKS, len(_FIELDS)),
    (_UPDATE_TASKS, 1 + len(_MUTABLE)),
    (_TOUCH_TASKS, 1 + len(_UNINDEXED)),
)
_ROW_WRITES = ((_INSERT_EVENTS, 5), (_UPSERT_JOURNAL, 7), (_UPSERT_RESULTS, 2), (_INSERT_USAGE, 9))
_UPSERT_NODE = f"INSERT OR REPLACE INTO nodes ({NODES.columns}) VALUES {NODES.placeholders}"
_UPSERT_EXCEPTION = (
    f"INSERT OR REPLACE INTO exceptions (task_id, {EXCEPTIONS.columns})"
    f" VALUES (?, {EXCEPTIONS.placeholders[1:]}"
)
_RELEASE = "UPDATE tasks SET owner = NULL, lease_expires = NULL WHERE owner = ?"

#: Row counts of the multi-row statements: a batch's rows go in as few as
#: can hold them, padded with rows of zeros that the statements skip. Fixed
#: sizes keep the statement texts few (cached, parsed once) and the steps of
#: a batch few: each statement is one trip out of the GIL and back. The
#: writer process, which has the GIL to itself, stops at 256 rows (see
#: ``_process.py``): SQLite takes 40 ms to compile the insert of
#: 4,096 tasks, 1 ms for 256 rows.
STATEMENT_SIZES: tuple[int, ...] = (16, 64, 256, 1024, 4096)


def write_rows(
    connection: sqlite3.Connection, template: str, width: int, rows: Sequence[Sequence[Any]]
) -> None:
    """Write rows with as few statements as the variable limit allows.

    ``template`` has a ``{rows}`` slot for ``(?, ...), (?, ...)``, and must
    ignore a row whose first value is the integer 0 (the padding: no id is
    an integer; ``IS NOT 0`` keeps a text id "0", and in a join on a TEXT
    column the 0 would match one). Zeros, not NULLs: the ``sqlite3``
    module binds an int at once, but looks a None up among its adapters
    first (~370 ns a value against ~70: issue #5, a third of the values
    bound were padding).
    """
    if rows:
        write_flat(connection, template, width, list(itertools.chain.from_iterable(rows)))


def write_flat(
    connection: sqlite3.Connection, template: str, width: int, values: list[Any]
) -> None:
    """``write_rows`` of rows laid end to end: ``width`` values a row (what
    the parent sends the writer process: no tuple a row on either side)."""
    limit = connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width
    sizes = [size for size in STATEMENT_SIZES if size <= limit] or [max(1, limit)]
    count = len(values) // width
    start = 0
    while start < count:
        left = count - start
        size = next((size for size in sizes if size >= left), sizes[-1])
        parameters = values[start * width : (start + size) * width]
        if size > left:
            parameters.extend(itertools.repeat(0, (size - left) * width))
        connection.execute(_statement(template, width, size), parameters)
        start += size


@functools.cache
def _statement(template: str, width: int, size: int) -> str:
    """A multi-row statement's text, made once: the same str object each
    time, so the statement cache finds it without hashing tens of KB again
    (its hash is kept), and the writer holds the GIL that much less."""
    row = f"({', '.join('?' * width)})"
    return template.format(rows=", ".join(itertools.repeat(row, size)))


def select_task(connection: sqlite3.Connection, task_id: str) -> TaskRecord | None:
    """The task with this id, or None."""
    row = connection.execute(_SELECT_TASK, (task_id,)).fetchone()
    return None if row is None else TASKS.from_row(row)


def _key_row(connection: sqlite3.Connection, key: str) -> tuple[str | None, float | None]:
    """The key's state and expiry as stored, expired or not; (None, None) if missing."""
    row = connection.execute(
        "SELECT state, expires_at FROM key_states WHERE key = ?", (key,)
    ).fetchone()
    return (None, None) if row is None else (str(row[0]), row[1])


def task_ids(commands: Iterable[Command]) -> list[str]:
    """The ids of the tasks that commands name, once each, in order."""
    ids: dict[str, None] = {}
    for command in commands:
        if isinstance(command, (TaskWrite, ClaimTask, UpdateStatus)):
            ids[command.task_id] = None
        elif isinstance(command, CreateTask):
            ids[command.record.id] = None
    return list(ids)


def _add_to_inbox(connection: sqlite3.Connection, task_id: str, text: str, now: float) -> int:
    cursor = connection.execute(
        "INSERT INTO inbox (task_id, input, at) VALUES (?, ?, ?)", (task_id, text, now)
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid
