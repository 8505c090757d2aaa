"""What the memory backend promises beyond the contract suite."""

from __future__ import annotations

from typing import Any

import pytest

import storage
from storage import CreateTask, NewEvent, TaskState, TaskWrite
from storage.memory._backend import MemoryBackend

from .factories import make_task


def test_a_failed_batch_applies_nothing() -> None:
    backend = MemoryBackend()
    backend.apply([CreateTask(make_task("t1"))], now=5.0)
    not_a_command: Any = object()
    with pytest.raises(TypeError):
        backend.apply(
            [
                TaskWrite("t1", state=TaskState.RUNNING, events=(NewEvent("a"),)),
                CreateTask(make_task("t2")),
                not_a_command,
            ],
            now=6.0,
        )
    assert backend.get_task("t1") == make_task("t1")
    assert backend.get_task("t2") is None
    assert backend.read_events("t1") == []


def test_a_refused_command_is_its_own_outcome() -> None:
    backend = MemoryBackend()
    outcomes = backend.apply(
        [
            CreateTask(make_task("t1")),
            TaskWrite("t1", expect=frozenset({TaskState.RUNNING}), inbox_add=('"x"',)),
            TaskWrite("nope"),
        ],
        now=5.0,
    )
    assert isinstance(outcomes[0], storage.CreateResult)
    assert isinstance(outcomes[1], storage.ConflictError)
    assert isinstance(outcomes[2], storage.RecordNotFoundError)
    assert backend.list_inbox("t1") == []


def test_reads_return_fresh_lists() -> None:
    backend = MemoryBackend()
    backend.apply([CreateTask(make_task("t1"), (NewEvent("a"),))], now=5.0)
    backend.read_events("t1").clear()
    assert len(backend.read_events("t1")) == 1
