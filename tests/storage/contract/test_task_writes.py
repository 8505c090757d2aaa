"""The contract on task writes: fencing by epoch and lease, expected states, batches.

Runs once per backend of ``conftest.BACKENDS`` (see ``__init__``).
"""

from __future__ import annotations

import attrs
import pytest
import trio
import trio.testing

import storage
from storage import JournalWrite, NewEvent, TaskState, TaskWrite, UsageRecord

from ..factories import make_task, put

# -- helpers ------------------------------------------------------------------


async def snapshot(store: storage.Store, task_id: str) -> tuple[object, ...]:
    """Everything a TaskWrite can change, to check that a refusal changed nothing."""
    try:
        result: object = await store.get_result(task_id)
    except storage.RecordNotFoundError:
        result = None
    return (
        await store.get_task(task_id),
        await store.read_events(task_id),
        await store.read_journal(task_id),
        await store.list_inbox(task_id),
        result,
        await store.get_exception(task_id),
        await store.aggregate_tokens_by_thread("thread", include_active=True),
    )


def everything_write(task_id: str, epoch: int | None) -> TaskWrite:
    """A write that touches every part of a task."""
    return TaskWrite(
        task_id,
        epoch=epoch,
        state=TaskState.COMPLETED,
        events=(NewEvent("done", '{"ok":true}'),),
        journal=(JournalWrite(0, "step", "fetch", '"page"', 1),),
        inbox_add=('"more"',),
        input='{"n":2}',
        run=2,
        progress=(1.0, 1.0),
        error="boom",
        result='"the result"',
        exception=storage.ExceptionRecord("ValueError", "bad", "Traceback..."),
        usage=(UsageRecord(task_id, "k", "model", 1, 1, thread_id="thread"),),
        release=True,
    )


# -- task writes: fencing and compare-and-set ---------------------------------


async def test_write_to_an_unknown_task_raises_record_not_found(store: storage.Store) -> None:
    with pytest.raises(storage.RecordNotFoundError):
        await store.write(TaskWrite("nope", events=(NewEvent("x"),)))


async def test_write_applies_every_field_together(
    store: storage.Store, autojump_clock: trio.testing.MockClock
) -> None:
    await put(store, make_task("t1", thread_id="thread"))
    owned = await store.claim_task("t1", "node-a", lease=60)
    result = await store.write(everything_write("t1", owned.epoch))
    now = store.clock.now()
    record = result.record
    assert record.state is TaskState.COMPLETED
    assert (record.input, record.run, record.error) == ('{"n":2}', 2, "boom")
    assert (record.progress_done, record.progress_total) == (1.0, 1.0)
    assert (record.owner, record.lease_expires) == (None, None)
    assert record.epoch == owned.epoch
    assert record.updated_at == now
    assert record.last_seq == 1
    assert await store.get_task("t1") == record
    assert [(e.seq, e.kind) for e in result.events] == [(1, "done")]
    assert [item.id for item in await store.list_inbox("t1")] == list(result.inbox_ids)
    assert await store.get_result("t1") == "the result"
    assert await store.get_exception("t1") == storage.ExceptionRecord(
        "ValueError", "bad", "Traceback..."
    )
    assert [entry.name for entry in await store.read_journal("t1")] == ["fetch"]
    assert (await store.aggregate_tokens_by_thread("thread"))["total_tokens"] == 2


async def test_progress_total_may_be_unknown(store: storage.Store) -> None:
    await put(store, make_task("t1"))
    record = (await store.write(TaskWrite("t1", progress=(3.0, None)))).record
    assert (record.progress_done, record.progress_total) == (3.0, None)


async def test_write_with_the_current_epoch_and_a_live_lease_commits(
    store: storage.Store,
) -> None:
    await put(store, make_task("t1"))
    owned = await store.claim_task("t1", "node-a", lease=60)
    result = await store.write(TaskWrite("t1", epoch=owned.epoch, state=TaskState.RUNNING))
    assert result.record.state is TaskState.RUNNING


async def test_write_with_a_stale_epoch_is_refused_and_changes_nothing(
    store: storage.Store,
) -> None:
    await put(store, make_task("t1", thread_id="thread"))
    first = await store.claim_task("t1", "node-a", lease=60)
    second = await store.claim_task("t1", "node-a", lease=60)
    before = await snapshot(store, "t1")
    with pytest.raises(storage.StaleEpochError) as caught:
        await store.write(everything_write("t1", first.epoch))
    assert (caught.value.task_id, caught.value.epoch) == ("t1", first.epoch)
    assert caught.value.current_epoch == second.epoch
    assert await snapshot(store, "t1") == before


