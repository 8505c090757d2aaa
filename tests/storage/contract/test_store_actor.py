"""The contract on the storage actor: closing, and group commit of concurrent writes.

Runs once per backend of ``conftest.BACKENDS`` (see ``__init__``).
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import storage
from storage import NewEvent, TaskState, TaskWrite

from ..factories import make_task, put
from .conftest import StoreOpener

# -- closing and group commit -------------------------------------------------


async def test_writes_after_aclose_raise_storage_closed(store: storage.Store) -> None:
    await store.aclose()
    with pytest.raises(storage.StorageClosedError):
        await store.put_task(make_task("t1"))
    with pytest.raises(storage.StorageClosedError):
        store.execute_nowait(storage.SetKeyState("k", "running"))
    await store.aclose()


async def test_writes_queued_before_aclose_are_applied(store: storage.Store) -> None:
    queued = store.execute_nowait(storage.CreateTask(make_task("t1")))
    await store.aclose()
    outcome: Any = await queued.wait()
    assert outcome.created
    assert await store.get_task("t1") is not None


async def test_calls_after_the_store_block_exits_raise_storage_closed(
    open_store: StoreOpener,
) -> None:
    async with open_store() as store:
        await put(store, make_task("t1"))
    with pytest.raises(storage.StorageClosedError):
        await store.update_status("t1", TaskState.RUNNING)
    with pytest.raises(storage.StorageClosedError):
        await store.get_task("t1")


async def test_concurrent_writes_commit_in_fewer_batches(store: storage.Store) -> None:
    await put(store, make_task("t1"))
    before = store.statistics()
    pending = [
        store.execute_nowait(TaskWrite("t1", events=(NewEvent(f"e{n}"),))) for n in range(50)
    ]
    for write in pending:
        await write.wait()
    after = store.statistics()
    assert after["writes"] - before["writes"] == 50
    assert after["batches"] - before["batches"] < 50
    events = await store.read_events("t1")
    assert [(e.seq, e.kind) for e in events] == [(n + 1, f"e{n}") for n in range(50)]


async def test_writes_from_concurrent_tasks_all_commit(store: storage.Store) -> None:
    await put(store, *(make_task(f"t{n}") for n in range(10)))

    async def writer(task_id: str) -> None:
        for n in range(5):
            await store.write(TaskWrite(task_id, events=(NewEvent(f"e{n}"),)))

    async with trio.open_nursery() as nursery:
        for n in range(10):
            nursery.start_soon(writer, f"t{n}")
    for n in range(10):
        assert [e.seq for e in await store.read_events(f"t{n}")] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("private_message", [True, False])
async def test_many_waiters_of_one_write_all_wake_with_its_outcome(
    store: storage.Store, monkeypatch: pytest.MonkeyPatch, private_message: bool
) -> None:
    # Writers park with trio's private message when it is there, else with
    # trio's public wait: both wake every waiter with the write's outcome.
    if not private_message:
        monkeypatch.setattr("storage.actor._pending._PARK", None)
    await put(store, make_task("t1"))
    pending = store.execute_nowait(TaskWrite("t1", events=(NewEvent("a"),)))
    refused = store.execute_nowait(TaskWrite("t1", epoch=99, events=(NewEvent("x"),)))
    seen: list[object] = []

    async def wait_for(write: storage.PendingWrite) -> None:
        try:
            seen.append(await write.wait())
        except storage.StaleEpochError as exc:
            seen.append(exc)

    async with trio.open_nursery() as nursery:
        for write in (pending, pending, refused, refused):
            nursery.start_soon(wait_for, write)
    assert [type(outcome).__name__ for outcome in seen].count("TaskWriteResult") == 2
    assert [type(outcome).__name__ for outcome in seen].count("StaleEpochError") == 2
