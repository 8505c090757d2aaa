"""The SQLite backend's write side: the batch's transaction, the rows the
writer keeps to plan batches in trio, and the writer process's hooks.

``SQLiteWrites`` applies a batch on the writer connection of its base
(``SQLiteConnections``): the long way (``apply``), or as a plan decided in
trio first (``plan``, ``decide``, ``execute_plan``) on the task rows the
writer keeps. It is the ``WriterHost`` of ``_process.py`` too: the parent's
half of the writer process (``plan_rows``, ``plan_written``,
``rows_applied``) and the child's (``child_started``, ``write_planned``,
``apply_for_parent``). See the theory of operation in ``_backend.py``.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from .. import _isolate
from .._backend import WriteRunner
from .._worker import open_thread_runner
from ..model._commands import ClaimTask, Command, CreateTask, TaskWrite, UpdateStatus
from ..model._errors import StorageError
from ._commands import WriteBatch
from ._connections import SQLiteConnections, _rollback_quietly
from ._process import open_writer_process
from ._statements import task_ids

#: The commands that change one task, named by its id (``task_ids``).
_ONE_TASK_COMMANDS = (CreateTask, TaskWrite, ClaimTask, UpdateStatus)


class SQLiteWrites(SQLiteConnections):
    """The write side of ``SQLiteBackend``; see the module docstring."""

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
