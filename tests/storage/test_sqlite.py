"""What only the SQLite backend has: a file, a schema version, locks, threads.

The behaviour every backend shares is in ``contract/``; these tests
check the SQLite side of it: pragmas, migrations, error mapping at the
boundary, group commit atomicity, and readers that do not wait for the writer.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import storage
from storage import (
    BackendUnavailableError,
    Command,
    CorruptStoreError,
    CreateResult,
    CreateTask,
    JournalWrite,
    NewEvent,
    RecordNotFoundError,
    SchemaVersionError,
    StaleEpochError,
    StorageClosedError,
    TaskRecord,
    TaskState,
    TaskWrite,
    TaskWriteResult,
    UsageRecord,
)
from storage.sqlite import _connections as _sqlite  # (where open migrates)
from storage.sqlite._backend import SQLiteBackend
from storage.sqlite._commands import WriteBatch
from storage.sqlite._schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION

from .factories import make_task

NOW = 1_000.0


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "tasks.db"


@pytest.fixture
def backend(path: Path) -> Iterator[SQLiteBackend]:
    opened = SQLiteBackend(path)
    opened.open()
    yield opened
    opened.close()


def raw(path: Path) -> closing[sqlite3.Connection]:
    """A connection of another "process", in autocommit mode."""
    return closing(sqlite3.connect(path, isolation_level=None))


def pragma(path: Path, name: str) -> object:
    with raw(path) as connection:
        return connection.execute(f"PRAGMA {name}").fetchone()[0]


# -- settings ---------------------------------------------------------------------


def test_a_new_store_is_in_wal_mode_with_synchronous_full(
    backend: SQLiteBackend, path: Path
) -> None:
    assert backend.pragmas() == {
        "journal_mode": "wal",
        "synchronous": "full",
        "busy_timeout": 5.0,
        "user_version": SCHEMA_VERSION,
    }
    assert pragma(path, "journal_mode") == "wal"  # persistent: the file itself is in WAL mode


def test_options_change_journal_mode_synchronous_and_busy_timeout(path: Path) -> None:
    backend = SQLiteBackend(path, journal_mode="DELETE", synchronous="normal", busy_timeout=0.25)
    backend.open()
    try:
        settings = backend.pragmas()
    finally:
        backend.close()
    assert settings["journal_mode"] == "delete"
    assert settings["synchronous"] == "normal"
    assert settings["busy_timeout"] == 0.25


@pytest.mark.parametrize(
    ("journal_mode", "synchronous"), [("memory", "full"), ("wal", "sometimes")]
)
def test_unknown_options_are_refused(path: Path, journal_mode: str, synchronous: str) -> None:
    with pytest.raises(BackendUnavailableError, match="is not one of"):
        SQLiteBackend(path, journal_mode=journal_mode, synchronous=synchronous)


@pytest.mark.parametrize("url", ["sqlite://:memory:", "sqlite:///:memory:"])
def test_an_in_memory_database_is_refused_clearly(url: str) -> None:
    with pytest.raises(BackendUnavailableError, match="memory:// for a throwaway store"):
        storage.backend_from_url(url)


def test_a_sqlite_url_names_an_absolute_path(path: Path) -> None:
    backend = storage.backend_from_url(f"sqlite:///{path}")
    assert isinstance(backend, SQLiteBackend)
    assert backend.path == str(path)


# -- schema versions -----------------------------------------------------------------


def _digest(statements: tuple[str, ...]) -> str:
    normalized = "\n".join(" ".join(statement.split()) for statement in statements)
    return hashlib.sha256(normalized.encode()).hexdigest()


#: Digests of the released migrations. A released migration never changes:
#: databases in the field were made by it. Change the schema with a new step.
RELEASED_MIGRATIONS = [
    "6357401c5943240c67dd3de20a4620fec5990020a915e74d28fbcb318fdb06c5",
    "e0553a53311003bb1aee74e84854802accda5e9b5aa26a07d662a745286e1bc5",
    "9a80ebd290da3ee79aeee241a60f0a9e1d50568737c5b26807e30227f58b7e21",
]


def test_released_migrations_never_change() -> None:
    assert [_digest(step) for step in MIGRATIONS[: len(RELEASED_MIGRATIONS)]] == (
        RELEASED_MIGRATIONS
    )
    assert len(MIGRATIONS) >= 2
    assert len(MIGRATIONS) == SCHEMA_VERSION


def build_v1_database(path: Path) -> None:
    """A store as taskactors with schema version 1 left it, with a task in it."""
    with raw(path) as connection:
        connection.execute("PRAGMA journal_mode = wal")
        for statement in MIGRATIONS[0]:
            connection.execute(statement)
        connection.execute(
            "INSERT INTO tasks (id, name, state, input, created_at, updated_at, thread_id,"
            " root_id, last_seq) VALUES ('old', 'job', 'running', '{}', 5.0, 6.0, 'th', 'old', 1)"
        )
        connection.execute(
            "INSERT INTO events (task_id, seq, kind, at, data)"
            " VALUES ('old', 1, 'started', 5.0, '{}')"
        )
        connection.execute(
            'INSERT INTO journal (task_id, "index", kind, name, value, run, at)'
            " VALUES ('old', 0, 'step', 'fetch', '\"page\"', 1, 5.5)"
        )
        connection.execute("PRAGMA user_version = 1")


def test_a_v1_database_is_migrated_and_keeps_its_data(path: Path) -> None:
    build_v1_database(path)
    backend = SQLiteBackend(path)
    backend.open()
    try:
        assert backend.pragmas()["user_version"] == SCHEMA_VERSION
        record = backend.get_task("old")
        assert record is not None
        assert (record.state, record.thread_id, record.last_seq) == (TaskState.RUNNING, "th", 1)
        assert [event.kind for event in backend.read_events("old")] == ["started"]
        assert [entry.name for entry in backend.read_journal("old")] == ["fetch"]
        # The upgraded store takes writes where the old one left off.
        (outcome,) = backend.apply([TaskWrite("old", events=(NewEvent("resumed"),))], NOW)
        assert isinstance(outcome, TaskWriteResult)
        assert [event.seq for event in outcome.events] == [2]
    finally:
        backend.close()
    with raw(path) as connection:
        indexes = {
            name
            for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
    assert {"tasks_by_user", "tasks_by_thread", "tasks_by_state", "tasks_by_owner"} <= indexes
    assert pragma(path, "application_id") == APPLICATION_ID


def test_list_queries_use_indexes(backend: SQLiteBackend, path: Path) -> None:
    with raw(path) as connection:
        for column, index in (
            ("user_id", "tasks_by_user"),
            ("thread_id", "tasks_by_thread"),
            ("parent_id", "tasks_by_parent"),
            ("state", "tasks_by_state"),
            ("owner", "tasks_by_owner"),
        ):
            plan = connection.execute(
                f"EXPLAIN QUERY PLAN SELECT * FROM tasks WHERE {column} = ?"
                " ORDER BY created_at, id",
                ("x",),
            ).fetchall()
            assert any(f"USING INDEX {index}" in str(row[-1]) for row in plan), (column, plan)


def test_the_indexes_of_optional_columns_hold_only_the_tasks_that_have_one(
    backend: SQLiteBackend, path: Path
) -> None:
    with raw(path) as connection:
        definitions = dict(
            connection.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'")
        )
    for column in ("user", "thread", "parent"):
        assert definitions[f"tasks_by_{column}"].endswith(f"WHERE {column}_id IS NOT NULL")
    assert "WHERE" not in definitions["tasks_by_created"]


def test_a_migration_that_fails_leaves_the_database_at_its_version(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_v1_database(path)
    broken = (*MIGRATIONS, ("CREATE TABLE extra (x)", "THIS IS NOT SQL"))
    monkeypatch.setattr(_sqlite, "MIGRATIONS", broken)
    monkeypatch.setattr(_sqlite, "SCHEMA_VERSION", len(broken))
    with pytest.raises(BackendUnavailableError):
        SQLiteBackend(path).open()
    assert pragma(path, "user_version") == 1
    with raw(path) as connection:
        tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master")}
    assert "extra" not in tables
    assert "tasks_by_user" not in tables  # migration 2 rolled back with the broken step


def test_a_newer_schema_version_is_refused(path: Path) -> None:
    backend = SQLiteBackend(path)
    backend.open()
    backend.close()
    with raw(path) as connection:
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(SchemaVersionError) as info:
        SQLiteBackend(path).open()
    message = str(info.value)
    assert str(path) in message
    assert f"schema version {SCHEMA_VERSION + 1}" in message
    assert "newer taskactors" in message
    assert pragma(path, "user_version") == SCHEMA_VERSION + 1  # left as it was


# -- errors at the boundary --------------------------------------------------------------


def test_a_garbage_file_is_a_corrupt_store(path: Path) -> None:
    path.write_bytes(b"this is not an SQLite database\n" * 512)
    with pytest.raises(CorruptStoreError) as info:
        SQLiteBackend(path).open()
    assert str(path) in str(info.value)
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)


def test_another_applications_database_is_refused(path: Path) -> None:
    with raw(path) as connection:
        connection.execute("CREATE TABLE invoices (id INTEGER)")
    with pytest.raises(CorruptStoreError, match="not a taskactors store"):
        SQLiteBackend(path).open()
    with raw(path) as connection:
        tables = [name for (name,) in connection.execute("SELECT name FROM sqlite_master")]
    assert tables == ["invoices"]


def test_a_path_in_a_missing_directory_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "tasks.db"
    with pytest.raises(BackendUnavailableError) as info:
        SQLiteBackend(path).open()
    assert str(path) in str(info.value)
    assert isinstance(info.value.__cause__, sqlite3.OperationalError)


def test_opening_a_database_locked_beyond_busy_timeout_is_unavailable(path: Path) -> None:
    with raw(path) as other:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(BackendUnavailableError, match="locked by another connection"):
            SQLiteBackend(path, busy_timeout=0).open()


async def test_a_write_to_a_database_locked_by_another_connection_fails_clearly(
    path: Path,
) -> None:
    async with storage.open_store(SQLiteBackend(path, busy_timeout=0)) as store:
        await store.put_task(make_task("a"))
        with raw(path) as other:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(
                BackendUnavailableError, match="locked by another connection"
            ) as info:
                await store.put_task(make_task("b"))
            assert str(path) in str(info.value)
            assert isinstance(info.value.__cause__, sqlite3.OperationalError)
            assert await store.get_task("a") is not None  # reads go on meanwhile
            other.execute("ROLLBACK")
        assert await store.get_task("b") is None
        assert (await store.put_task(make_task("b"))).created


def test_reads_and_writes_after_close_raise_storage_closed(backend: SQLiteBackend) -> None:
    backend.close()
    backend.close()  # idempotent
    with pytest.raises(StorageClosedError):
        backend.get_task("a")
    with pytest.raises(StorageClosedError):
        backend.apply([CreateTask(make_task("a"))], NOW)


# -- batches ------------------------------------------------------------------------------


def test_a_refused_command_changes_nothing_and_the_rest_of_the_batch_commits(
    backend: SQLiteBackend,
) -> None:
    outcomes = backend.apply(
        [
            CreateTask(make_task("a"), (NewEvent("submitted"),)),
            TaskWrite(
                "a",
                epoch=7,
                state=TaskState.RUNNING,
                events=(NewEvent("stale"),),
                journal=(JournalWrite(0, "step", "stale", "1", 1),),
                inbox_add=('"stale"',),
                result='"stale"',
            ),
            TaskWrite("missing", events=(NewEvent("lost"),)),
            TaskWrite("a", events=(NewEvent("kept"),), inbox_add=('"kept"',)),
        ],
        NOW,
    )
    created, stale, missing, kept = outcomes
    assert isinstance(created, CreateResult)
    assert created.created
    assert isinstance(stale, StaleEpochError)
    assert isinstance(missing, RecordNotFoundError)
    assert isinstance(kept, TaskWriteResult)
    record = backend.get_task("a")
    assert record is not None
    assert record.state is TaskState.PENDING
    assert [(event.seq, event.kind) for event in backend.read_events("a")] == [
        (1, "submitted"),
        (2, "kept"),
    ]
    assert backend.read_journal("a") == []
    assert [item.input for item in backend.list_inbox("a")] == ['"kept"']
    assert backend.get_result("a") is None


def test_a_batch_that_fails_midway_applies_nothing_and_the_next_commits(
    backend: SQLiteBackend,
) -> None:
    backend.apply([CreateTask(make_task("a"))], NOW)
    # White box: cap the file's size on the writer connection, so the batch
    # fails with "database or disk is full" after its first commands ran.
    writer = backend._writer
    assert writer is not None
    (pages,) = writer.execute("PRAGMA page_count").fetchone()
    (limit,) = writer.execute("PRAGMA max_page_count").fetchone()
    writer.execute(f"PRAGMA max_page_count = {pages + 2}")
    huge = NewEvent("huge", json.dumps("x" * 1_000_000))
    with pytest.raises(BackendUnavailableError, match="full") as info:
        backend.apply(
            [
                CreateTask(make_task("b")),
                TaskWrite("a", events=(NewEvent("small"),), inbox_add=('"in"',)),
                TaskWrite("a", events=(huge,)),
            ],
            NOW,
        )
    assert isinstance(info.value.__cause__, sqlite3.OperationalError)
    writer.execute(f"PRAGMA max_page_count = {limit}")
    assert backend.get_task("b") is None
    assert backend.read_events("a") == []
    assert backend.list_inbox("a") == []

    (outcome,) = backend.apply([TaskWrite("a", events=(NewEvent("after"),))], NOW)
    assert isinstance(outcome, TaskWriteResult)
    assert [event.seq for event in backend.read_events("a")] == [1]


# -- readers --------------------------------------------------------------------------------


def test_reads_do_not_wait_for_a_writer_holding_the_lock(path: Path) -> None:
    backend = SQLiteBackend(path, busy_timeout=0)  # a read that waited would fail at once
    backend.open()
    try:
        backend.apply([CreateTask(make_task("a"))], NOW)
        with raw(path) as other:
            other.execute("BEGIN IMMEDIATE")
            other.execute("UPDATE tasks SET state = 'running'")
            record = backend.get_task("a")
            assert record is not None
            assert record.state is TaskState.PENDING  # the last committed state
            other.execute("COMMIT")
        record = backend.get_task("a")
        assert record is not None
        assert record.state is TaskState.RUNNING
    finally:
        backend.close()


class GatedBackend(SQLiteBackend):
    """Stops a batch holding the gate command before its COMMIT until released (white box)."""

    GATE = storage.DeleteKeyState("gate")

    def __init__(self, path: Path) -> None:
        # A read that waited would fail at once; the gate is in this
        # process's worker thread (the writer process has its own tests).
        super().__init__(path, busy_timeout=0, writer="thread")
        self.in_batch = threading.Event()
        self.release = threading.Event()

    def _apply_batch(self, batch: WriteBatch, commands: Sequence[Command]) -> list[object]:
        outcomes = super()._apply_batch(batch, commands)
        if self.GATE in commands:
            self.in_batch.set()
            assert self.release.wait(timeout=60)
        return outcomes


async def test_reads_proceed_while_a_batch_is_in_the_middle_of_its_transaction(
    path: Path,
) -> None:
    backend = GatedBackend(path)
    async with storage.open_store(backend) as store:
        await store.put_task(make_task("a"), [NewEvent("submitted")])
        first = store.execute_nowait(TaskWrite("a", events=(NewEvent("written"),)))
        gate = store.execute_nowait(GatedBackend.GATE)
        seen: list[int] = []

        async def read() -> None:
            seen.append(len(await store.read_events("a")))

        try:
            await trio.to_thread.run_sync(backend.in_batch.wait)
            # The writer holds the write lock, with the gate's batch written
            # but not committed: every read goes on and sees the last commit.
            async with trio.open_nursery() as nursery:
                for _ in range(50):
                    nursery.start_soon(read)
            assert not first.done
        finally:
            backend.release.set()
        assert seen == [1] * 50
        await gate.wait()
        assert len(await store.read_events("a")) == 2


class HeldBackend(SQLiteBackend):
    """Holds a planned batch that writes a "hold" event in its worker thread
    until released, then fails it (``fail``) or commits it (white box)."""

    def __init__(self, path: Path, *, fail: bool) -> None:
        super().__init__(path, writer="thread")
        self.fail = fail
        self.held = threading.Event()
        self.release = threading.Event()
        #: Every command decided by a plan, in order.
        self.decided: list[Command] = []

    def decide(self, batch: WriteBatch, commands: Sequence[Command]) -> None:
        self.decided.extend(commands)
        super().decide(batch, commands)

    def execute_plan(
        self, batch: WriteBatch, commands: Sequence[Command], now: float
    ) -> list[object]:
        if not any(_holds(command) for command in commands):
            return super().execute_plan(batch, commands, now)
        self.held.set()
        assert self.release.wait(timeout=60)
        if self.fail:
            write = batch.write

            def write_then_fail() -> None:
                write()  # written in the transaction, which then fails
                raise sqlite3.OperationalError("disk I/O error")

            batch.write = write_then_fail  # type: ignore[method-assign]
        return super().execute_plan(batch, commands, now)


def _holds(command: Command) -> bool:
    return isinstance(command, TaskWrite) and any(e.kind == "hold" for e in command.events)


async def _held_then(
    store: storage.Store, backend: HeldBackend, *, release: bool = True
) -> tuple[Any, Any]:
    """Task "a" (pending, its row held by the writer); a write that makes it
    running is held in the worker thread while the next one, which expects
    it running, is decided. Both pending writes; the held one is released
    (unless ``release`` is false, or something failed)."""
    released = False
    try:
        await store.put_task(make_task("a"), [NewEvent("submitted")])
        await store.write(TaskWrite("a", events=(NewEvent("seen"),)))
        held = store.execute_nowait(
            TaskWrite("a", state=TaskState.RUNNING, events=(NewEvent("hold"),))
        )
        await trio.to_thread.run_sync(backend.held.wait)
        after = store.execute_nowait(
            TaskWrite("a", expect=frozenset({TaskState.RUNNING}), events=(NewEvent("after"),))
        )
        await trio.testing.wait_all_tasks_blocked()
        # Decided in trio while the batch before it is being written.
        assert backend.decided[-1] == after.command
        assert not held.done
        released = not release
    finally:
        if not released:
            backend.release.set()
    return held, after


async def test_the_next_batch_is_decided_while_one_is_written(path: Path) -> None:
    backend = HeldBackend(path, fail=False)
    async with storage.open_store(backend) as store:
        held, after = await _held_then(store, backend)
        await held.wait()
        result = await after.wait()
        assert isinstance(result, TaskWriteResult)
        assert [e.seq for e in result.events] == [4]
        events = await store.read_events("a")
        assert [e.kind for e in events] == ["submitted", "seen", "hold", "after"]


async def test_a_batch_decided_on_a_batch_that_failed_is_decided_again(path: Path) -> None:
    # The second write was decided on the first one's effects (the task
    # running). The first fails: the second is decided again, from the
    # database, where the task is still pending, so its fence refuses it.
    backend = HeldBackend(path, fail=True)
    async with storage.open_store(backend) as store:
        held, after = await _held_then(store, backend)
        with pytest.raises(BackendUnavailableError):
            await held.wait()
        with pytest.raises(storage.ConflictError):
            await after.wait()
        record = await store.get_task("a")
        assert record is not None and record.state is TaskState.PENDING
        assert [e.kind for e in await store.read_events("a")] == ["submitted", "seen"]
        # The writer's rows are right again: the next writes are decided on them.
        result = await store.write(TaskWrite("a", state=TaskState.RUNNING))
        assert result.record.state is TaskState.RUNNING and result.record.last_seq == 2


async def test_a_closing_store_answers_the_batches_being_written_with_the_truth(
    path: Path,
) -> None:
    # The store is cancelled with one batch in the worker and the next one
    # decided and queued behind it: both are written, and their writers get
    # their real outcomes, not "closed before applied".
    backend = HeldBackend(path, fail=False)

    async def release_once_all_wait() -> None:
        await trio.testing.wait_all_tasks_blocked()
        backend.release.set()

    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as scope:
            async with storage.open_store(backend) as store:
                held, after = await _held_then(store, backend, release=False)
                nursery.start_soon(release_once_all_wait)
                scope.cancel()
    assert isinstance(held.outcome_nowait(), TaskWriteResult)
    result = after.outcome_nowait()
    assert isinstance(result, TaskWriteResult)
    assert [e.kind for e in result.events] == ["after"]
    async with storage.open_store(SQLiteBackend(path)) as store:
        assert [e.kind for e in await store.read_events("a")] == [
            "submitted",
            "seen",
            "hold",
            "after",
        ]


async def test_batches_commit_in_the_order_their_writes_were_queued(path: Path) -> None:
    # Many writers, each waiting for its write before the next: batches are
    # decided while others are written, by whichever task finds the worker
    # free. Commits must still come in the order the writes were queued.
    tasks, writes = 300, 12
    async with storage.open(f"sqlite:///{path}") as store:
        seen: dict[str, list[int]] = {}

        def on_commit(events: Sequence[storage.StoredEvent]) -> None:
            for event in events:
                seen.setdefault(event.task_id, []).append(event.seq)

        store.add_commit_listener(on_commit)

        async def writer(task_id: str) -> None:
            await store.put_task(make_task(task_id), [NewEvent("submitted")])
            for n in range(writes):
                await store.write(TaskWrite(task_id, events=(NewEvent("step", json.dumps(n)),)))

        async with trio.open_nursery() as nursery:
            for i in range(tasks):
                nursery.start_soon(writer, f"t{i}")
        assert store.statistics()["batches"] > writes
        for i in range(tasks):
            assert seen[f"t{i}"] == list(range(1, writes + 2))
            assert [e.seq for e in await store.read_events(f"t{i}")] == seen[f"t{i}"]


async def test_reads_proceed_while_large_batches_are_applied(path: Path) -> None:
    writes = 3000
    async with storage.open(f"sqlite:///{path}") as store:
        await store.put_task(make_task("a"), [NewEvent("submitted")])
        committed = [1]  # events of "a" committed after each batch
        store.add_commit_listener(lambda events: committed.append(committed[-1] + len(events)))
        # Queued without a checkpoint: the storage actor takes them in a few
        # batches, while the readers below run in threads.
        pending = [
            store.execute_nowait(TaskWrite("a", events=(NewEvent("step", json.dumps(n)),)))
            for n in range(writes)
        ]
        seen: list[list[int]] = []

        async def read() -> None:
            seen.append([event.seq for event in await store.read_events("a")])

        async with trio.open_nursery() as nursery:
            for _ in range(200):
                nursery.start_soon(read)
        for write in pending:
            await write.wait()
        assert len(seen) == 200
        assert committed[-1] == 1 + writes and len(committed) > 2
        for seqs in seen:
            # Every read saw whole batches: before, between or after them.
            assert seqs == list(range(1, len(seqs) + 1))
            assert len(seqs) in committed
        assert len(await store.read_events("a")) == 1 + writes


async def test_data_survives_close_and_reopen(path: Path) -> None:
    url = f"sqlite:///{path}"
    async with storage.open(url) as store:
        await store.put_task(make_task("a", thread_id="th"), [NewEvent("submitted")])
        await store.write(
            TaskWrite(
                "a",
                state=TaskState.COMPLETED,
                events=(NewEvent("done", '{"ok":true}'),),
                journal=(JournalWrite(0, "step", "fetch", '"page"', 1),),
                inbox_add=('"more"',),
                result='"the result"',
                usage=(UsageRecord("a", "k1", "model", 3, 4, caller="lead", thread_id="th"),),
            )
        )
        await store.set_task_state("key", TaskState.PAUSED, ttl=None)
        await store.set_workflow_data("wf", "k", {"x": 1})
        await store.set_workflow_deterministic_value("wf", "k", 42)
        before = await store.get_task("a")

    async with storage.open(url) as store:
        assert await store.get_task("a") == before
        assert [event.kind for event in await store.read_events("a")] == ["submitted", "done"]
        assert [entry.value for entry in await store.read_journal("a")] == ['"page"']
        assert [item.input for item in await store.list_inbox("a")] == ['"more"']
        assert await store.get_result("a") == "the result"
        assert await store.get_task_state("key") is TaskState.PAUSED
        assert await store.get_workflow_data("wf", "k") == {"x": 1}
        assert await store.get_workflow_deterministic_value("wf", "k") == 42
        usage = await store.aggregate_tokens_by_thread("th")
        assert usage["total_tokens"] == 7
        assert usage["by_caller"] == {"lead": 7}
        # Inbox ids keep growing across reopen (AUTOINCREMENT).
        result = await store.write(TaskWrite("a", inbox_add=('"again"',)))
        assert result.inbox_ids == (2,)


def test_a_write_by_another_connection_is_seen_by_the_next_batch(path: Path) -> None:
    # Two backends on one file, as two processes would have: each writer
    # keeps the rows it wrote, and must not trust them once the other wrote.
    first, second = SQLiteBackend(path), SQLiteBackend(path)
    first.open()
    second.open()
    try:
        record = attrs.evolve(make_task("t"), owner="a", lease_expires=NOW + 60, epoch=1)
        [created] = first.apply([CreateTask(record)], NOW)
        assert isinstance(created, CreateResult)
        [written] = first.apply([TaskWrite("t", epoch=1, events=(NewEvent("a"),))], NOW)
        assert isinstance(written, TaskWriteResult)
        [claimed] = second.apply([storage.ClaimTask("t", "b", NOW + 60, force=True)], NOW)
        assert isinstance(claimed, TaskRecord) and claimed.epoch == 2
        [refused, accepted] = first.apply(
            [
                TaskWrite("t", epoch=1, events=(NewEvent("stale"),)),
                TaskWrite("t", epoch=2, events=(NewEvent("fresh"),)),
            ],
            NOW,
        )
        assert isinstance(refused, StaleEpochError)
        assert isinstance(accepted, TaskWriteResult)
        assert accepted.record.owner == "b" and accepted.events[0].seq == 2
        assert [event.kind for event in first.read_events("t")] == ["a", "fresh"]
    finally:
        first.close()
        second.close()


def test_a_batch_that_fails_leaves_no_trace_in_the_next_one(path: Path) -> None:
    backend = SQLiteBackend(path)
    backend.open()
    try:
        backend.apply([CreateTask(make_task("t"))], NOW)
        writer = backend._writer
        assert writer is not None
        # The COMMIT fails (the database is locked by another connection):
        # nothing of the batch may survive, in the file or in the writer's rows.
        with closing(sqlite3.connect(path)) as other:
            other.execute("BEGIN EXCLUSIVE")
            backend.busy_timeout = 0
            writer.execute("PRAGMA busy_timeout = 0")
            with pytest.raises(BackendUnavailableError):
                backend.apply([TaskWrite("t", events=(NewEvent("lost"),))], NOW)
            other.rollback()
        [written] = backend.apply([TaskWrite("t", events=(NewEvent("kept"),))], NOW)
        assert isinstance(written, TaskWriteResult)
        assert written.record.last_seq == 1 and written.events[0].seq == 1
        assert [event.kind for event in backend.read_events("t")] == ["kept"]
    finally:
        backend.close()


# -- plans: decided in trio, written in the worker thread --------------------------


def _owned(task_id: str) -> TaskRecord:
    return attrs.evolve(make_task(task_id), owner="n", lease_expires=NOW + 60, epoch=1)


def test_a_plan_decides_as_apply_would(path: Path, tmp_path: Path) -> None:
    other_path = tmp_path / "other.db"
    planned, applied = SQLiteBackend(path), SQLiteBackend(other_path)
    planned.open()
    applied.open()
    try:
        for backend in (planned, applied):
            backend.apply([CreateTask(_owned("t"))], NOW)
        batch: list[Command] = [
            CreateTask(_owned("new"), (NewEvent("state"),)),
            TaskWrite("t", epoch=1, state=TaskState.RUNNING, events=(NewEvent("a"),)),
            TaskWrite("new", epoch=1, journal=(JournalWrite(0, "step", "s", "1", 1),)),
            TaskWrite("t", epoch=2, events=(NewEvent("stale"),)),
            TaskWrite("t", expect=frozenset({TaskState.PENDING}), events=(NewEvent("late"),)),
            storage.ClaimTask("new", "m", NOW + 60, force=True),
            storage.UpdateStatus("t", TaskState.PAUSED),
        ]
        plan = planned.plan(batch, NOW + 1)
        assert plan is not None
        planned.decide(plan, batch[:3])
        planned.decide(plan, batch[3:])
        assert planned.read_events("t") == []  # nothing written before execute_plan
        outcomes = planned.execute_plan(plan, batch, NOW + 1)
        expected = applied.apply(batch, NOW + 1)
        assert [repr(outcome) for outcome in outcomes] == [repr(e) for e in expected]
        for task_id in ("t", "new"):
            assert planned.get_task(task_id) == applied.get_task(task_id)
            assert planned.read_events(task_id) == applied.read_events(task_id)
            assert planned.read_journal(task_id) == applied.read_journal(task_id)
    finally:
        planned.close()
        applied.close()


def test_no_plan_for_what_needs_the_database(backend: SQLiteBackend) -> None:
    backend.apply([CreateTask(_owned("t"))], NOW)
    assert backend.plan([TaskWrite("unknown", events=(NewEvent("a"),))], NOW) is None
    assert backend.plan([TaskWrite("t", inbox_add=('"x"',))], NOW) is None
    assert backend.plan([storage.SetKeyState("k", "running")], NOW) is None
    assert backend.plan([TaskWrite("t", events=(NewEvent("a"),))], NOW) is not None


def test_a_plan_made_stale_by_another_connection_is_decided_again(path: Path) -> None:
    first, second = SQLiteBackend(path), SQLiteBackend(path)
    first.open()
    second.open()
    try:
        first.apply([CreateTask(_owned("t"))], NOW)
        batch: list[Command] = [TaskWrite("t", epoch=1, events=(NewEvent("mine"),))]
        plan = first.plan(batch, NOW)
        assert plan is not None
        first.decide(plan, batch)
        second.apply([storage.ClaimTask("t", "m", NOW + 60, force=True)], NOW)
        [outcome] = first.execute_plan(plan, batch, NOW)
        assert isinstance(outcome, StaleEpochError)  # the plan said "written"
        assert first.read_events("t") == []
    finally:
        first.close()
        second.close()


def test_a_planned_new_task_whose_id_exists_is_not_created_twice(path: Path) -> None:
    first, second = SQLiteBackend(path), SQLiteBackend(path)
    first.open()
    second.open()
    try:
        second.apply([CreateTask(_owned("t"), (NewEvent("theirs"),))], NOW)
        # After this batch the first backend has seen the other's commit
        # (data_version), but holds no row of "t": its plan takes "t" for new,
        # and only the insert finds the id.
        first.apply([storage.DeleteKeyState("warm-up")], NOW)
        batch: list[Command] = [CreateTask(_owned("t"), (NewEvent("mine"),))]
        plan = first.plan(batch, NOW)
        assert plan is not None
        first.decide(plan, batch)
        [outcome] = first.execute_plan(plan, batch, NOW)
        assert isinstance(outcome, CreateResult) and not outcome.created
        assert [event.kind for event in first.read_events("t")] == ["theirs"]
    finally:
        first.close()
        second.close()


def test_an_abandoned_plan_leaves_the_rows_as_the_database_has_them(
    backend: SQLiteBackend,
) -> None:
    backend.apply([CreateTask(_owned("t"))], NOW)
    batch: list[Command] = [TaskWrite("t", epoch=1, events=(NewEvent("never"),))]
    plan = backend.plan(batch, NOW)
    assert plan is not None
    backend.decide(plan, batch)  # the rows now say one event more
    backend.abandon(plan)
    [written] = backend.apply([TaskWrite("t", epoch=1, events=(NewEvent("kept"),))], NOW)
    assert isinstance(written, TaskWriteResult) and written.events[0].seq == 1
