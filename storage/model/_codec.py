"""THE converter: every record and message crosses JSON through this one.

``storage`` stores JSON text; ``actors`` encodes payloads and its public
records (TaskInfo, TaskEvent) with the same converter, so there is exactly
one place that decides how a value looks on disk and on the wire.
"""

from __future__ import annotations

import json
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any, TypeVar

from cattrs.preconf.json import JsonConverter, make_converter

T = TypeVar("T")

converter: JsonConverter = make_converter(forbid_extra_keys=True)
# frozensets of enums (TaskFilter.states) go to sorted lists for a stable form.
converter.register_unstructure_hook(
    frozenset, lambda value: sorted(converter.unstructure(v) for v in value)
)


def _default(value: Any) -> Any:
    # What json cannot encode by itself (attrs classes, enums, sets, dates...)
    # goes through the converter; anything the converter leaves as it is has
    # no JSON form.
    unstructured = converter.unstructure(value)
    if unstructured is value:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
    return unstructured


# One encoder, made once: json.dumps with options builds a new one per call,
# and JSONEncoder.encode still builds its C encoder per call; the C encoder
# made once (without the circular-reference check: a cycle ends in a
# RecursionError, and the slow path below says what it is) costs half.
if c_make_encoder is not None:
    _iterencode = c_make_encoder(
        None, _default, encode_basestring_ascii, None, ":", ",", False, False, False
    )

    def _encode(value: Any) -> str:
        return "".join(_iterencode(value, 0))

else:  # pragma: no cover - a Python without the _json accelerator
    _encode = json.JSONEncoder(  # type: ignore[assignment]
        separators=(",", ":"), allow_nan=False, default=_default
    ).encode

#: JSON text of a str (what ``encode`` gives for one): for hand-built JSON.
quote = encode_basestring_ascii


def encode(value: Any) -> str:
    """JSON text of a value (attrs classes and enums go through the converter).

    Raises:
        TypeError: the value has no JSON form.
    """
    try:
        # Scalars, the usual step result, without the encoder's machinery
        # (exact types: a bool or an int subclass takes the encoder's way).
        kind = type(value)
        if kind is int:
            return int.__repr__(value)
        if kind is str:
            return quote(value)
        return _encode(value)
    except (TypeError, ValueError, RecursionError):
        pass
    # The slow path: unstructure the whole value first (e.g. enum dict keys),
    # and say why it still fails.
    try:
        return json.dumps(converter.unstructure(value), separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise TypeError(
            f"value of type {type(value).__name__} is not JSON-serializable: {exc}"
        ) from exc


def decode(text: str, cls: type[T] | Any = Any) -> T | Any:
    """Parse JSON text, structured as ``cls`` when given."""
    # null and non-negative integers, the usual inputs and step results,
    # without the decoder's machinery (json.loads costs several times more).
    if text == "null":
        raw: Any = None
    elif text.isdigit() and text.isascii() and (text[0] != "0" or len(text) == 1):
        raw = int(text)
    else:
        raw = json.loads(text)
    if cls is Any:
        return raw
    return converter.structure(raw, cls)


def to_dict(value: Any) -> Any:
    """The JSON-ready form of a value (dicts, lists, str, numbers, None)."""
    return converter.unstructure(value)


def from_dict(raw: Any, cls: type[T]) -> T:
    """Structure a JSON-ready value as ``cls``."""
    return converter.structure(raw, cls)
