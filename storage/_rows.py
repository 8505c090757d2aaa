"""Records as SQL rows: a tuple of the record's fields, in field order.

A table's columns are named after its record's fields, in the same order
(``_sqlite_schema.py``), so a row *is* the record's fields. ``RowMapper``
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

T = TypeVar("T", bound=attrs.AttrsInstance)


class RowMapper(Generic[T]):
    """Maps records of ``cls`` to row tuples and back."""

    def __init__(self, cls: type[T]) -> None:
        self.cls = cls
        fields = attrs.fields(cls)
        names = [field.name for field in fields]
        #: The quoted column list, in field order.
        self.columns = ", ".join(f'"{name}"' for name in names)
        #: ``(?, ?, ...)``: one placeholder per column.
        self.placeholders = f"({', '.join('?' * len(names))})"
        self._get: Callable[[T], Any] = operator.attrgetter(*names)
        hints = typing.get_type_hints(cls)
        #: (position, how to read a stored value) of the fields a row cannot keep as is.
        self._readers: list[tuple[int, Callable[[Any], Any]]] = []
        self._enums: list[int] = []
        for position, name in enumerate(names):
            kind = hints[name]
            if isinstance(kind, type) and issubclass(kind, enum.Enum):
                self._readers.append((position, kind))
                self._enums.append(position)
            elif kind is bool:
                self._readers.append((position, bool))

    def to_row(self, record: T) -> tuple[Any, ...]:
        """The record's fields as a row (enums as their values)."""
        values = self._get(record)
        if not self._enums:
            return tuple(values)
        row = list(values)
        for position in self._enums:
            row[position] = row[position].value
        return tuple(row)

    def from_row(self, row: Sequence[Any]) -> T:
        """The record a row holds."""
        if not self._readers:
            return self.cls(*row)
        values = list(row)
        for position, read in self._readers:
            if values[position] is not None:
                values[position] = read(values[position])
        return self.cls(*values)
