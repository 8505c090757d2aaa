"""The write side of the SQLite backend: a batch of commands as a few statements.

Theory of operation
-------------------
``WriteBatch.apply`` runs a whole batch inside the transaction that
``SQLiteBackend.apply`` opened, in three moves:

1. *Load*: the rows of the tasks the batch names. The backend keeps the
   rows its last batches wrote (``rows``: valid while ``PRAGMA
   data_version`` says no other connection wrote, dropped whole when a
   batch fails); one query fetches the others, as one JSON text (a single
   row).
2. *Decide*: each command runs, in order, against those rows held in
   Python (a dict of lists, one per task), with the semantics of the
   docstrings in ``_commands.py`` that the in-memory reference backend and
   the contract suite share. A command that may be refused decides before
   it changes anything, so a refused command leaves no trace and needs no
   savepoint. Rows to insert (events, journal entries, results, usage) and
   the tasks created or changed are collected.
3. *Write*: one multi-row statement per table (a few thousand rows each,
   see ``STATEMENT_SIZES``): the new tasks, the changed tasks, their events...

Why so few statements: the ``sqlite3`` module lets go of the GIL around
every step of a statement, and takes it back after. While the trio thread
is busy, taking it back waits for the switch interval, so a writer that
steps once per row (``executemany``, ``fetchall``) crawls at about a
thousand rows a second under load; one that steps a few times per batch
runs its SQL beside the trio thread instead of behind it (issue #5:
measured 1,055 rows/s with ``executemany`` against 115,000 rows/s with one
statement per batch, a busy thread beside both).

Values travel exactly: rows are written with bound parameters, and the
REAL columns of loaded rows are printed with 18 significant digits, which
round-trips every double (SQLite's JSON functions keep only 15).

A batch whose every command can be decided on the rows held (``plannable``)
may be decided outside the transaction, in trio (``decide``), and written
later (``write``); see ``SQLiteBackend.plan``.

Commands that act on a set of tasks by a predicate (renew and release the
leases of a node) first write the changed tasks back, then run as plain
statements, then forget the loaded rows (a later command of the batch
reads its task again).
"""

from __future__ import annotations

import functools
import itertools
import json
import operator
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, assert_never

import attrs

