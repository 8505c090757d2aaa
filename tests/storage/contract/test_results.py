"""The contract on outcomes: results, exceptions, workflow data and deterministic values.

Runs once per backend of ``conftest.BACKENDS`` (see ``__init__``).
"""

from __future__ import annotations

import pytest

import storage

from ..factories import make_task, put

# -- helpers ------------------------------------------------------------------


class BoomError(Exception):
    pass


def explode() -> None:
    raise BoomError("disk on fire")


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
