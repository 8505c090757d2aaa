"""The one checker of what the store can keep (storage/model/_validate.py; issue #17)."""

from __future__ import annotations

from typing import Any

import pytest

import actors
import storage
from storage.model import (
    MAX_INT,
    MAX_JSON_DEPTH,
    MIN_INT,
    InvalidValueError,
    check_int,
    check_json,
    check_text,
    storable_json,
)


def test_the_error_is_one_public_value_error_under_every_name() -> None:
    assert storage.InvalidValueError is InvalidValueError is actors.InvalidValueError
    assert issubclass(InvalidValueError, ValueError)


def test_text_with_a_lone_surrogate_is_refused_naming_the_field_and_the_place() -> None:
    with pytest.raises(InvalidValueError) as error:
        check_text(task_id="\ud800")
    assert str(error.value) == "task_id: text that cannot be stored (lone surrogate at 0)"
    assert (error.value.field, error.value.problem) == (
        "task_id",
        "text that cannot be stored (lone surrogate at 0)",
    )
    with pytest.raises(InvalidValueError, match=r"^thread_id: .*lone surrogate at 3\)$"):
        check_text(task_id="ok", thread_id="abc\udfffdef")


@pytest.mark.parametrize("text", ["", "plain", "ééé", "日本語", "😀", "\x00nul", "\uffff"])
def test_text_that_has_a_utf8_form_passes(text: str) -> None:
    check_text(task_id=text, user_id=None)


def test_integers_outside_signed_64_bits_are_refused() -> None:
    check_int(after=MAX_INT, limit=MIN_INT, other=None)
    for value in (MAX_INT + 1, MIN_INT - 1, 1 << 100):
        with pytest.raises(InvalidValueError, match=r"^after: integer out of range"):
            check_int(after=value)


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ("\ud800", "input"),
        (["ok", "\ud800"], "input[1]"),
        ({"a": {"b": ["\udc00"]}}, "input['a']['b'][0]"),
        ((1, "\udbff"), "input[1]"),
        ({"k\ud800": 1}, "input"),
        ({"ok": {"\udfff": None}}, "input['ok']"),
    ],
)
def test_json_values_are_walked_for_strings_and_keys(value: Any, field: str) -> None:
    with pytest.raises(InvalidValueError) as error:
        check_json(input=value)
    assert error.value.field == field
    assert "lone surrogate" in str(error.value)
    str(error.value).encode("ascii")  # the message itself can be printed and stored


def test_json_values_nested_too_deep_are_refused_without_recursion() -> None:
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(InvalidValueError, match=f"nested deeper than {MAX_JSON_DEPTH} levels"):
        check_json(input=deep)
    fine: Any = "x"
    for _ in range(MAX_JSON_DEPTH):
        fine = {"k": fine}
    check_json(input=fine)
    with pytest.raises(InvalidValueError, match="nested deeper than 3 levels"):
        storable_json("input", [[[[]]]], max_depth=3)


def test_ordinary_json_values_and_non_json_values_pass() -> None:
    check_json(input={"a": [1, 2.5, None, True, "é", {"b": "😀"}]}, metadata=None)
    check_json(input=1 << 100)  # stored as JSON text: no integer bound inside
    check_json(input=object())  # not JSON: the encoder says so (TypeError)