async def test_write_after_the_lease_expired_is_refused(
    store: storage.Store, autojump_clock: trio.testing.MockClock
) -> None:
    await put(store, make_task("t1"))
    owned = await store.claim_task("t1", "node-a", lease=10)
    await trio.sleep(11)
    before = await snapshot(store, "t1")
    with pytest.raises(storage.StaleEpochError):
        await store.write(TaskWrite("t1", epoch=owned.epoch, events=(NewEvent("late"),)))
    assert await snapshot(store, "t1") == before


async def test_fenced_write_to_a_released_task_is_refused(store: storage.Store) -> None:
    await put(store, make_task("t1"))
    owned = await store.claim_task("t1", "node-a", lease=60)
    await store.release_tasks("node-a")
    with pytest.raises(storage.StaleEpochError):
        await store.write(TaskWrite("t1", epoch=owned.epoch, state=TaskState.RUNNING))


async def test_unfenced_write_ignores_ownership(store: storage.Store) -> None:
    await put(store, make_task("t1"))
    await store.claim_task("t1", "node-a", lease=60)
    result = await store.write(TaskWrite("t1", state=TaskState.CANCELLED))
    assert result.record.state is TaskState.CANCELLED
    assert result.record.owner == "node-a"


async def test_write_in_an_unexpected_state_raises_conflict_and_changes_nothing(
    store: storage.Store,
) -> None:
    await put(store, make_task("t1", thread_id="thread"))
    before = await snapshot(store, "t1")
    write = attrs.evolve(everything_write("t1", None), expect=frozenset({TaskState.RUNNING}))
    with pytest.raises(storage.ConflictError) as caught:
        await store.write(write)
    assert caught.value.task_id == "t1"
    assert caught.value.expected == frozenset({"running"})
    assert caught.value.actual == "pending"
    assert await snapshot(store, "t1") == before


async def test_write_in_an_expected_state_commits(store: storage.Store) -> None:
    await put(store, make_task("t1"))
    write = TaskWrite(
        "t1", expect=frozenset({TaskState.PENDING, TaskState.RUNNING}), state=TaskState.RUNNING
    )
    assert (await store.write(write)).record.state is TaskState.RUNNING


async def test_a_refused_command_does_not_stop_the_rest_of_its_batch(
    store: storage.Store,
) -> None:
    await put(store, make_task("t1"))
    owned = await store.claim_task("t1", "node-a", lease=60)
    first = store.execute_nowait(TaskWrite("t1", events=(NewEvent("a"),)))
    stale = store.execute_nowait(TaskWrite("t1", epoch=owned.epoch - 1, events=(NewEvent("x"),)))
    last = store.execute_nowait(TaskWrite("t1", events=(NewEvent("b"),)))
    await first.wait()
    with pytest.raises(storage.StaleEpochError):
        await stale.wait()
    await last.wait()
    assert [(e.seq, e.kind) for e in await store.read_events("t1")] == [(1, "a"), (2, "b")]


async def test_ids_that_read_as_numbers_are_kept_apart_in_a_batch(
    store: storage.Store,
) -> None:
    # A batch of writes to some tasks must leave the others alone, whatever
    # their ids look like ("0" and "1" read as numbers).
    await put(store, *(make_task(task_id) for task_id in ("0", "1", "a", "b")))
    before = {task_id: await snapshot(store, task_id) for task_id in ("0", "1")}
    writes = [
        store.execute_nowait(
            TaskWrite(task_id, state=TaskState.RUNNING, events=(NewEvent("moved"),))
        )
        for task_id in ("a", "b")
    ]
    for pending in writes:
        await pending.wait()
    assert {task_id: await snapshot(store, task_id) for task_id in ("0", "1")} == before
    assert [e.kind for e in await store.read_events("a")] == ["moved"]


async def test_write_without_changes_keeps_updated_at(store: storage.Store) -> None:
    await put(store, make_task("t1", created_at=5))
    owned = await store.claim_task("t1", "node-a", lease=60)
    result = await store.write(TaskWrite("t1", epoch=owned.epoch))
    assert result.record.updated_at == 5
