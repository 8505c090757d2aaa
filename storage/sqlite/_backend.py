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

The schema and its migrations are in ``_schema.py``, the SQL of each
command in ``_commands.py``; the writer process in ``_process.py`` (the
parent's end) and ``_child.py``. Rows are tuples; they map to records by
``_rows.RowMapper`` (the columns are the records' fields, in order).
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, ExitStack, contextmanager, suppress
from typing import Any, TypeVar

from .. import _isolate
from .._backend import Backend, WriteRunner
from .._worker import open_thread_runner
from ..model._commands import ClaimTask, Command, CreateTask, TaskWrite, UpdateStatus
from ..model._errors import (
    BackendUnavailableError,
    CorruptStoreError,
    SchemaVersionError,
    StorageClosedError,
    StorageError,
)
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
from ._commands import (
    EVENTS,
    EXCEPTIONS,
    JOURNAL,
    NODES,
    TASK_COLUMNS,
    TASKS,
    WriteBatch,
    key_state,
    select_task,
    task_ids,
)
from ._process import open_writer_process
from ._rows import RowMapper
from ._schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION

T = TypeVar("T")

_JOURNAL_MODES = frozenset({"wal", "delete", "truncate", "persist"})
#: PRAGMA synchronous levels by name, and their numbers as SQLite reports them.
_SYNCHRONOUS = {"off": 0, "normal": 1, "full": 2, "extra": 3}

#: sqlite3 errors about the values of one statement (see ``blames_command``).
_COMMAND_FAULTS = (
    sqlite3.IntegrityError,
    sqlite3.ProgrammingError,
    sqlite3.InterfaceError,
    sqlite3.DataError,
)

_CORRUPT_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
_LOCKED_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


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


def _rollback_quietly(connection: sqlite3.Connection) -> None:
    # Called while another error propagates: that error is the one to report.
    # A rollback that fails leaves the transaction open; the next batch
    # rolls it back before it begins.
    with suppress(sqlite3.Error):
        if connection.in_transaction:
            connection.rollback()


#: The commands that change one task, named by its id (``task_ids``).
_ONE_TASK_COMMANDS = (CreateTask, TaskWrite, ClaimTask, UpdateStatus)


class SQLiteBackend(Backend):
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

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        journal_mode: str = "wal",
        synchronous: str = "full",
        busy_timeout: float = 5.0,
        max_idle_readers: int = 4,
        writer: str = "process",
    ) -> None:
        self.path = os.fspath(path)
        if writer not in ("process", "thread"):
            raise BackendUnavailableError(f"writer {writer!r} is not 'process' or 'thread'")
        self.writer = writer
        if self.path in ("", ":memory:"):
            raise BackendUnavailableError(
                f"SQLite path {self.path!r} is not supported: readers use their own "
                "connections, which would each see a different empty database; "
                "use a file path, or memory:// for a throwaway store"
            )
        if journal_mode.lower() not in _JOURNAL_MODES:
            raise BackendUnavailableError(
                f"journal_mode {journal_mode!r} is not one of {sorted(_JOURNAL_MODES)}"
            )
        if synchronous.lower() not in _SYNCHRONOUS:
            raise BackendUnavailableError(
                f"synchronous {synchronous!r} is not one of {sorted(_SYNCHRONOUS)}"
            )
        self.journal_mode = journal_mode.lower()
        self.synchronous = synchronous.lower()
        self.busy_timeout = busy_timeout
        self.max_idle_readers = max_idle_readers
        # _lock guards _writer and _idle_readers; _write_lock serializes every
        # use of the writer connection (apply, pragmas, close).
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        self._idle_readers: list[sqlite3.Connection] = []
        # The writer's copy of the task rows it wrote last (see WriteBatch),
        # valid while PRAGMA data_version says no other connection wrote.
        # _rows_lock guards _rows and _generation: the storage actor decides a
        # plan in trio while the worker thread writes the one before it.
        self._rows: dict[str, list[Any]] = {}
        self._rows_lock = threading.RLock()
        self._generation = 0
        self._data_version: int | None = None
        #: Most task rows the writer keeps (unfinished tasks it wrote lately).
        self.max_cached_rows = 250_000

    def __repr__(self) -> str:
        return f"SQLiteBackend({self.path!r})"

    # -- errors --------------------------------------------------------------
    def _translate(self, exc: sqlite3.Error, doing: str) -> StorageError:
        code = getattr(exc, "sqlite_errorcode", sqlite3.SQLITE_ERROR) & 0xFF
        if code in _CORRUPT_CODES:
            return CorruptStoreError(
                f"cannot {doing} {self.path}: it is not a taskactors store or it is damaged ({exc})"
            )
        if code in _LOCKED_CODES:
            return BackendUnavailableError(
                f"cannot {doing} {self.path}: the database is locked by another connection "
                f"(waited busy_timeout={self.busy_timeout}s): {exc}"
            )
        return BackendUnavailableError(f"cannot {doing} {self.path}: {exc}")

    def blames_command(self, error: Exception) -> bool:
        """Whether a batch's error is a command's fault (issue #17): the
        default's (a string that cannot be encoded, an integer out of
        range...), or the errors ``sqlite3`` ties to a statement's values
        (a constraint, a binding, a value SQLite cannot hold). Not a closed
        connection, nor an operational error (locked, disk full, I/O): those
        are the store's, already BackendUnavailableError."""
        if isinstance(error, sqlite3.ProgrammingError):
            return "closed" not in str(error)
        return isinstance(error, _COMMAND_FAULTS) or _isolate.blames_command(error)

    @contextmanager
    def _mapped(self, doing: str) -> Iterator[None]:
        try:
            yield
        except _COMMAND_FAULTS:
            raise  # a command's values, or a bug in this module: not a state of the database
        except sqlite3.Error as exc:
            raise self._translate(exc, doing) from exc

    # -- connections -----------------------------------------------------------
    def _connect(self, *, reader: bool) -> sqlite3.Connection:
        with self._mapped("open"):
            # isolation_level=None: no implicit transactions; apply and the
            # migrations issue BEGIN IMMEDIATE / COMMIT themselves.
            connection = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout,
                isolation_level=None,
                check_same_thread=False,
                cached_statements=256,
            )
        with ExitStack() as on_error, self._mapped("open"):
            on_error.callback(connection.close)
            connection.execute(f"PRAGMA synchronous = {self.synchronous}")
            if reader:
                connection.execute("PRAGMA query_only = ON")
            on_error.pop_all()
        return connection

    def _writer_connection(self) -> sqlite3.Connection:
        writer = self._writer
        if writer is None:
            raise StorageClosedError(f"the SQLite store {self.path} is not open")
        return writer

    def _take_reader(self) -> sqlite3.Connection:
        with self._lock:
            if self._writer is None:
                raise StorageClosedError(f"the SQLite store {self.path} is not open")
            if self._idle_readers:
                return self._idle_readers.pop()
        return self._connect(reader=True)

    def _give_back(self, connection: sqlite3.Connection) -> None:
        with self._lock:
            if (
                self._writer is not None
                and not connection.in_transaction
                and len(self._idle_readers) < self.max_idle_readers
            ):
                self._idle_readers.append(connection)
                return
        connection.close()

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        connection = self._take_reader()
        try:
            with self._mapped("read"):
                return fn(connection)
        finally:
            self._give_back(connection)

    # -- lifecycle -------------------------------------------------------------
    def open(self) -> None:
        """Connect, set the journal mode, create or migrate the schema.

        Opening an open backend does nothing; a closed one may be opened again.

        Raises:
            BackendUnavailableError: the file cannot be opened or created, or
                is locked beyond busy_timeout, or refuses the journal mode.
            CorruptStoreError: the file is not a taskactors store, or is damaged.
            SchemaVersionError: the store was made by a newer taskactors.
        """
        with self._lock:
            if self._writer is not None:
                return
        writer = self._connect(reader=False)
        with ExitStack() as on_error, self._mapped("open"):
            on_error.callback(writer.close)
            (mode,) = writer.execute(f"PRAGMA journal_mode = {self.journal_mode}").fetchone()
            if str(mode).lower() != self.journal_mode:
                raise BackendUnavailableError(
                    f"cannot open {self.path}: SQLite refused journal_mode={self.journal_mode} "
                    f"(the database is in {mode} mode)"
                )
            self._migrate(writer)
            on_error.pop_all()
        with self._lock:
            self._writer = writer

    def _migrate(self, connection: sqlite3.Connection) -> None:
        connection.execute("BEGIN IMMEDIATE")
        committed = False
        try:
            (application_id,) = connection.execute("PRAGMA application_id").fetchone()
            (version,) = connection.execute("PRAGMA user_version").fetchone()
            if application_id not in (0, APPLICATION_ID):
                raise CorruptStoreError(
                    f"{self.path} is not a taskactors store "
                    f"(it belongs to the application {application_id:#x})"
                )
            if version > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"{self.path} has schema version {version}, newer than version "
                    f"{SCHEMA_VERSION} that this taskactors knows: open it with a newer taskactors"
                )
            if version == 0 and connection.execute("SELECT 1 FROM sqlite_master").fetchone():
                raise CorruptStoreError(
                    f"{self.path} is not a taskactors store "
                    "(it is an SQLite database with tables but no schema version)"
                )
            for statements in MIGRATIONS[version:]:
                for statement in statements:
                    connection.execute(statement)
            if version != SCHEMA_VERSION:
                connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            if application_id != APPLICATION_ID:
                connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            connection.execute("COMMIT")
            committed = True
        finally:
            if not committed:
                _rollback_quietly(connection)

    def close(self) -> None:
        """Close every connection. Idempotent.

        A batch being applied finishes first; a read in progress keeps its
        connection until it ends, then closes it.
        """
        with self._lock:
            writer, self._writer = self._writer, None
            idle, self._idle_readers = self._idle_readers, []
        with self._mapped("close"):
            for connection in idle:
                connection.close()
            if writer is not None:
                with self._write_lock:
                    writer.close()

    def pragmas(self) -> dict[str, Any]:
        """The settings in force on the writer connection, as SQLite reports them.

        Returns:
            ``journal_mode`` and ``synchronous`` (names, lower case),
            ``busy_timeout`` (seconds) and ``user_version`` (the schema version).

        Raises:
            StorageClosedError: the backend is not open.
        """
        with self._write_lock, self._mapped("read the settings of"):
            connection = self._writer_connection()
            (mode,) = connection.execute("PRAGMA journal_mode").fetchone()
            (level,) = connection.execute("PRAGMA synchronous").fetchone()
            (timeout,) = connection.execute("PRAGMA busy_timeout").fetchone()
            (version,) = connection.execute("PRAGMA user_version").fetchone()
        names = {number: name for name, number in _SYNCHRONOUS.items()}
        return {
            "journal_mode": str(mode).lower(),
            "synchronous": names.get(level, str(level)),
            "busy_timeout": timeout / 1000,
            "user_version": version,
        }

    # -- writes --------------------------------------------------------------
    def apply(self, commands: Sequence[Command], now: float) -> list[object]:
        """Apply commands in order, in one transaction; one outcome per command.

        See ``Backend.apply`` and the module docstring.

        Raises:
            BackendUnavailableError: the batch failed (locked, disk full, I/O);
                nothing of it is applied.
            CorruptStoreError: the database is damaged.
            StorageClosedError: the backend is not open.
        """
        if not commands:
            return []
        with (
            self._write_lock,
            self._rows_lock,
            self._mapped(f"write a batch of {len(commands)} commands to"),
        ):
            return self._apply_locked(commands, now, None)

    def plan(self, commands: Sequence[Command], now: float) -> WriteBatch | None:
        """A plan for a batch, to decide on the rows this writer holds.

        For the storage actor, which decides the plan from trio (``decide``,
        a slice at a time) and hands it to ``execute_plan`` in its worker
        thread: deciding is Python that needs the GIL, writing is SQLite that
        lets go of it. The actor decides the next batch while the worker
        writes this one (issue #5), so a plan is decided on the rows as the
        plans before it left them, committed or not; ``execute_plan``
        decides again from the database if one of those did not commit.
        None when the batch needs the database to decide (see
        ``WriteBatch.plannable``); then ``apply`` it, once every plan before
        it is executed. Nothing is written until ``execute_plan``.
        """
        if self._writer is None or not commands:
            return None
        with self._rows_lock:
            batch = WriteBatch(None, now, self._rows)
            batch.generation = self._generation
            return batch if batch.plannable(commands) else None

    def decide(self, batch: WriteBatch, commands: Sequence[Command]) -> None:
        """Decide the next commands of a plan (see ``plan``); the last call seals it."""
        with self._rows_lock:
            try:
                batch.decide(commands, StorageError)
                batch.seal()
            except BaseException:
                self._forget_rows()  # a bug: whatever it changed is suspect
                raise

    def abandon(self, batch: WriteBatch) -> None:
        """Drop a plan that will not be executed (its decisions changed the rows)."""
        self._forget_rows()

    def _forget_rows(self) -> None:
        """Start a new, empty copy of the rows. Plans decided on the old one
        are stale: ``execute_plan`` decides them again from the database."""
        with self._rows_lock:
            self._rows = {}
            self._generation += 1

    forget_rows = _forget_rows

    # -- the writer process (parent: _process.py, child: _child.py) --------------------------
    def open_write_runner(self) -> AbstractAsyncContextManager[WriteRunner]:
        """For the storage actor: the writer process (``writer="process"``),
        else the worker thread."""
        if self.writer != "process" or getattr(sys, "frozen", False):
            # (a frozen application's executable cannot run ``-m``)
            return open_thread_runner(self, self)
        return open_writer_process(self)

    def child_args(self) -> list[str]:
        """The arguments of the writer process for this backend."""
        return [self.path, self.journal_mode, self.synchronous, repr(self.busy_timeout)]

    def plan_is_current(self, batch: WriteBatch) -> bool:
        """Whether a plan was decided on the rows held now (none forgotten since)."""
        with self._rows_lock:
            return batch.generation == self._generation

    def plan_rows(self, batch: WriteBatch) -> tuple[list[Any], ...]:
        """What a decided plan writes, for ``write_planned`` in the child."""
        return batch.flat_rows()

    def plan_written(self, batch: WriteBatch) -> None:
        """The child committed a plan: drop the rows it finished, as
        ``execute_plan`` does."""
        with self._rows_lock:
            if batch.rows is self._rows:
                batch.forget_finished()
                if len(self._rows) > self.max_cached_rows:
                    self._forget_rows()

    def rows_applied(
        self, commands: Sequence[Command], rows: dict[str, list[Any]], forget_all: bool
    ) -> None:
        """The child applied commands the long way: forget the rows of the
        tasks they name (or every row), keep the rows the batch left."""
        with self._rows_lock:
            if forget_all:
                self._forget_rows()
            else:
                for task_id in task_ids(commands):
                    self._rows.pop(task_id, None)
            self._rows.update(rows)

    def set_autocheckpoint(self, pages: int) -> None:
        """Set the writer connection's ``wal_autocheckpoint`` (0: off)."""
        with self._write_lock, self._mapped("set the checkpoint size of"):
            self._writer_connection().execute(f"PRAGMA wal_autocheckpoint = {int(pages)}")

    def child_started(self) -> None:
        """In the child, once open: the database as it is now is the one the
        parent's rows were read from."""
        with self._write_lock, self._mapped("read the data version of"):
            (self._data_version,) = (
                self._writer_connection().execute("PRAGMA data_version").fetchone()
            )

    def write_planned(self, tables: Sequence[list[Any]]) -> bool:
        """In the child: write a plan's rows (``plan_rows``) in one
        transaction. False, with nothing written, if another connection
        wrote since the last batch or a new task existed after all.

        Raises:
            BackendUnavailableError, CorruptStoreError: as ``apply``.
        """
        with self._write_lock, self._mapped("write a batch to"):
            connection = self._writer_connection()
            if connection.in_transaction:
                connection.rollback()
            connection.execute("BEGIN IMMEDIATE")
            committed = False
            try:
                (version,) = connection.execute("PRAGMA data_version").fetchone()
                if version != self._data_version:
                    self._data_version = version
                    return False
                try:
                    WriteBatch(connection, 0.0, {}).write_flat_rows(tables)
                except sqlite3.IntegrityError:
                    return False
                connection.execute("COMMIT")
                committed = True
                return True
            finally:
                if not committed:
                    _rollback_quietly(connection)

    def apply_for_parent(
        self, commands: Sequence[Command], now: float
    ) -> tuple[list[object], dict[str, list[Any]], bool]:
        """In the child: ``apply`` on rows read afresh; the outcomes, the rows
        the batch left, and whether the parent must forget every row it
        holds: another connection had written, or a command changed tasks by
        a predicate (a node's leases), which the rows left do not show.

        Raises:
            as ``apply``.
        """
        with self._rows_lock:
            self._forget_rows()
            generation = self._generation
        outcomes = _isolate.apply_isolating(self, commands, now)
        with self._rows_lock:
            forget_all = self._generation != generation or not all(
                isinstance(command, _ONE_TASK_COMMANDS) for command in commands
            )
            return outcomes, dict(self._rows), forget_all

    def execute_plan(
        self, batch: WriteBatch, commands: Sequence[Command], now: float
    ) -> list[object]:
        """Write a planned batch in one transaction; its outcomes.

        If another connection wrote since the plan was made, a plan before
        it did not commit, or a new task's id existed after all, the plan is
        dropped and the batch applied the long way (``apply``), in the same
        call. Raises as ``apply`` does.
        """
        with self._write_lock, self._mapped(f"write a batch of {len(commands)} commands to"):
            return self._apply_locked(commands, now, batch)

    def _apply_locked(
        self, commands: Sequence[Command], now: float, planned: WriteBatch | None
    ) -> list[object]:
        # planned is None: ``apply``, which holds the rows lock (no plan is
        # being decided meanwhile) and decides on the rows held. Else a plan;
        # the rows may be changing under the next plan: if this one is stale
        # it is decided again on rows of its own, then the rows are renewed.
        committed = False
        stale = False
        batch: WriteBatch | None = None
        try:
            connection = self._writer_connection()
            if connection.in_transaction:
                connection.rollback()  # left open by a batch whose rollback failed
            connection.execute("BEGIN IMMEDIATE")
            # Another connection (another process) committed since our
            # last batch: the rows we keep may be stale.
            (version,) = connection.execute("PRAGMA data_version").fetchone()
            if version != self._data_version:
                self._forget_rows()
                self._data_version = version
            if planned is not None:
                if planned.generation == self._generation:
                    planned.connection = connection
                    try:
                        planned.write()
                        batch = planned
                    except sqlite3.IntegrityError:
                        # A "new" task existed: decide again, from the database.
                        connection.rollback()
                        connection.execute("BEGIN IMMEDIATE")
                if batch is None:
                    stale = True
                    batch = WriteBatch(connection, now, {})
                    outcomes = self._apply_batch(batch, commands)
                else:
                    outcomes = planned.outcomes
            else:
                batch = WriteBatch(connection, now, self._rows)
                outcomes = self._apply_batch(batch, commands)
            connection.execute("COMMIT")
            committed = True
        finally:
            if not committed or stale:
                # The batch (or its plan, or the plans after it) changed them.
                self._forget_rows()
            if not committed and self._writer is not None:
                _rollback_quietly(self._writer)
        with self._rows_lock:
            if batch.rows is self._rows:
                batch.forget_finished()
                if len(self._rows) > self.max_cached_rows:
                    self._forget_rows()
        return outcomes

    def _apply_batch(self, batch: WriteBatch, commands: Sequence[Command]) -> list[object]:
        """The batch's statements, inside its open transaction (before COMMIT)."""
        return batch.apply(commands, StorageError)

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
