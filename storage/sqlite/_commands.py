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
   The statements and the writers of many rows are in ``_statements.py``.

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

import itertools
import json
import sqlite3
from collections.abc import Sequence
from typing import Any, assert_never

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
from ..model._records import EventLike, NewEvent, StoredEvent, TaskRecord
from ._statements import (
    _LOAD,
    _READ_TASK,
    _RELEASE,
    _ROW_WRITES,
    _SELECT_TASK,
    _STATE,
    _TASK_WRITES,
    _TERMINAL,
    _UPSERT_EXCEPTION,
    _UPSERT_NODE,
    DONE,
    EPOCH,
    ERROR,
    EXCEPTIONS,
    ID,
    INPUT,
    LAST_SEQ,
    LEASE,
    NODES,
    OWNER,
    RUN,
    STATE,
    TASKS,
    TOTAL,
    UPDATED,
    USAGE,
    _add_to_inbox,
    _key_row,
    _mutable,
    _new_tuple,
    _unindexed,
    task_ids,
    write_flat,
    write_rows,
)


def key_state(connection: sqlite3.Connection, key: str, now: float) -> str | None:
    """The state of key, None if missing or expired at now."""
    state, expires_at = _key_row(connection, key)
    return state if key_state_alive(expires_at, now) else None


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


def _set_key_state(
    connection: sqlite3.Connection, key: str, state: str, ttl: float | None, now: float
) -> None:
    connection.execute(
        "INSERT OR REPLACE INTO key_states (key, state, expires_at) VALUES (?, ?, ?)",
        (key, state, key_expires_at(now, ttl)),
    )
