"""The contract on a task's journal (steps, drafts, bulk reads) and its inbox.

Runs once per backend of ``conftest.BACKENDS`` (see ``__init__``).
"""

from __future__ import annotations

import json

import trio
import trio.testing

import storage
from storage import JournalWrite, NewEvent, TaskState, TaskWrite

from ..factories import make_task, make_usage, put

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
    draft.add([NewEvent("one")], journal=first, usage=[make_usage("t1", "k1", "m1", 1, 0)])
    draft.add(journal=(JournalWrite(1, "value", "b", '"b"', 1),))
    draft.add(
        [NewEvent("two")],
        journal=(JournalWrite(2, "value", "c", '"c"', 1),),
        usage=(make_usage("t1", "k2", "m1", 2, 0), make_usage("t1", "k3", "m1", 4, 0)),
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
