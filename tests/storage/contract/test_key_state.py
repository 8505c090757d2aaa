"""The contract on keyed state: TTLs and compare-and-set.

Runs once per backend of ``conftest.BACKENDS`` (see ``__init__``).
"""

from __future__ import annotations

import trio
import trio.testing

import storage
from storage import TaskState

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
