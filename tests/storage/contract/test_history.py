"""The contract on history: event numbering and reads, and the commit listeners that hear them.

Runs once per backend of ``conftest.BACKENDS`` (see ``__init__``).
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

import storage
from storage import NewEvent, TaskState, TaskWrite

from ..factories import make_task, put

# -- history ------------------------------------------------------------------


async def test_event_seqs_are_contiguous_from_1_across_writes(store: storage.Store) -> None:
    await store.put_task(make_task("t1"), [NewEvent("submitted"), NewEvent("queued")])
    await store.write(TaskWrite("t1", events=(NewEvent("a"),)))
    await store.write(TaskWrite("t1", events=(NewEvent("b"), NewEvent("c"), NewEvent("d"))))
    await store.update_status("t1", TaskState.RUNNING)
    events = await store.read_events("t1")
    assert [event.seq for event in events] == [1, 2, 3, 4, 5, 6, 7]
    assert [event.kind for event in events] == [
        *("submitted", "queued", "a", "b", "c", "d"),
        "state",
    ]
    task = await store.get_task("t1")
    assert task is not None
    assert task.last_seq == 7


async def test_events_of_different_tasks_are_numbered_apart(store: storage.Store) -> None:
    await put(store, make_task("t1"), make_task("t2"))
    await store.write(TaskWrite("t1", events=(NewEvent("a"), NewEvent("b"))))
    result = await store.write(TaskWrite("t2", events=(NewEvent("c"),)))
    assert [event.seq for event in result.events] == [1]


async def test_stored_events_carry_kind_data_and_commit_time(
    store: storage.Store, autojump_clock: trio.testing.MockClock
) -> None:
    await put(store, make_task("t1"))
    await trio.sleep(5)
    result = await store.write(TaskWrite("t1", events=(NewEvent("emit", '{"x":[1,2]}'),)))
    expected = storage.StoredEvent("t1", 1, "emit", store.clock.now(), '{"x":[1,2]}')
    assert result.events == (expected,)
    assert await store.read_events("t1") == [expected]


async def test_read_events_after_n_and_limit(store: storage.Store) -> None:
    await put(store, make_task("t1"))
    await store.write(TaskWrite("t1", events=tuple(NewEvent(f"e{n}") for n in range(1, 11))))
    assert [e.seq for e in await store.read_events("t1", after=3)] == list(range(4, 11))
    assert [e.seq for e in await store.read_events("t1", after=3, limit=2)] == [4, 5]
    assert [e.seq for e in await store.read_events("t1", limit=3)] == [1, 2, 3]
    assert await store.read_events("t1", after=10) == []
    assert await store.read_events("t1", after=2, limit=0) == []


async def test_read_events_of_an_unknown_task_is_empty(store: storage.Store) -> None:
    assert await store.read_events("nope") == []


# -- commit listeners ---------------------------------------------------------


async def test_commit_listeners_get_committed_events_in_commit_order(
    store: storage.Store,
) -> None:
    await put(store, make_task("t1"), make_task("t2"))
    owned = await store.claim_task("t1", "node-a", lease=60)
    seen: list[tuple[str, int, str]] = []
    store.add_commit_listener(
        lambda events: seen.extend((e.task_id, e.seq, e.kind) for e in events)
    )
    first = store.execute_nowait(TaskWrite("t1", events=(NewEvent("a"),)))
    second = store.execute_nowait(TaskWrite("t2", events=(NewEvent("b"), NewEvent("c"))))
    stale = store.execute_nowait(TaskWrite("t1", epoch=owned.epoch + 5, events=(NewEvent("x"),)))
    status = store.execute_nowait(storage.UpdateStatus("t1", TaskState.RUNNING))
    await first.wait()
    await second.wait()
    with pytest.raises(storage.StaleEpochError):
        await stale.wait()
    await status.wait()
    await store.write(TaskWrite("t2", events=(NewEvent("d"),)))
    assert seen == [
        ("t1", 1, "a"),
        ("t2", 1, "b"),
        ("t2", 2, "c"),
        ("t1", 2, "state"),
        ("t2", 3, "d"),
    ]


async def test_commit_listeners_hear_before_the_writer_is_answered(
    store: storage.Store,
) -> None:
    await put(store, make_task("t1"))
    answered: list[bool] = []
    write = store.execute_nowait(TaskWrite("t1", events=(NewEvent("a"),)))
    store.add_commit_listener(lambda events: answered.append(write.done))
    await write.wait()
    assert answered == [False]


async def test_a_removed_commit_listener_hears_nothing(store: storage.Store) -> None:
    await put(store, make_task("t1"))
    seen: list[int] = []
    remove = store.add_commit_listener(lambda events: seen.extend(e.seq for e in events))
    await store.write(TaskWrite("t1", events=(NewEvent("a"),)))
    remove()
    await store.write(TaskWrite("t1", events=(NewEvent("b"),)))
    assert seen == [1]


async def test_put_task_events_reach_commit_listeners(store: storage.Store) -> None:
    seen: list[tuple[str, int]] = []
    store.add_commit_listener(lambda events: seen.extend((e.task_id, e.seq) for e in events))
    await store.put_task(make_task("t1"), [NewEvent("submitted")])
    await store.put_task(make_task("t1"), [NewEvent("submitted")])
    assert seen == [("t1", 1)]
