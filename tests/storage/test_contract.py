"""The storage contract: every backend passes this suite unchanged.

Each test runs once per backend listed in ``conftest.BACKENDS`` and talks to
the store only through the public ``storage.Store`` client and
``store.execute(command)``. Time-dependent tests request ``autojump_clock``:
leases and TTLs run on trio's clock, and ``store.clock.now()`` stays put
until the test sleeps, so timestamps can be compared exactly.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import storage
from storage import (
    JournalWrite,
    NewEvent,
    TaskRecord,
    TaskState,
    TaskWrite,
    UsageRecord,
)

from .conftest import StoreOpener

# -- helpers ------------------------------------------------------------------


def make_task(
    task_id: str,
    *,
    created_at: float = 1_000.0,
    state: TaskState = TaskState.PENDING,
    name: str = "job",
    user_id: str | None = None,
    thread_id: str | None = None,
    parent_id: str | None = None,
) -> TaskRecord:
    return TaskRecord(
        id=task_id,
        name=name,
        state=state,
        input='{"n":1}',
        created_at=created_at,
        updated_at=created_at,
        user_id=user_id,
        thread_id=thread_id,
        parent_id=parent_id,
        root_id=parent_id or task_id,
    )


async def put(store: storage.Store, *records: TaskRecord) -> None:
    for record in records:
        result = await store.put_task(record)
        assert result.created


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


def ids(records: list[TaskRecord]) -> list[str]:
    return [record.id for record in records]


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


class BoomError(Exception):
    pass


def explode() -> None:
    raise BoomError("disk on fire")


# -- task records -------------------------------------------------------------


async def test_put_task_then_get_task_returns_the_record(store: storage.Store) -> None:
    record = make_task("t1", user_id="u1", thread_id="th1")
    result = await store.put_task(record)
    assert result.created
    assert result.record == record
    assert await store.get_task("t1") == record


async def test_get_task_of_an_unknown_id_is_none(store: storage.Store) -> None:
    assert await store.get_task("nope") is None


async def test_put_task_is_idempotent_on_the_id(store: storage.Store) -> None:
    first = await store.put_task(make_task("t1", name="first"), [NewEvent("submitted")])
    again = await store.put_task(make_task("t1", name="second"), [NewEvent("other")])
    assert not again.created
    assert again.record == first.record
    assert again.events == ()
    assert await store.get_task("t1") == first.record
    assert [event.kind for event in await store.read_events("t1")] == ["submitted"]


async def test_put_task_stores_its_events_from_seq_1(
    store: storage.Store, autojump_clock: trio.testing.MockClock
) -> None:
    result = await store.put_task(
        make_task("t1"), [NewEvent("submitted", '{"a":1}'), NewEvent("queued")]
    )
    now = store.clock.now()
    assert result.record.last_seq == 2
    assert [(e.task_id, e.seq, e.kind, e.data, e.at) for e in result.events] == [
        ("t1", 1, "submitted", '{"a":1}', now),
        ("t1", 2, "queued", "{}", now),
    ]
    assert await store.read_events("t1") == list(result.events)


@pytest.mark.parametrize("given", [0, 1, 5])
async def test_put_task_counts_last_seq_from_its_events_whatever_was_given(
    store: storage.Store, given: int
) -> None:
    record = attrs.evolve(make_task("t1", user_id="u1"), last_seq=given)
    result = await store.put_task(record, [NewEvent("submitted")])
    assert result.record == attrs.evolve(record, last_seq=1)
    assert await store.get_task("t1") == result.record


async def test_put_task_keeps_the_given_epoch_and_timestamps(store: storage.Store) -> None:
    record = TaskRecord(
        id="t1",
        name="job",
        state=TaskState.PAUSED,
        input="{}",
        created_at=12.5,
        updated_at=13.5,
        epoch=7,
        metadata='{"k":"v"}',
        strategy="reject",
    )
    await store.put_task(record)
    assert await store.get_task("t1") == record


@pytest.fixture
async def listed(store: storage.Store) -> storage.Store:
    """Four tasks for the list tests; t2 and t4 share a created_at."""
    await put(
        store,
        make_task("t1", created_at=1, user_id="u1", thread_id="th1", name="alpha"),
        make_task(
            "t4",
            created_at=2,
            user_id="u1",
            thread_id="th1",
            name="alpha",
            state=TaskState.FAILED,
        ),
        make_task(
            "t2",
            created_at=2,
            user_id="u2",
            thread_id="th1",
            name="beta",
            state=TaskState.RUNNING,
            parent_id="t1",
        ),
        make_task(
            "t3",
            created_at=3,
            user_id="u1",
            thread_id="th2",
            name="alpha",
            state=TaskState.COMPLETED,
            parent_id="t1",
        ),
    )
    return store


async def test_list_tasks_is_oldest_first_then_by_id(listed: storage.Store) -> None:
    assert ids(await listed.list_tasks()) == ["t1", "t2", "t4", "t3"]


async def test_list_tasks_by_user(listed: storage.Store) -> None:
    assert ids(await listed.list_tasks(user_id="u1")) == ["t1", "t4", "t3"]
    assert ids(await listed.list_tasks(user_id="nobody")) == []


async def test_list_tasks_by_thread(listed: storage.Store) -> None:
    assert ids(await listed.list_tasks(thread_id="th1")) == ["t1", "t2", "t4"]


async def test_list_tasks_by_states(listed: storage.Store) -> None:
    states = [TaskState.RUNNING, TaskState.COMPLETED]
    assert ids(await listed.list_tasks(states=states)) == ["t2", "t3"]
    assert ids(await listed.list_tasks(states=[])) == []


async def test_list_tasks_by_parent(listed: storage.Store) -> None:
    assert ids(await listed.list_tasks(parent_id="t1")) == ["t2", "t3"]


async def test_list_tasks_by_name(listed: storage.Store) -> None:
    assert ids(await listed.list_tasks(name="beta")) == ["t2"]


async def test_list_tasks_by_owner(listed: storage.Store) -> None:
    await listed.claim_task("t2", "node-a", lease=60)
    await listed.claim_task("t1", "node-b", lease=60)
    assert ids(await listed.list_tasks(owner="node-a")) == ["t2"]
    assert ids(await listed.list_tasks(owner="node-a", states=[TaskState.RUNNING])) == ["t2"]
    assert ids(await listed.list_tasks(owner="node-a", states=[TaskState.CANCELLED])) == []
    assert ids(await listed.list_tasks(owner="nobody")) == []


async def test_list_tasks_combines_filters(listed: storage.Store) -> None:
    found = await listed.list_tasks(user_id="u1", thread_id="th1", states=[TaskState.FAILED])
    assert ids(found) == ["t4"]


async def test_list_tasks_limit_keeps_the_oldest(listed: storage.Store) -> None:
    assert ids(await listed.list_tasks(limit=2)) == ["t1", "t2"]
    assert ids(await listed.list_tasks(user_id="u1", limit=1)) == ["t1"]


async def test_list_pending_returns_only_pending_tasks(listed: storage.Store) -> None:
    await put(listed, make_task("t0", created_at=0))
    assert ids(await listed.list_pending()) == ["t0", "t1"]


async def test_list_inflight_returns_pending_and_running_tasks(listed: storage.Store) -> None:
    await put(listed, make_task("t5", created_at=5, state=TaskState.PAUSED))
    assert ids(await listed.list_inflight()) == ["t1", "t2"]


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


# -- journal ------------------------------------------------------------------


async def test_journal_entries_upsert_by_index(
    store: storage.Store, autojump_clock: trio.testing.MockClock
) -> None:
    await put(store, make_task("t1"))
    await store.write(
        TaskWrite(
            "t1",
            journal=(
                JournalWrite(1, "step", "second", '"b"', 1),
                JournalWrite(0, "step", "first", '"a"', 1),
            ),
        )
    )
    await trio.sleep(1)
    await store.write(TaskWrite("t1", journal=(JournalWrite(1, "ask", "again", '"B"', 1),)))
    now = store.clock.now()
    assert await store.read_journal("t1") == [
        storage.JournalEntry("t1", 0, "step", "first", '"a"', 1, now - 1),
        storage.JournalEntry("t1", 1, "ask", "again", '"B"', 1, now),
    ]


async def test_a_draft_keeps_every_part_in_order(store: storage.Store) -> None:
    """A TaskDraft grown by several parts writes all of them, in order, and
    leaves the sequences it was given as they were."""
    await put(store, make_task("t1", thread_id="th1", state=TaskState.RUNNING))
    draft = store.open_draft("t1", None, None)
    first = [JournalWrite(0, "value", "a", '"a"', 1)]
    draft.add([NewEvent("one")], journal=first, usage=[usage("t1", "k1", "m1", 1, 0)])
    draft.add(journal=(JournalWrite(1, "value", "b", '"b"', 1),))
    draft.add(
        [NewEvent("two")],
        journal=(JournalWrite(2, "value", "c", '"c"', 1),),
        usage=(usage("t1", "k2", "m1", 2, 0), usage("t1", "k3", "m1", 4, 0)),
    )
    await draft.wait()
    assert first == [JournalWrite(0, "value", "a", '"a"', 1)]
    assert [(e.index, e.name) for e in await store.read_journal("t1")] == [
        (0, "a"),
        (1, "b"),
        (2, "c"),
    ]
    assert [e.kind for e in await store.read_events("t1")][-2:] == ["one", "two"]
    totals = await store.aggregate_tokens_by_thread("th1", include_active=True)
    assert totals["total_input_tokens"] == 7


async def test_discard_run_deletes_only_that_runs_entries(store: storage.Store) -> None:
    await put(store, make_task("t1"))
    await store.write(
        TaskWrite(
            "t1",
            journal=(
                JournalWrite(0, "step", "a", "1", 1),
                JournalWrite(1, "step", "b", "2", 1),
                JournalWrite(2, "step", "c", "3", 2),
            ),
        )
    )
    await store.write(TaskWrite("t1", discard_run=2))
    assert [(e.index, e.run) for e in await store.read_journal("t1")] == [(0, 1), (1, 1)]


async def test_discard_run_applies_before_the_same_writes_entries(store: storage.Store) -> None:
    await put(store, make_task("t1"))
    await store.write(
        TaskWrite(
            "t1",
            journal=(
                JournalWrite(0, "step", "old", '"old"', 2),
                JournalWrite(1, "step", "older", '"older"', 2),
            ),
        )
    )
    await store.write(
        TaskWrite("t1", discard_run=2, journal=(JournalWrite(0, "step", "new", '"new"', 2),))
    )
    assert [(e.index, e.name) for e in await store.read_journal("t1")] == [(0, "new")]


async def test_journals_of_different_tasks_are_apart(store: storage.Store) -> None:
    await put(store, make_task("t1"), make_task("t2"))
    await store.write(TaskWrite("t1", journal=(JournalWrite(0, "step", "a", "1", 1),)))
    assert await store.read_journal("t2") == []


async def test_read_journals_reads_many_tasks_at_once(store: storage.Store) -> None:
    await put(store, make_task("t1"), make_task("t2"), make_task("t3"))
    await store.write(
        TaskWrite(
            "t1",
            journal=(JournalWrite(1, "step", "b", "2", 1), JournalWrite(0, "step", "a", "1", 1)),
        )
    )
    await store.write(TaskWrite("t3", journal=(JournalWrite(0, "ask", "input", '"x"', 2),)))
    journals = await store.read_journals(["t1", "t2", "t3", "nope", "t1"])
    assert set(journals) == {"t1", "t2", "t3", "nope"}
    assert journals["t1"] == await store.read_journal("t1")
    assert [(e.index, e.name) for e in journals["t1"]] == [(0, "a"), (1, "b")]
    assert journals["t2"] == journals["nope"] == []
    assert [(e.task_id, e.kind, e.value, e.run) for e in journals["t3"]] == [
        ("t3", "ask", '"x"', 2)
    ]
    assert await store.read_journals([]) == {}


async def test_list_inboxes_reads_many_tasks_at_once(store: storage.Store) -> None:
    await put(store, make_task("t1"), make_task("t2"))
    added = await store.write(TaskWrite("t1", inbox_add=('"a"', '"b"')))
    inboxes = await store.list_inboxes(["t1", "t2", "nope"])
    assert inboxes == {
        "t1": await store.list_inbox("t1"),
        "t2": [],
        "nope": [],
    }
    assert [item.id for item in inboxes["t1"]] == list(added.inbox_ids)


async def test_bulk_reads_keep_timestamps_and_payloads_exact(
    store: storage.Store, autojump_clock: trio.testing.MockClock
) -> None:
    # Timestamps with every digit a double has, and payloads JSON must escape.
    await trio.sleep(0.123456789012345)
    await put(store, make_task("t1", created_at=1_764_512_345.123_456_7))
    value = json.dumps({"quote": '"', "newline": "\n", "unicode": "é\u2028"})
    await store.write(TaskWrite("t1", journal=(JournalWrite(0, "step", "s", value, 1),)))
    (entry,) = (await store.read_journals(["t1"]))["t1"]
    assert entry.value == value and entry.at == store.clock.now()
    (record,) = await store.list_tasks()
    assert record.created_at == 1_764_512_345.123_456_7
    assert record.updated_at == store.clock.now()


# -- inbox --------------------------------------------------------------------


async def test_inbox_add_gives_growing_ids_listed_in_order(
    store: storage.Store, autojump_clock: trio.testing.MockClock
) -> None:
    await put(store, make_task("t1"))
    first = await store.write(TaskWrite("t1", inbox_add=('"a"', '"b"')))
    second = await store.write(TaskWrite("t1", inbox_add=('"c"',)))
    all_ids = [*first.inbox_ids, *second.inbox_ids]
    assert all_ids == sorted(set(all_ids))
    items = await store.list_inbox("t1")
    assert [(item.task_id, item.id, item.input) for item in items] == [
        ("t1", all_ids[0], '"a"'),
        ("t1", all_ids[1], '"b"'),
        ("t1", all_ids[2], '"c"'),
    ]
    assert {item.at for item in items} == {store.clock.now()}


async def test_inbox_consume_removes_only_those_items(store: storage.Store) -> None:
    await put(store, make_task("t1"))
    added = await store.write(TaskWrite("t1", inbox_add=('"a"', '"b"', '"c"')))
    await store.write(TaskWrite("t1", inbox_consume=(added.inbox_ids[1],)))
    assert [item.input for item in await store.list_inbox("t1")] == ['"a"', '"c"']


async def test_inbox_clear_empties_the_inbox(store: storage.Store) -> None:
    await put(store, make_task("t1"))
    await store.write(TaskWrite("t1", inbox_add=('"a"', '"b"')))
    await store.write(TaskWrite("t1", inbox_clear=True))
    assert await store.list_inbox("t1") == []


async def test_inbox_clear_keeps_the_items_the_same_write_adds(store: storage.Store) -> None:
    await put(store, make_task("t1"))
    await store.write(TaskWrite("t1", inbox_add=('"old"',)))
    result = await store.write(TaskWrite("t1", inbox_clear=True, inbox_add=('"new"',)))
    assert [(i.id, i.input) for i in await store.list_inbox("t1")] == [
        (result.inbox_ids[0], '"new"')
    ]


async def test_inboxes_of_different_tasks_are_apart(store: storage.Store) -> None:
    await put(store, make_task("t1"), make_task("t2"))
    await store.write(TaskWrite("t1", inbox_add=('"a"',)))
    await store.write(TaskWrite("t2", inbox_clear=True))
    assert [item.input for item in await store.list_inbox("t1")] == ['"a"']
    assert await store.list_inbox("t2") == []


# -- results and exceptions ---------------------------------------------------


async def test_result_round_trips(store: storage.Store) -> None:
    await put(store, make_task("t1"))
    await store.set_result("t1", {"answer": 42, "items": [1, "two", None]})
    assert await store.get_result("t1") == {"answer": 42, "items": [1, "two", None]}


async def test_result_of_a_task_without_one_raises_record_not_found(
    store: storage.Store,
) -> None:
    await put(store, make_task("t1"))
    with pytest.raises(storage.RecordNotFoundError):
        await store.get_result("t1")


async def test_set_result_of_an_unknown_task_raises_record_not_found(
    store: storage.Store,
) -> None:
    with pytest.raises(storage.RecordNotFoundError):
        await store.set_result("nope", 1)


async def test_exception_keeps_type_message_and_traceback(store: storage.Store) -> None:
    await put(store, make_task("t1"))
    try:
        explode()
    except BoomError as exc:
        await store.set_exception("t1", exc)
    stored = await store.get_exception("t1")
    assert stored is not None
    assert (stored.type, stored.message, stored.retryable) == ("BoomError", "disk on fire", False)
    assert stored.traceback.startswith("Traceback (most recent call last):")
    assert "in explode" in stored.traceback
    assert stored.traceback.rstrip().endswith("BoomError: disk on fire")


async def test_exception_keeps_retryable(store: storage.Store) -> None:
    await put(store, make_task("t1"))
    await store.set_exception("t1", storage.exception_record(BoomError("x"), retryable=True))
    stored = await store.get_exception("t1")
    assert stored is not None
    assert stored.retryable


async def test_exception_of_a_task_without_one_is_none(store: storage.Store) -> None:
    await put(store, make_task("t1"))
    assert await store.get_exception("t1") is None


# -- status updates -----------------------------------------------------------


async def test_update_status_of_an_unknown_task_returns_false(store: storage.Store) -> None:
    assert await store.update_status("nope", TaskState.RUNNING) is False
    assert await store.get_task("nope") is None


async def test_update_status_sets_the_state_and_appends_a_state_event(
    store: storage.Store, autojump_clock: trio.testing.MockClock
) -> None:
    await put(store, make_task("t1"))
    assert await store.update_status("t1", TaskState.RUNNING) is True
    task = await store.get_task("t1")
    assert task is not None
    assert (task.state, task.error, task.updated_at) == (
        TaskState.RUNNING,
        None,
        store.clock.now(),
    )
    [event] = await store.read_events("t1")
    assert (event.seq, event.kind) == (1, "state")
    assert json.loads(event.data) == {"from": "pending", "to": "running"}


async def test_update_status_with_an_error_records_it(store: storage.Store) -> None:
    await put(store, make_task("t1", state=TaskState.RUNNING))
    assert await store.update_status("t1", TaskState.FAILED, error="timed out")
    task = await store.get_task("t1")
    assert task is not None
    assert (task.state, task.error) == (TaskState.FAILED, "timed out")
    [event] = await store.read_events("t1")
    assert json.loads(event.data) == {"from": "running", "to": "failed", "error": "timed out"}


async def test_update_status_to_the_same_state_still_reports_the_row(
    store: storage.Store,
) -> None:
    await put(store, make_task("t1"))
    assert await store.update_status("t1", TaskState.PENDING) is True


async def test_update_status_outcome_is_the_written_record(store: storage.Store) -> None:
    await put(store, make_task("t1"))
    outcome = await store.execute(storage.UpdateStatus("t1", TaskState.PAUSED))
    assert isinstance(outcome, storage.TaskWriteResult)
    assert outcome.record == await store.get_task("t1")
    assert [event.kind for event in outcome.events] == ["state"]
    assert await store.execute(storage.UpdateStatus("nope", TaskState.PAUSED)) is None


# -- ownership ----------------------------------------------------------------


async def test_claim_sets_owner_and_lease_and_grows_the_epoch(
    store: storage.Store, autojump_clock: trio.testing.MockClock
) -> None:
    await put(store, make_task("t1"))
    claimed = await store.claim_task("t1", "node-a", lease=30)
    assert (claimed.owner, claimed.lease_expires) == ("node-a", store.clock.now() + 30)
    assert claimed.epoch == 1
    assert await store.get_task("t1") == claimed


async def test_reclaim_by_the_same_node_grows_the_epoch(store: storage.Store) -> None:
    await put(store, make_task("t1"))
    epochs = [(await store.claim_task("t1", "node-a", lease=30)).epoch for _ in range(3)]
    assert epochs == [1, 2, 3]


async def test_claim_of_a_task_another_node_holds_raises_lease_held(
    store: storage.Store,
) -> None:
    await put(store, make_task("t1"))
    held = await store.claim_task("t1", "node-a", lease=30)
    with pytest.raises(storage.LeaseHeldError) as caught:
        await store.claim_task("t1", "node-b", lease=30)
    assert (caught.value.task_id, caught.value.owner) == ("t1", "node-a")
    assert caught.value.lease_expires == held.lease_expires
    assert await store.get_task("t1") == held


async def test_claim_after_the_lease_expired_changes_hands(
    store: storage.Store, autojump_clock: trio.testing.MockClock
) -> None:
    await put(store, make_task("t1"))
    old = await store.claim_task("t1", "node-a", lease=10)
    await trio.sleep(11)
    new = await store.claim_task("t1", "node-b", lease=10)
    assert (new.owner, new.epoch) == ("node-b", old.epoch + 1)
    with pytest.raises(storage.StaleEpochError):
        await store.write(TaskWrite("t1", epoch=old.epoch, state=TaskState.RUNNING))


async def test_claim_of_a_released_task_succeeds(store: storage.Store) -> None:
    await put(store, make_task("t1"))
    await store.claim_task("t1", "node-a", lease=30)
    await store.release_tasks("node-a")
    claimed = await store.claim_task("t1", "node-b", lease=30)
    assert (claimed.owner, claimed.epoch) == ("node-b", 2)


async def test_claim_in_an_unlisted_state_raises_conflict(store: storage.Store) -> None:
    await put(store, make_task("t1", state=TaskState.COMPLETED))
    with pytest.raises(storage.ConflictError) as caught:
        await store.claim_task("t1", "node-a", lease=30, states=[TaskState.PENDING])
    assert (caught.value.expected, caught.value.actual) == (frozenset({"pending"}), "completed")
    task = await store.get_task("t1")
    assert task is not None
    assert (task.owner, task.epoch) == (None, 0)


async def test_claim_of_an_unknown_task_raises_record_not_found(store: storage.Store) -> None:
    with pytest.raises(storage.RecordNotFoundError):
        await store.claim_task("nope", "node-a", lease=30)


async def test_list_claimable_holds_unowned_own_and_expired_tasks(
    store: storage.Store, autojump_clock: trio.testing.MockClock
) -> None:
    await put(
        store,
        make_task("free", created_at=1),
        make_task("mine", created_at=2, state=TaskState.RUNNING),
        make_task("expired", created_at=3),
        make_task("theirs", created_at=4),
        make_task("done", created_at=5, state=TaskState.COMPLETED),
        make_task("paused", created_at=6, state=TaskState.PAUSED),
    )
    await store.claim_task("expired", "node-b", lease=10)
    await trio.sleep(11)
    await store.claim_task("mine", "node-a", lease=60)
    await store.claim_task("theirs", "node-b", lease=60)
    assert ids(await store.list_claimable("node-a")) == ["free", "mine", "expired"]
    assert ids(await store.list_claimable("node-b")) == ["free", "expired", "theirs"]


async def test_renew_leases_extends_the_nodes_tasks_only(
    store: storage.Store, autojump_clock: trio.testing.MockClock
) -> None:
    await put(store, make_task("a1"), make_task("a2"), make_task("b1"))
    await store.claim_task("a1", "node-a", lease=10)
    a2 = await store.claim_task("a2", "node-a", lease=10)
    b1 = await store.claim_task("b1", "node-b", lease=10)
    await trio.sleep(5)
    assert await store.renew_leases("node-a", lease=10) == 2
    for task_id in ("a1", "a2"):
        task = await store.get_task(task_id)
        assert task is not None
        assert task.lease_expires == store.clock.now() + 10
    assert await store.get_task("b1") == b1
    await trio.sleep(7)
    assert ids(await store.list_claimable("node-c")) == ["b1"]
    await store.write(TaskWrite("a2", epoch=a2.epoch, events=(NewEvent("alive"),)))


async def test_renew_leases_of_a_node_without_tasks_counts_zero(store: storage.Store) -> None:
    assert await store.renew_leases("node-a", lease=10) == 0


async def test_release_tasks_clears_the_nodes_owners(store: storage.Store) -> None:
    await put(store, make_task("a1"), make_task("a2"), make_task("b1"))
    await store.claim_task("a1", "node-a", lease=60)
    await store.claim_task("a2", "node-a", lease=60)
    await store.claim_task("b1", "node-b", lease=60)
    assert await store.release_tasks("node-a") == 2
    owners = {}
    for task_id in ("a1", "a2", "b1"):
        task = await store.get_task(task_id)
        assert task is not None
        owners[task_id] = (task.owner, task.lease_expires is None)
    assert owners == {"a1": (None, True), "a2": (None, True), "b1": ("node-b", False)}


async def test_release_tasks_by_id_releases_only_those_it_owns(store: storage.Store) -> None:
    await put(store, make_task("a1"), make_task("a2"), make_task("b1"))
    await store.claim_task("a1", "node-a", lease=60)
    await store.claim_task("a2", "node-a", lease=60)
    await store.claim_task("b1", "node-b", lease=60)
    assert await store.release_tasks("node-a", ["a1", "b1", "nope"]) == 1
    a2 = await store.get_task("a2")
    b1 = await store.get_task("b1")
    assert a2 is not None and a2.owner == "node-a"
    assert b1 is not None and b1.owner == "node-b"


async def test_write_with_release_clears_owner_and_lease(store: storage.Store) -> None:
    await put(store, make_task("t1"))
    owned = await store.claim_task("t1", "node-a", lease=60)
    result = await store.write(TaskWrite("t1", epoch=owned.epoch, release=True))
    assert (result.record.owner, result.record.lease_expires) == (None, None)
    assert result.record.epoch == owned.epoch


# -- node registry ------------------------------------------------------------


async def test_registered_node_is_listed_until_its_lease_expires(
    store: storage.Store, autojump_clock: trio.testing.MockClock
) -> None:
    started = store.clock.now()
    await store.register_node("node-a", lease=10, info={"host": "box"})
    [node] = await store.list_nodes()
    assert (node.node_id, node.started_at, node.lease_expires) == ("node-a", started, started + 10)
    assert json.loads(node.info) == {"host": "box"}
    await trio.sleep(9)
    assert [n.node_id for n in await store.list_nodes()] == ["node-a"]
    await trio.sleep(2)
    assert await store.list_nodes() == []


async def test_renew_leases_extends_the_nodes_own_lease(
    store: storage.Store, autojump_clock: trio.testing.MockClock
) -> None:
    await store.register_node("node-a", lease=10)
    await trio.sleep(5)
    await store.renew_leases("node-a", lease=10)
    await trio.sleep(8)
    assert [n.node_id for n in await store.list_nodes()] == ["node-a"]


async def test_register_node_replaces_the_record(store: storage.Store) -> None:
    await store.register_node("node-a", lease=10, info={"v": 1})
    await store.register_node("node-a", lease=10, info={"v": 2})
    [node] = await store.list_nodes()
    assert json.loads(node.info) == {"v": 2}


async def test_removed_node_is_not_listed(store: storage.Store) -> None:
    await store.register_node("node-a", lease=10)
    await store.register_node("node-b", lease=10)
    await store.remove_node("node-a")
    await store.remove_node("never-registered")
    assert [n.node_id for n in await store.list_nodes()] == ["node-b"]


# -- keyed state with TTL -----------------------------------------------------


async def test_task_state_round_trips(store: storage.Store) -> None:
    await store.set_task_state("k", TaskState.RUNNING)
    assert await store.get_task_state("k") is TaskState.RUNNING
    await store.set_task_state("k", TaskState.STOPPED)
    assert await store.get_task_state("k") is TaskState.STOPPED


async def test_task_state_of_a_missing_key_is_none(store: storage.Store) -> None:
    assert await store.get_task_state("nope") is None


async def test_task_state_expires_after_its_ttl(
    store: storage.Store, autojump_clock: trio.testing.MockClock
) -> None:
    await store.set_task_state("k", TaskState.RUNNING, ttl=10)
    await trio.sleep(9)
    assert await store.get_task_state("k") is TaskState.RUNNING
    await trio.sleep(2)
    assert await store.get_task_state("k") is None


async def test_task_state_without_ttl_never_expires(
    store: storage.Store, autojump_clock: trio.testing.MockClock
) -> None:
    await store.set_task_state("k", TaskState.RUNNING, ttl=None)
    await trio.sleep(10 * 365 * 24 * 3600)
    assert await store.get_task_state("k") is TaskState.RUNNING


async def test_setting_a_task_state_again_restarts_its_ttl(
    store: storage.Store, autojump_clock: trio.testing.MockClock
) -> None:
    await store.set_task_state("k", TaskState.RUNNING, ttl=10)
    await trio.sleep(8)
    await store.set_task_state("k", TaskState.PAUSED, ttl=10)
    await trio.sleep(8)
    assert await store.get_task_state("k") is TaskState.PAUSED


async def test_deleted_task_state_is_none(store: storage.Store) -> None:
    await store.set_task_state("k", TaskState.RUNNING)
    await store.set_task_state("other", TaskState.RUNNING)
    await store.delete_task_state("k")
    await store.delete_task_state("never-set")
    assert await store.get_task_state("k") is None
    assert await store.get_task_state("other") is TaskState.RUNNING


async def test_compare_and_set_sets_when_the_state_matches(store: storage.Store) -> None:
    await store.set_task_state("k", TaskState.RUNNING)
    assert await store.compare_and_set_state("k", TaskState.STOPPED, TaskState.RUNNING)
    assert await store.get_task_state("k") is TaskState.STOPPED


async def test_compare_and_set_leaves_a_mismatch_alone(store: storage.Store) -> None:
    await store.set_task_state("k", TaskState.PAUSED)
    assert not await store.compare_and_set_state("k", TaskState.STOPPED, TaskState.RUNNING)
    assert await store.get_task_state("k") is TaskState.PAUSED


async def test_compare_and_set_with_negate_sets_when_the_state_differs(
    store: storage.Store,
) -> None:
    await store.set_task_state("k", TaskState.PAUSED)
    changed = await store.compare_and_set_state(
        "k", TaskState.STOPPED, TaskState.RUNNING, negate=True
    )
    assert changed
    assert await store.get_task_state("k") is TaskState.STOPPED


async def test_compare_and_set_with_negate_leaves_a_match_alone(store: storage.Store) -> None:
    await store.set_task_state("k", TaskState.RUNNING)
    changed = await store.compare_and_set_state(
        "k", TaskState.STOPPED, TaskState.RUNNING, negate=True
    )
    assert not changed
    assert await store.get_task_state("k") is TaskState.RUNNING


async def test_compare_and_set_on_a_missing_key_matches_nothing(store: storage.Store) -> None:
    assert not await store.compare_and_set_state("k", TaskState.STOPPED, TaskState.RUNNING)
    assert await store.get_task_state("k") is None


async def test_compare_and_set_with_negate_sets_a_missing_key(store: storage.Store) -> None:
    changed = await store.compare_and_set_state(
        "k", TaskState.RUNNING, TaskState.RUNNING, negate=True
    )
    assert changed
    assert await store.get_task_state("k") is TaskState.RUNNING


async def test_compare_and_set_treats_an_expired_key_as_missing(
    store: storage.Store, autojump_clock: trio.testing.MockClock
) -> None:
    await store.set_task_state("k", TaskState.RUNNING, ttl=5)
    await trio.sleep(6)
    assert not await store.compare_and_set_state("k", TaskState.STOPPED, TaskState.RUNNING)
    changed = await store.compare_and_set_state(
        "k", TaskState.STOPPED, TaskState.RUNNING, negate=True
    )
    assert changed


async def test_compare_and_set_gives_the_new_state_its_ttl(
    store: storage.Store, autojump_clock: trio.testing.MockClock
) -> None:
    await store.set_task_state("k", TaskState.RUNNING, ttl=None)
    assert await store.compare_and_set_state("k", TaskState.STOPPED, TaskState.RUNNING, ttl=5)
    await trio.sleep(6)
    assert await store.get_task_state("k") is None


# -- usage --------------------------------------------------------------------


def usage(
    task_id: str,
    key: str,
    model: str,
    input_tokens: int,
    output_tokens: int,
    *,
    caller: str | None = None,
    thread_id: str = "th1",
) -> UsageRecord:
    return UsageRecord(
        task_id,
        key,
        model,
        input_tokens,
        output_tokens,
        caller=caller,
        thread_id=thread_id,
        user_id="u1",
    )


@pytest.fixture
async def usage_store(store: storage.Store) -> storage.Store:
    """Thread th1: a completed, a failed and a running task; th2: one more."""
    await put(
        store,
        make_task("done", thread_id="th1", state=TaskState.COMPLETED),
        make_task("failed", thread_id="th1", state=TaskState.FAILED),
        make_task("active", thread_id="th1", state=TaskState.RUNNING),
        make_task("elsewhere", thread_id="th2", state=TaskState.COMPLETED),
    )
    for report in [
        usage("done", "k1", "m1", 10, 5, caller="lead_agent"),
        usage("done", "k2", "m2", 1, 2, caller="subagent"),
        usage("failed", "k1", "m1", 100, 50),
        usage("active", "k1", "m1", 1000, 0, caller="lead_agent"),
        usage("elsewhere", "k1", "m1", 7, 7, caller="lead_agent", thread_id="th2"),
    ]:
        await store.record_usage(report)
    return store


async def test_aggregate_counts_finished_tasks_of_the_thread(usage_store: storage.Store) -> None:
    assert await usage_store.aggregate_tokens_by_thread("th1") == {
        "total_tokens": 168,
        "total_input_tokens": 111,
        "total_output_tokens": 57,
        "total_runs": 2,
        "by_model": {"m1": {"tokens": 165, "runs": 2}, "m2": {"tokens": 3, "runs": 1}},
        "by_caller": {"lead_agent": 15, "subagent": 3, "unknown": 150},
    }


async def test_aggregate_with_include_active_counts_every_task(
    usage_store: storage.Store,
) -> None:
    assert await usage_store.aggregate_tokens_by_thread("th1", include_active=True) == {
        "total_tokens": 1168,
        "total_input_tokens": 1111,
        "total_output_tokens": 57,
        "total_runs": 3,
        "by_model": {"m1": {"tokens": 1165, "runs": 3}, "m2": {"tokens": 3, "runs": 1}},
        "by_caller": {"lead_agent": 1015, "subagent": 3, "unknown": 150},
    }


async def test_aggregate_of_a_thread_without_usage_is_zero(usage_store: storage.Store) -> None:
    assert await usage_store.aggregate_tokens_by_thread("empty", include_active=True) == {
        "total_tokens": 0,
        "total_input_tokens": 0,
        "total_output_tokens": 0,
        "total_runs": 0,
        "by_model": {},
        "by_caller": {},
    }


async def test_aggregate_for_a_user_counts_only_that_users_tasks(store: storage.Store) -> None:
    await put(
        store,
        make_task("mine", user_id="u1", thread_id="th1", state=TaskState.COMPLETED),
        make_task("theirs", user_id="u2", thread_id="th1", state=TaskState.COMPLETED),
    )
    await store.record_usage(usage("mine", "k1", "m1", 10, 5))
    await store.record_usage(usage("theirs", "k1", "m1", 1000, 500))
    mine = await store.aggregate_tokens_by_thread("th1", user_id="u1")
    theirs = await store.aggregate_tokens_by_thread("th1", user_id="u2")
    everyone = await store.aggregate_tokens_by_thread("th1")
    assert (mine["total_tokens"], mine["total_runs"]) == (15, 1)
    assert (theirs["total_tokens"], theirs["total_runs"]) == (1500, 1)
    assert (everyone["total_tokens"], everyone["total_runs"]) == (1515, 2)
    assert await store.aggregate_tokens_by_thread("th1", user_id="nobody") == {
        "total_tokens": 0,
        "total_input_tokens": 0,
        "total_output_tokens": 0,
        "total_runs": 0,
        "by_model": {},
        "by_caller": {},
    }


async def test_aggregate_counts_a_task_once_it_finishes(usage_store: storage.Store) -> None:
    await usage_store.update_status("active", TaskState.COMPLETED)
    totals = await usage_store.aggregate_tokens_by_thread("th1")
    assert (totals["total_tokens"], totals["total_runs"]) == (1168, 3)


async def test_usage_is_stored_once_per_key(store: storage.Store) -> None:
    await put(store, make_task("t1", state=TaskState.COMPLETED))
    await store.record_usage(usage("t1", "k1", "m1", 10, 0))
    await store.record_usage(usage("t1", "k1", "m1", 999, 999))
    await store.record_usage(usage("t1", "k2", "m1", 1, 0))
    totals = await store.aggregate_tokens_by_thread("th1")
    assert (totals["total_tokens"], totals["total_runs"]) == (11, 1)


async def test_usage_keys_are_per_task(store: storage.Store) -> None:
    await put(
        store,
        make_task("t1", state=TaskState.COMPLETED),
        make_task("t2", state=TaskState.COMPLETED),
    )
    await store.record_usage(usage("t1", "k", "m1", 10, 0))
    await store.record_usage(usage("t2", "k", "m1", 20, 0))
    totals = await store.aggregate_tokens_by_thread("th1")
    assert (totals["total_tokens"], totals["total_runs"]) == (30, 2)


async def test_usage_of_an_unknown_task_raises_record_not_found(store: storage.Store) -> None:
    with pytest.raises(storage.RecordNotFoundError):
        await store.record_usage(usage("nope", "k", "m1", 1, 1))


# -- workflow data and deterministic values -----------------------------------


async def test_workflow_data_of_a_missing_key_is_the_default(store: storage.Store) -> None:
    assert await store.get_workflow_data("wf", "k") is None
    assert await store.get_workflow_data("wf", "k", default={"d": 1}) == {"d": 1}


async def test_workflow_data_round_trips_and_overwrites(store: storage.Store) -> None:
    await store.set_workflow_data("wf", "k", {"v": [1, 2]})
    assert await store.get_workflow_data("wf", "k") == {"v": [1, 2]}
    await store.set_workflow_data("wf", "k", "second")
    assert await store.get_workflow_data("wf", "k", default="unused") == "second"


async def test_workflow_data_is_keyed_by_workflow_and_key(store: storage.Store) -> None:
    await store.set_workflow_data("wf1", "k", 1)
    await store.set_workflow_data("wf2", "k", 2)
    await store.set_workflow_data("wf1", "j", 3)
    assert [
        await store.get_workflow_data("wf1", "k"),
        await store.get_workflow_data("wf2", "k"),
        await store.get_workflow_data("wf1", "j"),
    ] == [1, 2, 3]


async def test_deterministic_value_of_a_missing_key_is_none(store: storage.Store) -> None:
    assert await store.get_workflow_deterministic_value("wf", "random") is None


async def test_deterministic_values_round_trip_apart_from_workflow_data(
    store: storage.Store,
) -> None:
    await store.set_workflow_deterministic_value("wf", "uuid", "8c1f")
    await store.set_workflow_deterministic_value("wf", "now", 1700000000.5)
    assert await store.get_workflow_deterministic_value("wf", "uuid") == "8c1f"
    assert await store.get_workflow_deterministic_value("wf", "now") == 1700000000.5
    assert await store.get_workflow_data("wf", "uuid") is None


# -- publish / subscribe ------------------------------------------------------


async def test_every_subscriber_gets_the_messages_in_order(store: storage.Store) -> None:
    async with store.subscribe_listen("ch") as first, store.subscribe_listen("ch") as second:
        for message in ("STOP", "PAUSE", "RESUME"):
            await store.publish_event("ch", message)
        for subscription in (first, second):
            assert [await anext(subscription) for _ in range(3)] == ["STOP", "PAUSE", "RESUME"]


async def test_a_subscriber_gets_only_messages_published_after_it_subscribed(
    store: storage.Store,
) -> None:
    await store.publish_event("ch", "before")
    async with store.subscribe_listen("ch") as subscription:
        await store.publish_event("ch", "after")
        assert await anext(subscription) == "after"


async def test_a_subscriber_gets_only_its_channels_messages(store: storage.Store) -> None:
    async with store.subscribe_listen("a") as subscription:
        await store.publish_event("b", "not mine")
        await store.publish_event("a", "mine")
        assert await anext(subscription) == "mine"


async def test_publish_without_subscribers_is_fine(store: storage.Store) -> None:
    await store.publish_event("nobody-listens", "hello")


async def test_aclose_ends_the_iteration(store: storage.Store) -> None:
    subscription = store.subscribe_listen("ch")
    received: list[str] = []

    async def listen() -> None:
        async for message in subscription:
            received.append(message)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(listen)
            await store.publish_event("ch", "one")
            await trio.testing.wait_all_tasks_blocked()
            await subscription.aclose()
    assert received == ["one"]
    await subscription.aclose()


async def test_a_closed_subscription_gets_no_more_messages(store: storage.Store) -> None:
    closed = store.subscribe_listen("ch")
    await closed.aclose()
    async with store.subscribe_listen("ch") as open_one:
        await store.publish_event("ch", "late")
        assert await anext(open_one) == "late"
    assert [message async for message in closed] == []


async def test_subscriptions_end_when_the_store_closes(open_store: StoreOpener) -> None:
    async with open_store() as store:
        subscription = store.subscribe_listen("ch")
        await store.publish_event("ch", "last")
    with trio.fail_after(10):
        assert [message async for message in subscription] == ["last"]


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
        monkeypatch.setattr("storage.actor._writer._PARK", None)
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
