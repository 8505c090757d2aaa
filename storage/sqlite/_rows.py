"""Records as SQL rows: a tuple of the record's fields, in field order.

A table's columns are named after its record's fields, in the same order
(``_schema.py``), so a row *is* the record's fields. ``RowMapper``
turns one into the other without a dict in between: enum fields are stored
as their values and bools as integers; everything else is kept as it is.

This is not a second serializer: payloads stay opaque JSON text made by the
one converter (``_codec``). It exists because the write path maps tens of
thousands of rows per second, and a cattrs round trip through a dict per
row cost more than the SQL itself (issue #5).
"""

from __future__ import annotations

import enum
import operator
import typing
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import attrs

T = TypeVar("T")


class RowMapper(Generic[T]):
    """Maps records of ``cls`` (an attrs class or a named tuple) to row tuples and back."""

    def __init__(self, cls: type[T]) -> None:
        self.cls = cls
        names: list[str] = (
            [field.name for field in attrs.fields(cls)] if attrs.has(cls) else list(cls._fields)  # type: ignore[attr-defined]
        )
        #: The quoted column list, in field order.
        self.columns = ", ".join(f'"{name}"' for name in names)
        #: ``(?, ?, ...)``: one placeholder per column.
        self.placeholders = f"({', '.join('?' * len(names))})"
        self._get: Callable[[T], Any] = operator.attrgetter(*names)
        hints = typing.get_type_hints(cls)
        #: (position, how to read a stored value) of the fields a row cannot keep as is.
        self._readers: list[tuple[int, Callable[[Any], Any]]] = []
        self._enums: list[int] = []
        #: Positions of the float fields (REAL columns).
        self.reals: list[int] = []
        for position, name in enumerate(names):
            kind = hints[name]
            if isinstance(kind, type) and issubclass(kind, enum.Enum):
                # A dict lookup: calling the enum class costs several times more.
                self._readers.append((position, {m.value: m for m in kind}.__getitem__))
                self._enums.append(position)
            elif kind is bool:
                self._readers.append((position, bool))
            elif kind in (float, float | None):
                self.reals.append(position)
        #: The row as one JSON array, for ``json_group_array``: REALs as text
        #: with 18 significant digits, which round-trips every double (SQLite's
        #: JSON functions keep 15); ``from_json_row`` reads them back.
        self.json_array = "json_array({})".format(
            ", ".join(
                f'CASE WHEN "{name}" IS NULL THEN NULL ELSE printf(\'%!.18g\', "{name}") END'
                if position in self.reals
                else f'"{name}"'
                for position, name in enumerate(names)
            )
        )

    def to_row(self, record: T) -> tuple[Any, ...]:
        """The record's fields as a row (enums as their values)."""
        values = self._get(record)
        if not self._enums:
            return tuple(values)
        row = list(values)
        for position in self._enums:
            row[position] = row[position].value
        return tuple(row)

    def read_reals(self, row: list[Any]) -> list[Any]:
        """A ``json_array`` row with its REAL columns turned back into floats (in place)."""
        for position in self.reals:
            if row[position] is not None:
                row[position] = float(row[position])
        return row

    def from_json_row(self, row: list[Any]) -> T:
        """The record a ``json_array`` row holds (it is changed in place)."""
        return self.from_row(self.read_reals(row))

    def from_row(self, row: Sequence[Any]) -> T:
        """The record a row holds."""
        if not self._readers:
            return self.cls(*row)
        values = list(row)
        for position, read in self._readers:
            if values[position] is not None:
                values[position] = read(values[position])
        return self.cls(*values)
