"""The one converter's JSON text: the same as json.dumps, compact and ASCII."""

from __future__ import annotations

import enum
import json
import math
from typing import Any

import pytest

from storage import decode, encode


class Level(enum.IntEnum):
    HIGH = 3


@pytest.mark.parametrize(
    "value",
    [0, -7, 10**20, "", "plain", 'é "quoted"\n', True, False, None, 1.5, [1, "x"], {"a": [2]}],
)
def test_encode_is_compact_ascii_json(value: Any) -> None:
    assert encode(value) == json.dumps(value, separators=(",", ":"))
    assert decode(encode(value)) == value


def test_an_int_subclass_is_encoded_as_its_number() -> None:
    assert encode(Level.HIGH) == "3"
    assert encode({"level": Level.HIGH}) == '{"level":3}'


@pytest.mark.parametrize(
    "value", [math.nan, math.inf, object(), 10**5000], ids=["nan", "inf", "object", "huge_int"]
)
def test_a_value_without_json_form_is_a_type_error(value: Any) -> None:
    with pytest.raises(TypeError, match="not JSON-serializable"):
        encode(value)
