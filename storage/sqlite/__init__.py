"""The SQLite backend: the embedded default (WAL, versioned schema, a writer process)."""

from ._backend import SQLiteBackend as SQLiteBackend

__all__ = [
    "SQLiteBackend",
]
