"""TaskState, Signal and Strategy compare equal to their string values (issue #19)."""

from __future__ import annotations

import json

import pytest

import actors
import storage


@pytest.mark.parametrize("kind", [actors.TaskState, actors.Signal, actors.Strategy])
def test_members_equal_their_values(kind: type[actors.TaskState]) -> None:
    for member in kind:
        assert member == member.value
        assert member.value == member
        assert str(member) == member.value
        assert f"{member}" == member.value
        assert hash(member) == hash(member.value)
        assert json.dumps(member) == json.dumps(member.value)  # the wire form


def test_a_state_from_the_wire_finds_its_member() -> None:
    assert actors.TaskState("input_required") is actors.TaskState.INPUT_REQUIRED
    assert "input_required" in {actors.TaskState.INPUT_REQUIRED}
    assert storage.TaskState is actors.TaskState
