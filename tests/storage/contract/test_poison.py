"""A write that cannot be applied fails alone (issue #17), on every backend.

A poisoned command in the middle of a batch of good ones, for each command
kind: the good ones are applied and answered, the poisoned one is answered
with ``InvalidWriteError`` and stores nothing, and the writer (thread or
process) goes on serving. Two poisons: a value of the wrong type that no
backend can key on (a list where an id goes), and a string that is not valid
Unicode (a lone surrogate, which a JSON request may carry as ``"\\ud800"``),
which a backend that encodes its text cannot store (the memory backend keeps
Python strings as they are, and stores it).
"""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
import trio

import storage
from storage import (
    ClaimTask,
    Command,
    CompareAndSetKeyState,
    CreateTask,
    DeleteKeyState,
    NewEvent,
    NodeRecord,
    RegisterNode,
    ReleaseTasks,
    RemoveNode,
    RenewLeases,
    SetDeterministicValue,
    SetKeyState,
    SetWorkflowData,
    TaskRecord,
    TaskState,
    TaskWrite,
    UpdateStatus,
)
from storage._isolate import apply_isolating
from storage.model import _commands
from storage.sqlite._backend import SQLiteBackend
from storage.sqlite._process import WriterProcess

from .conftest import StoreOpener

SURROGATE = "\ud800"
#: A value no backend can key on: unhashable, and no SQL type.
UNKEYABLE: Any = ["not", "an", "id"]


def _record(task_id: Any, input: str = '{"n":1}') -> TaskRecord:
    return TaskRecord(
        id=task_id,
        name="job",
        state=TaskState.PENDING,
        input=input,
        created_at=1_000.0,
        updated_at=1_000.0,
        root_id=task_id,
    )


def _poisons(bad: Any) -> dict[str, Command]:
    """One poisoned command of each kind, carrying ``bad`` where it hurts."""
    return {
        "CreateTask": CreateTask(_record(bad)),
        "TaskWrite": TaskWrite(bad, events=(NewEvent("emitted"),)),
        "ClaimTask": ClaimTask(bad, "node", 5_000.0),
        "RenewLeases": RenewLeases(bad, 5_000.0),
        "ReleaseTasks": ReleaseTasks("node", (bad,)),
        "RegisterNode": RegisterNode(NodeRecord(bad, 1_000.0, 5_000.0)),
        "RemoveNode": RemoveNode(bad),
        "UpdateStatus": UpdateStatus(bad, TaskState.RUNNING),
        "SetKeyState": SetKeyState(bad, "poisoned"),
        "CompareAndSetKeyState": CompareAndSetKeyState(bad, "poisoned", "old", negate=True),
        "DeleteKeyState": DeleteKeyState(bad),
        "SetWorkflowData": SetWorkflowData(bad, "key", '"poisoned"'),
        "SetDeterministicValue": SetDeterministicValue(bad, "key", '"poisoned"'),
    }


def _payload_poisons(bad: str) -> dict[str, Command]:
    """Poisoned commands aimed at records that exist: a bad payload, not a bad key."""
    return {
        "CreateTask": CreateTask(_record("new", input=bad)),
        "TaskWrite": TaskWrite("t0", events=(NewEvent("emitted", bad),)),
        "ClaimTask": ClaimTask("t0", bad, 5_000.0),
        "RenewLeases": RenewLeases(bad, 5_000.0),
        "ReleaseTasks": ReleaseTasks(bad),
        "RegisterNode": RegisterNode(NodeRecord("n2", 1_000.0, 5_000.0, info=bad)),
        "RemoveNode": RemoveNode(bad),
        "UpdateStatus": UpdateStatus("t0", TaskState.RUNNING, error=bad),
        "SetKeyState": SetKeyState("k", bad),
        "CompareAndSetKeyState": CompareAndSetKeyState("k", bad, "old"),
        "DeleteKeyState": DeleteKeyState(bad),
        "SetWorkflowData": SetWorkflowData("w", "key", bad),
        "SetDeterministicValue": SetDeterministicValue("w", "key", bad),
    }


KINDS = sorted(_poisons(UNKEYABLE))


def test_every_command_kind_has_a_poison() -> None:
    kinds = {cls.__name__ for cls in _commands.Command.__args__}  # type: ignore[attr-defined]
    assert kinds == set(KINDS) == set(_payload_poisons(SURROGATE))


async def _seed(store: storage.Store) -> None:
    await store.put_task(_record("t0"), [NewEvent("submitted")])
    await store.put_task(_record("t1"), [NewEvent("submitted")])
    await store.execute(ClaimTask("t0", "node", 2_000.0))
    await store.execute(RegisterNode(NodeRecord("node", 1_000.0, 5_000.0)))
    await store.execute(SetKeyState("k", "old"))
    await store.execute(SetWorkflowData("w", "key", '"old"'))


