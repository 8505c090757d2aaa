"""The contract on ownership: claims, leases, releases, and the node registry.

Runs once per backend of ``conftest.BACKENDS`` (see ``__init__``).
"""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing

import storage
from storage import NewEvent, TaskState, TaskWrite

from ..factories import ids, make_task, put

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
