"""The taskactors pytest plugin (registered through the ``pytest11`` entry point).

Fixtures:

* ``taskactors_store``: an open in-memory store for the test.
* ``taskactors_sqlite_store``: an open store on a SQLite file in ``tmp_path``.
* ``taskactors_runtime``: ``taskactors_runtime(app, **options)`` opens a
  runtime on ``taskactors_store`` (an async context manager); open it again
  after a crash to recover on the same data.

They need pytest-trio (async fixtures); use ``autojump_clock`` for time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

import storage

from ..runtime._app import App
from ..runtime._runtime import Runtime
from . import open_test_runtime


@pytest.fixture
async def taskactors_store() -> AsyncIterator[storage.Store]:
    """An open in-memory store, closed after the test."""
    async with storage.open("memory://") as store:
        yield store


@pytest.fixture
async def taskactors_sqlite_store(tmp_path: Path) -> AsyncIterator[storage.Store]:
    """An open store on a fresh SQLite file, closed after the test."""
    async with storage.open(f"sqlite:///{tmp_path}/taskactors-test.db") as store:
        yield store


@pytest.fixture
def taskactors_runtime(
    taskactors_store: storage.Store,
) -> Callable[..., AbstractAsyncContextManager[Runtime]]:
    """``async with taskactors_runtime(app, **options) as rt``: a runtime on the test store."""

    def opener(app: App, **options: Any) -> AbstractAsyncContextManager[Runtime]:
        return open_test_runtime(app, taskactors_store, **options)

    return opener
