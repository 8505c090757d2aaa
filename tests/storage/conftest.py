"""Fixtures of the storage tests: one open store per backend under test."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

import storage

StoreOpener = Callable[[], AbstractAsyncContextManager[storage.Store]]


def _open_memory(tmp_path: Path) -> AbstractAsyncContextManager[storage.Store]:
    return storage.open("memory://")


def _open_sqlite(tmp_path: Path) -> AbstractAsyncContextManager[storage.Store]:
    return storage.open(f"sqlite:///{tmp_path}/contract.db")


def _open_sqlite_thread(tmp_path: Path) -> AbstractAsyncContextManager[storage.Store]:
    return storage.open(f"sqlite:///{tmp_path}/contract.db?writer=thread")


#: Every backend the contract suite runs against, as (test id, opener).
#: A new backend (postgres, redis) is one more line here, nothing else.
BACKENDS: list[tuple[str, Callable[[Path], AbstractAsyncContextManager[storage.Store]]]] = [
    ("memory", _open_memory),
    ("sqlite", _open_sqlite),
    ("sqlite-thread", _open_sqlite_thread),
]


@pytest.fixture(
    params=[opener for _, opener in BACKENDS], ids=[backend_id for backend_id, _ in BACKENDS]
)
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreOpener:
    """A callable opening a store on the backend under test (an async CM)."""
    opener: Callable[[Path], AbstractAsyncContextManager[storage.Store]] = request.param
    return functools.partial(opener, tmp_path)


@pytest.fixture
async def store(open_store: StoreOpener) -> AsyncIterator[storage.Store]:
    """An open store on the backend under test, closed after the test."""
    async with open_store() as opened:
        yield opened
