"""``storage.open(url)``: pick a backend by URL and open a store on it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qs, urlsplit

from ._backend import Backend
from ._clock import Clock
from .actor._store import Store, open_store
from .model._errors import BackendUnavailableError


def backend_from_url(url: str) -> Backend:
    """The backend a URL names: ``memory://`` or ``sqlite:///path``.

    ``sqlite:///path?writer=thread`` writes from a worker thread of this
    process instead of the writer process (see ``SQLiteBackend``).

    Raises:
        BackendUnavailableError: unknown scheme, a backend this build lacks,
            or ``sqlite://:memory:`` (use ``memory://`` for a throwaway store).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "memory":
        from .memory._backend import MemoryBackend

        return MemoryBackend()
    if scheme == "sqlite":
        from .sqlite._backend import SQLiteBackend

        # sqlite:///tasks.db -> "tasks.db"; sqlite:////abs/tasks.db -> "/abs/tasks.db"
        path = url.split("://", 1)[1]
        path, _, query = path.partition("?")
        path = path[1:] if path.startswith("/") else path
        if not path:
            raise BackendUnavailableError(f"no database path in {url!r}")
        options = parse_qs(query, keep_blank_values=True)
        unknown = sorted(set(options) - {"writer"})
        if unknown:
            raise BackendUnavailableError(
                f"unknown SQLite option(s) {unknown} in {url!r}: the one option is writer"
            )
        writer = options.get("writer", ["process"])[-1]
        return SQLiteBackend(path, writer=writer)
    raise BackendUnavailableError(
        f"unsupported store URL {url!r}: expected memory:// or sqlite:///path"
    )


@asynccontextmanager
async def open(
    url: str, *, clock: Clock | None = None, threads: bool | None = None
) -> AsyncIterator[Store]:
    """Open the store a URL names for the duration of the block (see open_store)."""
    async with open_store(backend_from_url(url), clock=clock, threads=threads) as store:
        yield store