from ..model._codec import encode
from ..model._commands import (
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
from ..model._errors import RecordNotFoundError
from ..model._fence import (
    decide_claim,
    decide_compare_and_set,
    decide_task_write,
    key_expires_at,
    key_state_alive,
)
from ..model._records import (
    TERMINAL_STATES,
    EventLike,
    ExceptionRecord,
    JournalEntry,
    NewEvent,
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


def key_state(connection: sqlite3.Connection, key: str, now: float) -> str | None:
    """The state of key, None if missing or expired at now."""
    state, expires_at = _key_row(connection, key)
    return state if key_state_alive(expires_at, now) else None


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


class WriteBatch:
    """One batch of commands on the writer connection; see the module docstring."""

    def __init__(
        self, connection: sqlite3.Connection | None, now: float, rows: dict[str, list[Any]]
    ) -> None:
        self.connection = connection
        self.now = now
        #: Known tasks: id -> row (a list in field order, state as text). The
        #: backend's cache of committed rows, changed in place: the backend
        #: drops it whole if the batch does not commit.
        self.rows = rows
        #: Ids of the tasks this batch left with no owner (the ones
        #: ``forget_finished`` looks at: a finished task is released).
        self.unowned: list[str] = []
        #: Ids known not to exist.
        self.missing: set[str] = set()
        self.created: dict[str, None] = {}
        #: Ids of the tasks changed -> whether an indexed column (state,
        #: owner, lease) may have changed.
        self.changed: dict[str, bool] = {}
        self.events: list[StoredEvent] = []
        self.journal: list[tuple[Any, ...]] = []
        self.results: list[tuple[str, str]] = []
        self.usage: list[tuple[Any, ...]] = []
        #: The outcomes a plan decided (see ``plan``).
        self.outcomes: list[object] = []
        #: The task rows to insert and the updates to make, as ``seal`` took
        #: them (copies: a plan decided after this one may change the rows).
        self.task_inserts: list[tuple[Any, ...]] = []
        self.task_updates: list[tuple[Any, ...]] = []
        #: Updates of the unindexed columns only (see ``_UNINDEXED``).
        self.task_touches: list[tuple[Any, ...]] = []
        #: The backend's row generation this batch was planned on (see
        #: ``SQLiteBackend.plan``).
        self.generation = 0

    def apply(self, commands: Sequence[Command], refused: type[Exception]) -> list[object]:
        """Apply commands in order; one outcome each (an instance of ``refused``
        raised by a command becomes its outcome). Writes everything at the end."""
        self._load(task_ids(commands))
        outcomes = self._decide(commands, refused)
        self.write()
        return outcomes

    def plannable(self, commands: Sequence[Command]) -> bool:
        """Whether the batch can be decided on the rows held in memory alone.

        Not when a command needs the database to decide: a task that is not
        held, an inbox, a rollback, an exception record, or any other kind of
        command than task writes, creates, claims and status updates. A new
        task is assumed new; ``write`` fails with ``sqlite3.IntegrityError``
        if its id existed after all.
        """
        known = self.rows
        created: set[str] = set()
        for command in commands:
            if isinstance(command, CreateTask):
                created.add(command.record.id)
            elif isinstance(command, TaskWrite):
                if not (command.task_id in known or command.task_id in created):
                    return False
                if (
                    command.inbox_add
                    or command.inbox_consume
                    or command.inbox_clear
                    or command.discard_run is not None
                    or command.exception is not None
                ):
                    return False
            elif isinstance(command, (ClaimTask, UpdateStatus)):
                if not (command.task_id in known or command.task_id in created):
                    return False
            else:
                return False
        return True

    def decide(self, commands: Sequence[Command], refused: type[Exception]) -> None:
        """Decide commands (the next ones of a plannable batch) on the rows
        held; their outcomes go to ``outcomes``. The rows change: ``write``
        must follow in a transaction, or the rows be dropped."""
        self.outcomes.extend(self._decide(commands, refused))

    def seal(self) -> None:
        """Take copies of the rows of the tasks created and changed so far:
        what ``write`` writes for them. A plan is sealed when decided, so the
        next plan may change the rows while this one is written."""
        rows = self.rows
        if self.created:
            self.task_inserts.extend(tuple(rows[i]) for i in self.created)
        created = self.created
        for i, reindex in self.changed.items():
            if i not in created:
                if reindex:
                    self.task_updates.append((i, *_mutable(rows[i])))
                else:
                    self.task_touches.append((i, *_unindexed(rows[i])))
        self.created = {}
        self.changed = {}

    def write(self) -> None:
        """Write what the decisions collected (inside the batch's transaction)."""
        self._write_tasks()
        self._write_rows()

    def _decide(self, commands: Sequence[Command], refused: type[Exception]) -> list[object]:
        outcomes: list[object] = []
        for command in commands:
            try:
                outcomes.append(self._one(command))
            except refused as exc:
                outcomes.append(exc)
        return outcomes

    # -- rows ------------------------------------------------------------------
    def _load(self, ids: list[str]) -> None:
        ids = [task_id for task_id in ids if task_id not in self.rows]
        if not ids:
            return
        (text,) = self._db.execute(_LOAD, (json.dumps(ids),)).fetchone()
        for row in json.loads(text):
            self.rows[row[ID]] = TASKS.read_reals(row)
        self.missing.update(task_id for task_id in ids if task_id not in self.rows)

    @property
    def _db(self) -> sqlite3.Connection:
        # Only a batch applied in its transaction has one; a plan never asks.
        assert self.connection is not None, "a planned batch touched the database"
        return self.connection

    def _row(self, task_id: str) -> list[Any] | None:
        row = self.rows.get(task_id)
        if row is None and task_id not in self.missing:
            if self.connection is None:
                return None  # planning: a task created by this batch, not held yet
            found = self.connection.execute(_SELECT_TASK, (task_id,)).fetchone()
            if found is None:
                self.missing.add(task_id)
                return None
            row = self.rows[task_id] = list(found)
        return row

    def forget_finished(self) -> None:
        """Drop the rows of tasks this batch finished and released (rarely written again)."""
        rows = self.rows
        for task_id in self.unowned:
            row = rows.get(task_id)
            if row is not None and row[OWNER] is None and row[STATE] in _TERMINAL:
                del rows[task_id]

    def _require(self, task_id: str) -> list[Any]:
        row = self._row(task_id)
        if row is None:
            raise RecordNotFoundError(task_id)
        return row

    def _write_tasks(self) -> None:
        """Write the created and changed tasks (sealing what is not sealed yet)."""
        self.seal()
        connection = self._db
        tables = (self.task_inserts, self.task_updates, self.task_touches)
        for (template, width), rows in zip(_TASK_WRITES, tables, strict=True):
            write_rows(connection, template, width, rows)
        self.task_inserts, self.task_updates, self.task_touches = [], [], []

    def write_flat_rows(self, tables: Sequence[list[Any]]) -> None:
        """Write a plan's rows as ``flat_rows`` laid them out (in the writer
        process, inside the batch's transaction)."""
        connection = self._db
        for (template, width), values in zip(_TASK_WRITES + _ROW_WRITES, tables, strict=True):
            write_flat(connection, template, width, values)

    def flat_rows(self) -> tuple[list[Any], ...]:
        """What a sealed plan writes, each table's rows laid end to end (for
        ``write_flat_rows`` in the writer process: marshal takes a list of str,
        int, float and None faster than a list of tuples, and neither side
        makes a tuple a row)."""
        chain = itertools.chain.from_iterable
        return (
            list(chain(self.task_inserts)),
            list(chain(self.task_updates)),
            list(chain(self.task_touches)),
            list(chain(self.events)),
            list(chain(self.journal)),
            list(chain(self.results)),
            list(chain(self.usage)),
        )

    def _write_rows(self) -> None:
        connection = self._db
        # (a StoredEvent is a tuple of the events table's columns, in order)
        tables: tuple[Sequence[Sequence[Any]], ...] = (
            self.events,
            self.journal,
            self.results,
            self.usage,
        )
        for (template, width), rows in zip(_ROW_WRITES, tables, strict=True):
            write_rows(connection, template, width, rows)

    def _append_events(
        self, task_id: str, row: list[Any], events: Sequence[EventLike]
    ) -> tuple[StoredEvent, ...]:
        if not events:
            return ()
        now = self.now
        last = row[LAST_SEQ]
        if len(events) == 1:  # (the rule: no generator for it)
            ((kind, data),) = events
            stored: tuple[StoredEvent, ...] = (
                _new_tuple(StoredEvent, (task_id, last + 1, kind, now, data)),
            )
        else:
            new = _new_tuple
            stored = tuple(
                [
                    new(StoredEvent, (task_id, seq, kind, now, data))
                    for seq, (kind, data) in enumerate(events, start=last + 1)
                ]
            )
        row[LAST_SEQ] = last + len(stored)
        self.events.extend(stored)
        return stored

    # -- commands ----------------------------------------------------------------
    def _one(self, command: Command) -> object:
        # The commands a plan may hold decide on the rows alone.
        if isinstance(command, TaskWrite):
            return self._task_write(command)
        if isinstance(command, CreateTask):
            return self._create_task(command)
        if isinstance(command, ClaimTask):
            return self._claim_task(command)
        if isinstance(command, UpdateStatus):
            return self._update_status(command)
        connection, now = self._db, self.now
        match command:
            case RenewLeases():
                self._write_tasks()
                self.rows.clear()
                self.missing.clear()
                connection.execute(
                    "UPDATE nodes SET lease_expires = ? WHERE node_id = ?",
                    (command.lease_until, command.node_id),
                )
                return connection.execute(
                    "UPDATE tasks SET lease_expires = ? WHERE owner = ?",
                    (command.lease_until, command.node_id),
                ).rowcount
            case ReleaseTasks():
                self._write_tasks()
                self.rows.clear()
                self.missing.clear()
                if command.task_ids is None:
                    return connection.execute(_RELEASE, (command.node_id,)).rowcount
                # A task released once no longer matches ``owner = ?``: a
                # repeated id counts once.
                return sum(
                    connection.execute(
                        _RELEASE + " AND id = ?", (command.node_id, task_id)
                    ).rowcount
                    for task_id in command.task_ids
                )
            case RegisterNode():
                connection.execute(_UPSERT_NODE, NODES.to_row(command.node))
                return None
            case RemoveNode():
                connection.execute("DELETE FROM nodes WHERE node_id = ?", (command.node_id,))
                return None
            case SetKeyState():
                _set_key_state(connection, command.key, command.state, command.ttl, now)
                return None
            case CompareAndSetKeyState():
                current, expires_at = _key_row(connection, command.key)
                if not decide_compare_and_set(
                    current, expires_at, now, command.expected_state, command.negate
                ):
                    return False
                _set_key_state(connection, command.key, command.new_state, command.ttl, now)
                return True
            case DeleteKeyState():
                connection.execute("DELETE FROM key_states WHERE key = ?", (command.key,))
                return None
            case SetWorkflowData():
                connection.execute(
                    "INSERT OR REPLACE INTO workflow_data (workflow_id, key, value)"
                    " VALUES (?, ?, ?)",
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
            case TaskWrite() | CreateTask() | ClaimTask() | UpdateStatus():
                raise AssertionError("decided above")
            case _:
                assert_never(command)

    def _create_task(self, command: CreateTask) -> CreateResult:
        task_id = command.record.id
        existing = self._row(task_id)
        if existing is not None:
            return CreateResult(TASKS.from_row(existing), created=False)
        row = list(TASKS.to_row(command.record))
        row[LAST_SEQ] = 0  # the events given become seq 1, 2, ...
        events = self._append_events(task_id, row, command.events)
        self.rows[task_id] = row
        self.missing.discard(task_id)
        self.created[task_id] = None
        if row[OWNER] is None:
            self.unowned.append(task_id)
        # The record given is the one stored if its last_seq counts the events.
        stored = command.record
        if stored.last_seq != row[LAST_SEQ]:
            stored = TASKS.from_row(row)
        return CreateResult(stored, created=True, events=events)

    def _task_write(self, write: TaskWrite) -> TaskWriteResult:
        task_id = write.task_id
        row = self._require(task_id)
        now = self.now
        state = _STATE[row[STATE]]
        refusal = decide_task_write(
            task_id, state, row[EPOCH], row[LEASE], write.epoch, write.expect, now
        )
        if refusal is not None:
            raise refusal
        if not (write.events or write.state is not None or write.changes_anything):
            return TaskWriteResult(TASKS.from_row(row))  # a bare probe of the fence

        # From here on nothing can refuse the write.
        events = self._append_events(task_id, row, write.events)
        row[UPDATED] = now
        if write.state is not None:
            state = write.state
            row[STATE] = state.value
        if write.input is not None:
            row[INPUT] = write.input
        if write.run is not None:
            row[RUN] = write.run
        if write.progress is not None:
            row[DONE], row[TOTAL] = write.progress
        if write.error is not None:
            row[ERROR] = write.error
        if write.release:
            row[OWNER] = row[LEASE] = None
        if row[OWNER] is None:
            self.unowned.append(task_id)
        changed = self.changed
        changed[task_id] = write.state is not None or write.release or changed.get(task_id, False)

        if write.discard_run is not None:
            run = write.discard_run
            self.journal = [j for j in self.journal if not (j[0] == task_id and j[5] == run)]
            self._db.execute("DELETE FROM journal WHERE task_id = ? AND run = ?", (task_id, run))
        for item in write.journal:
            self.journal.append(
                (task_id, item.index, item.kind, item.name, item.value, item.run, now)
            )

        # Removals first: the items this write adds survive its own inbox_clear.
        inbox_ids: tuple[int, ...] = ()
        if write.inbox_clear or write.inbox_consume or write.inbox_add:
            inbox_ids = self._inbox(write)

        if write.result is not None:
            self.results.append((task_id, write.result))
        if write.exception is not None:
            self._db.execute(_UPSERT_EXCEPTION, (task_id, *EXCEPTIONS.to_row(write.exception)))
        # A usage report belongs to the task the write names, whatever it says.
        for usage in write.usage:
            self.usage.append((task_id, *USAGE.to_row(usage)[1:]))
        return TaskWriteResult.of_row(tuple(row), _READ_TASK, state, row[OWNER], events, inbox_ids)

    def _inbox(self, write: TaskWrite) -> tuple[int, ...]:
        """A write's inbox changes: removals first (the items it adds survive
        its own inbox_clear); the ids given to the added items."""
        connection, task_id = self._db, write.task_id
        if write.inbox_clear:
            connection.execute("DELETE FROM inbox WHERE task_id = ?", (task_id,))
        for item_id in write.inbox_consume:
            connection.execute("DELETE FROM inbox WHERE task_id = ? AND id = ?", (task_id, item_id))
        return tuple(_add_to_inbox(connection, task_id, text, self.now) for text in write.inbox_add)

    def _claim_task(self, command: ClaimTask) -> TaskRecord:
        row = self._require(command.task_id)
        refusal = decide_claim(
            command.task_id,
            _STATE[row[STATE]],
            row[OWNER],
            row[LEASE],
            command.node_id,
            command.states,
            command.force,
            self.now,
        )
        if refusal is not None:
            raise refusal
        row[OWNER] = command.node_id
        row[LEASE] = command.lease_until
        row[EPOCH] += 1
        self.changed[command.task_id] = True
        return TASKS.from_row(row)

    def _update_status(self, command: UpdateStatus) -> TaskWriteResult | None:
        row = self._row(command.task_id)
        if row is None:
            return None
        data: dict[str, str] = {"from": row[STATE], "to": command.status.value}
        if command.error is not None:
            data["error"] = command.error
            row[ERROR] = command.error
        events = self._append_events(command.task_id, row, [NewEvent("state", encode(data))])
        row[STATE] = command.status.value
        row[UPDATED] = self.now
        self.changed[command.task_id] = True
        if row[OWNER] is None:
            self.unowned.append(command.task_id)
        return TaskWriteResult(TASKS.from_row(row), events)


def _add_to_inbox(connection: sqlite3.Connection, task_id: str, text: str, now: float) -> int:
    cursor = connection.execute(
        "INSERT INTO inbox (task_id, input, at) VALUES (?, ?, ?)", (task_id, text, now)
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def _set_key_state(
    connection: sqlite3.Connection, key: str, state: str, ttl: float | None, now: float
) -> None:
    connection.execute(
        "INSERT OR REPLACE INTO key_states (key, state, expires_at) VALUES (?, ?, ?)",
        (key, state, key_expires_at(now, ttl)),
    )
