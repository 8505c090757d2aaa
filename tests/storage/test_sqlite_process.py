"""The SQLite writer process (``storage/sqlite/_process.py``): the default
writer of a file store. The contract suite runs on it already; these tests
check what only it has: plans refused after another process wrote, in order,
a writer process that dies, and the option that keeps the writer a thread.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
import trio

import storage
from storage import BackendUnavailableError, NewEvent, StaleEpochError, TaskState, TaskWrite
from storage._open import backend_from_url
from storage._worker import ThreadRunner
from storage.sqlite._backend import SQLiteBackend
from storage.sqlite._process import WriterProcess

from .test_sqlite import make_task

CANCEL_CHILD = Path(__file__).with_name("cancel_child.py")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "tasks.db"


def _child(store: storage.Store) -> trio.Process:
    process = store._writer._runner
    assert isinstance(process, WriterProcess), "the store has no writer process"
    return process._process


def test_the_writer_is_a_process_unless_the_url_asks_for_a_thread(path: Path) -> None:
    assert isinstance(backend := backend_from_url(f"sqlite:///{path}"), SQLiteBackend)
    assert backend.writer == "process"
    assert isinstance(backend := backend_from_url(f"sqlite:///{path}?writer=thread"), SQLiteBackend)
    assert backend.writer == "thread"
    with pytest.raises(BackendUnavailableError, match="writer 'fibre'"):
        backend_from_url(f"sqlite:///{path}?writer=fibre")
    with pytest.raises(BackendUnavailableError, match=r"unknown SQLite option\(s\) \['mode'\]"):
        backend_from_url(f"sqlite:///{path}?mode=fast")


async def test_a_store_writes_through_its_own_process_and_ends_it_on_close(path: Path) -> None:
    async with storage.open(f"sqlite:///{path}") as store:
        await store.put_task(make_task("a"), [NewEvent("submitted")])
        child = _child(store)
        assert child.pid != os.getpid()
        await store.write(TaskWrite("a", events=(NewEvent("one"), NewEvent("two"))))
        assert child.returncode is None
    assert child.returncode == 0
    with closing(sqlite3.connect(path)) as connection:
        kinds = [row[0] for row in connection.execute("SELECT kind FROM events ORDER BY seq")]
    assert kinds == ["submitted", "one", "two"]


async def test_a_write_after_another_process_took_the_task_is_decided_on_its_row(
    path: Path,
) -> None:
    async with storage.open(f"sqlite:///{path}") as store:
        await store.put_task(make_task("a"))
        owned = await store.claim_task("a", "node-a", lease=60)
        # The writer holds the row it wrote; another node takes the task.
        with closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("UPDATE tasks SET owner = 'node-b', epoch = epoch + 1 WHERE id = 'a'")
        with pytest.raises(StaleEpochError):
            await store.write(TaskWrite("a", epoch=owned.epoch, state=TaskState.RUNNING))
        record = await store.get_task("a")
        assert record is not None
        assert (record.owner, record.epoch) == ("node-b", owned.epoch + 1)
        assert record.state is TaskState.PENDING
        # The rows are read again: a write fenced by the new epoch goes through.
        result = await store.write(TaskWrite("a", epoch=owned.epoch + 1, state=TaskState.RUNNING))
        assert result.state is TaskState.RUNNING


async def test_writes_behind_a_refused_plan_are_written_after_it_in_order(path: Path) -> None:
    async with storage.open(f"sqlite:///{path}") as store:
        for name in ("a", "b"):
            await store.put_task(make_task(name))
        with closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            other.execute("UPDATE tasks SET last_seq = 1 WHERE id = 'b'")
            other.execute(
                "INSERT INTO events (task_id, seq, at, kind, data)"
                " VALUES ('b', 1, 0.0, 'foreign', '{}')"
            )
            other.execute("COMMIT")
        # Queued at once: the first batches are planned on rows the other
        # connection made stale; the writer refuses them, and they and every
        # write behind them must still land once each, in order.
        pending = [
            store.execute_nowait(TaskWrite(name, events=(NewEvent(f"{name}{i}"),)))
            for i in range(300)
            for name in ("a", "b")
        ]
        for write in pending:
            await write.wait()
        events = await store.read_events("a")
        assert [event.kind for event in events] == [f"a{i}" for i in range(300)]
        assert [event.seq for event in events] == list(range(1, 301))
        events = await store.read_events("b")
        assert [event.kind for event in events] == ["foreign"] + [f"b{i}" for i in range(300)]
        assert [event.seq for event in events] == list(range(1, 302))


async def test_a_writer_process_that_dies_is_replaced(path: Path) -> None:
    async with storage.open(f"sqlite:///{path}") as store:
        await store.put_task(make_task("a"))
        child = _child(store)
        child.send_signal(signal.SIGKILL)
        await child.wait()
        # A write sent before the new child took over fails, and says that it
        # may or may not be in the store; the ones after it go through.
        written: list[str] = []
        for i in range(3):
            try:
                await store.write(TaskWrite("a", events=(NewEvent(f"after{i}"),)))
            except BackendUnavailableError as exc:
                assert i == 0, exc
                assert "exited (code -9) before answering" in str(exc)
                assert "may or may not be in the store" in str(exc)
            else:
                written.append(f"after{i}")
        assert _child(store) is not child
        assert written[-2:] == ["after1", "after2"]
        kinds = [event.kind for event in await store.read_events("a")]
        assert kinds[-2:] == written[-2:]
        assert [event.seq for event in await store.read_events("a")] == list(
            range(1, len(kinds) + 1)
        )


async def test_a_writer_process_that_dies_as_it_starts_is_given_up_clearly(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A child that cannot open its file dies at once, each time it starts.
    missing = str(path.parent / "missing" / "x.db")
    monkeypatch.setattr(SQLiteBackend, "child_args", lambda self: [missing, "wal", "full", "1"])
    async with storage.open(f"sqlite:///{path}") as store:
        reason = ""
        for _ in range(20):
            try:
                await store.put_task(make_task("a"))
            except BackendUnavailableError as exc:
                reason = str(exc)
                if "3 times in a row as soon as it started" in reason:
                    break
        else:
            pytest.fail("the writer process was started again and again")
        assert "until the store is opened again" in reason
        assert await store.get_task("a") is None  # nothing was written; reads go on


async def test_a_store_that_cannot_start_its_writer_process_writes_from_a_thread(
    path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def refuse(*args: object, **kwargs: object) -> trio.Process:
        raise OSError("no processes here")

    monkeypatch.setattr(trio.lowlevel, "open_process", refuse)
    async with storage.open(f"sqlite:///{path}") as store:
        await store.put_task(make_task("a"), [NewEvent("submitted")])
        await store.write(TaskWrite("a", events=(NewEvent("one"),)))
        assert isinstance(store._writer._runner, ThreadRunner)
        assert [event.kind for event in await store.read_events("a")] == ["submitted", "one"]
    assert "cannot start the SQLite writer process (no processes here)" in caplog.text


async def test_a_frozen_application_writes_from_a_thread(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    async with SQLiteBackend(path).open_write_runner() as runner:
        assert isinstance(runner, ThreadRunner)


def test_writers_learn_the_truth_when_the_store_is_cancelled_mid_batch(tmp_path: Path) -> None:
    # Cancelled at one moment or another of its first batches: a write that
    # reports success is in the database, one that failed is not, and nothing
    # waits for an answer that never comes (the child would hang).
    done = subprocess.run(
        [sys.executable, str(CANCEL_CHILD), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert [result["turns"] for result in results] == [1, 3, 5, 8, 13]
    for result in results:
        assert result["done"] == 3000, result
        assert result["succeeded"] == result["in_database"], result
