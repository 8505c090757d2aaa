"""The contract on token usage: stored once per key, aggregated by thread and user.

Runs once per backend of ``conftest.BACKENDS`` (see ``__init__``).
"""

from __future__ import annotations

import pytest

import storage
from storage import TaskState

from ..factories import make_task, make_usage, put

# -- usage --------------------------------------------------------------------


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
        make_usage("done", "k1", "m1", 10, 5, caller="lead_agent"),
        make_usage("done", "k2", "m2", 1, 2, caller="subagent"),
        make_usage("failed", "k1", "m1", 100, 50),
        make_usage("active", "k1", "m1", 1000, 0, caller="lead_agent"),
        make_usage("elsewhere", "k1", "m1", 7, 7, caller="lead_agent", thread_id="th2"),
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
    await store.record_usage(make_usage("mine", "k1", "m1", 10, 5))
    await store.record_usage(make_usage("theirs", "k1", "m1", 1000, 500))
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
    await store.record_usage(make_usage("t1", "k1", "m1", 10, 0))
    await store.record_usage(make_usage("t1", "k1", "m1", 999, 999))
    await store.record_usage(make_usage("t1", "k2", "m1", 1, 0))
    totals = await store.aggregate_tokens_by_thread("th1")
    assert (totals["total_tokens"], totals["total_runs"]) == (11, 1)


async def test_usage_keys_are_per_task(store: storage.Store) -> None:
    await put(
        store,
        make_task("t1", state=TaskState.COMPLETED),
        make_task("t2", state=TaskState.COMPLETED),
    )
    await store.record_usage(make_usage("t1", "k", "m1", 10, 0))
    await store.record_usage(make_usage("t2", "k", "m1", 20, 0))
    totals = await store.aggregate_tokens_by_thread("th1")
    assert (totals["total_tokens"], totals["total_runs"]) == (30, 2)


async def test_usage_of_an_unknown_task_raises_record_not_found(store: storage.Store) -> None:
    with pytest.raises(storage.RecordNotFoundError):
        await store.record_usage(make_usage("nope", "k", "m1", 1, 1))