async def _contents(store: storage.Store) -> tuple[object, ...]:
    """What a poisoned command could have changed (the good ones touch task
    t1 and the keys "before" and "after" only)."""
    backend, now = store.backend, store.clock.now()
    return (
        [record.id for record in await store.list_tasks()],
        await store.get_task("t0"),
        await store.read_events("t0"),
        backend.list_nodes(now),
        backend.get_key_state("k", now),
        backend.get_workflow_data("w", "key"),
        backend.get_deterministic_value("w", "key"),
    )


async def _poisoned_batch(store: storage.Store, poison: Command, kind: str) -> None:
    await _seed(store)
    before = await _contents(store)
    actor = store._writer
    batches = actor.batches
    child = actor._runner._process.pid if isinstance(actor._runner, WriterProcess) else None
    committed: list[str] = []
    store.add_commit_listener(lambda events: committed.extend(event.kind for event in events))

    # Queued before any await: one batch.
    first = actor.submit_nowait(SetKeyState("before", "1"))
    good_event = actor.submit_nowait(TaskWrite("t1", events=(NewEvent("good"),)))
    poisoned = actor.submit_nowait(poison)
    last = actor.submit_nowait(SetKeyState("after", "1"))

    with pytest.raises(storage.InvalidWriteError, match=kind) as refused:
        await poisoned.wait()
    assert not isinstance(refused.value, storage.BackendUnavailableError)
    assert refused.value.kind == kind
    assert await first.wait() is None
    assert await last.wait() is None
    await good_event.wait()
    assert actor.batches == batches + 1, "the four writes shared one batch"

    # The good writes are stored, the poisoned one changed nothing.
    now = store.clock.now()
    assert store.backend.get_key_state("before", now) == "1"
    assert store.backend.get_key_state("after", now) == "1"
    assert committed == ["good"]
    assert [event.kind for event in await store.read_events("t1")] == ["submitted", "good"]
    assert await _contents(store) == before

    # The writer goes on serving, with the same process.
    await store.execute(SetKeyState("later", "1"))
    assert store.backend.get_key_state("later", store.clock.now()) == "1"
    if child is not None:
        assert isinstance(actor._runner, WriterProcess)
        assert actor._runner._process.pid == child
        assert actor._runner._process.returncode is None


@pytest.mark.parametrize("kind", KINDS)
async def test_a_poisoned_key_fails_alone(
    open_store: StoreOpener, kind: str, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_store() as store:
        await _poisoned_batch(store, _poisons(UNKEYABLE)[kind], kind)


# (The memory backend keeps Python strings as they are: no poison there.)
@pytest.mark.backends("sqlite", "sqlite-thread")
@pytest.mark.parametrize("kind", KINDS)
async def test_a_string_that_is_not_unicode_fails_alone(
    open_store: StoreOpener, kind: str, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_store() as store:
        await _poisoned_batch(store, _payload_poisons(SURROGATE)[kind], kind)


def test_a_command_is_blamed_for_its_values_not_for_the_store(tmp_path: Any) -> None:
    memory = storage.backend_from_url("memory://")
    assert memory.blames_command(UnicodeEncodeError("utf-8", SURROGATE, 0, 1, "surrogate"))
    assert memory.blames_command(OverflowError("int too big"))
    assert memory.blames_command(TypeError("unhashable type: 'list'"))
    assert not memory.blames_command(OSError("disk full"))
    assert not memory.blames_command(storage.BackendUnavailableError("locked"))

    sqlite = SQLiteBackend(tmp_path / "x.db")
    assert sqlite.blames_command(sqlite3.IntegrityError("UNIQUE constraint failed"))
    assert sqlite.blames_command(sqlite3.InterfaceError("Error binding parameter 1"))
    assert sqlite.blames_command(sqlite3.DataError("string or blob too big"))
    assert sqlite.blames_command(sqlite3.ProgrammingError("type 'list' is not supported"))
    assert not sqlite.blames_command(
        sqlite3.ProgrammingError("Cannot operate on a closed database.")
    )
    assert not sqlite.blames_command(sqlite3.OperationalError("database or disk is full"))
    assert not sqlite.blames_command(storage.BackendUnavailableError("locked"))
    assert not sqlite.blames_command(BrokenPipeError())


async def test_a_store_failure_fails_the_batch_without_isolating_it() -> None:
    calls: list[int] = []

    class Down:
        def apply(self, commands: Any, now: float) -> list[object]:
            calls.append(len(commands))
            raise OSError("disk full")

        def blames_command(self, error: Exception) -> bool:
            return storage.Backend.blames_command(self, error)  # type: ignore[arg-type]

    with pytest.raises(OSError):
        apply_isolating(Down(), [DeleteKeyState("a"), DeleteKeyState("b")], 0.0)
    assert calls == [2]
