"""What the store can keep: the one check of strings and numbers that enter from outside.

Theory of operation
-------------------
A Python ``str`` may hold a lone surrogate (``"\\ud800"``: valid JSON, and
what ``json.loads`` makes of that escape) that has no UTF-8 form, so SQLite
cannot bind it; an ``int`` may exceed the signed 64 bits of an SQLite
integer. Let through, either fails deep in the store (in the writer, where it
failed every write of the batch it rode in, other users' too: issue #17) or
while reading. So every edge (the websocket protocol, the runtime API, the
store client, and the CLI through them) checks what it takes in, here, and
refuses it with ``InvalidValueError`` naming the field.

The checks are pure and cheap: text that is ASCII (``str.isascii``, a flag
CPython keeps on every string) needs no encoding; a JSON value is walked
without recursion, to a bounded depth.
"""

from __future__ import annotations

from typing import Any, Final

#: Smallest and largest integer the store keeps (a signed 64-bit SQLite integer).
MIN_INT: Final = -(1 << 63)
MAX_INT: Final = (1 << 63) - 1
#: Deepest nesting of lists and objects in a stored JSON value: far below
#: the recursion limit that json's encoder and decoder meet (about 1,000),
#: so that what was stored always reads back.
MAX_JSON_DEPTH: Final = 256


class InvalidValueError(ValueError):
    """A value from outside that the store cannot keep: its field and the problem.

    ``str(error)`` reads ``"task_id: text that cannot be stored (lone surrogate at 0)"``.
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        #: The field (or path inside a JSON value) that holds the value.
        self.field = field
        #: What is wrong with it.
        self.problem = problem


def _unstorable(text: str) -> str | None:
    """Why ``text`` cannot be stored, or None when it can."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"text that cannot be stored (lone surrogate at {exc.start})"
    return None


def storable_text(field: str, value: object) -> None:
    """Refuse a string that has no UTF-8 form (a lone surrogate); anything else passes.

    Raises:
        InvalidValueError: naming ``field``.
    """
    if isinstance(value, str) and not value.isascii():
        problem = _unstorable(value)
        if problem is not None:
            raise InvalidValueError(field, problem)


def storable_int(field: str, value: object) -> None:
    """Refuse an integer outside the store's signed 64 bits; anything else passes.

    Raises:
        InvalidValueError: naming ``field``.
    """
    if isinstance(value, int) and not MIN_INT <= value <= MAX_INT:
        raise InvalidValueError(field, "integer out of range (signed 64-bit)")


#: The way to an item inside a JSON value: (the parent's trail, the key or index).
_Trail = tuple[Any, Any] | None


def storable_json(field: str, value: Any, *, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Refuse a JSON value holding unstorable text (in a string or an object's key)
    or nested deeper than ``max_depth`` lists and objects.

    Integers inside are not bounded: a JSON value is stored as text. Types
    that are not JSON are left to the encoder (which raises TypeError).

    Raises:
        InvalidValueError: naming the path to the value (``input['a'][0]``).
    """
    kind = type(value)
    if kind is str:
        storable_text(field, value)
        return
    if kind is not dict and kind is not list and kind is not tuple:
        return  # (a scalar: nothing to walk)
    # The path to each item is kept as (parent trail, key) links and spelled
    # out only for an error; only containers go on the stack: a walk of an
    # ordinary value makes no strings and few objects.
    stack: list[tuple[Any, _Trail, int]] = [(value, None, 1)]
    while stack:
        item, trail, depth = stack.pop()
        if depth > max_depth:
            raise InvalidValueError(field, f"nested deeper than {max_depth} levels")
        pairs = item.items() if isinstance(item, dict) else enumerate(item)
        for key, child in pairs:
            if type(key) is str and not key.isascii() and (problem := _unstorable(key)):
                raise InvalidValueError(_path(field, trail), f"key {key!r}: {problem}")
            if isinstance(child, str):
                if not child.isascii() and (problem := _unstorable(child)):
                    raise InvalidValueError(_path(field, (trail, key)), problem)
            elif isinstance(child, dict | list | tuple):
                stack.append((child, (trail, key), depth + 1))


def _path(field: str, trail: _Trail) -> str:
    """``input['a'][0]`` from a trail (keys by repr: a lone surrogate prints as an escape)."""
    keys = []
    while trail is not None:
        trail, key = trail
        keys.append(f"[{key!r}]")
    return field + "".join(reversed(keys))


def check_text(**fields: str | None) -> None:
    """``storable_text`` of each keyword (its name is the field's): one call per API method.

    Raises:
        InvalidValueError: the first unstorable one.
    """
    for field, value in fields.items():
        if value is not None and not (type(value) is str and value.isascii()):
            storable_text(field, value)


def check_int(**fields: int | None) -> None:
    """``storable_int`` of each keyword.

    Raises:
        InvalidValueError: the first one out of range.
    """
    for field, value in fields.items():
        if value is not None:
            storable_int(field, value)


def check_json(**fields: Any) -> None:
    """``storable_json`` of each keyword.

    Raises:
        InvalidValueError: the first unstorable one.
    """
    for field, value in fields.items():
        if value is not None:
            storable_json(field, value)
