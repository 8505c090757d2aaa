"""The SQLite backend's connections: the writer, the pool of readers, and
their lifecycle (open and migrate, close), with the ``sqlite3`` errors
mapped where they leave (see the theory of operation in ``_backend.py``).

``SQLiteConnections`` is the base of the backend's classes: ``SQLiteWrites``
(``_writes.py``) writes on its writer connection, ``SQLiteBackend``
(``_backend.py``) reads on its readers.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from typing import Any, TypeVar

from .. import _isolate
from ..model._errors import (
    BackendUnavailableError,
    CorruptStoreError,
    SchemaVersionError,
    StorageClosedError,
    StorageError,
)
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


def _rollback_quietly(connection: sqlite3.Connection) -> None:
    # Called while another error propagates: that error is the one to report.
    # A rollback that fails leaves the transaction open; the next batch
    # rolls it back before it begins.
    with suppress(sqlite3.Error):
        if connection.in_transaction:
            connection.rollback()


class SQLiteConnections:
    """The connections of an SQLite store and their lifecycle; the state of
    the whole backend (its arguments: see ``SQLiteBackend``)."""

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
