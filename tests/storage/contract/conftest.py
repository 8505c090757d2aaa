"""The backends the contract suite runs on: one open store per backend.

A new backend (postgres, redis) is one more ``ContractBackend`` in
``BACKENDS``: how to open a store on it, and, for a backend that needs a
service, how to tell the service is missing. A missing service skips that
backend's tests, or fails them when ``TASKACTORS_REQUIRE_SERVICES=1`` (CI,
where the service must be there).
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import attrs
import pytest

import storage

StoreOpener = Callable[[], AbstractAsyncContextManager[storage.Store]]


@attrs.frozen
class ContractBackend:
    """One backend under contract."""

    id: str
    """The test id (``test_x[sqlite]``)."""
    open: Callable[[Path], AbstractAsyncContextManager[storage.Store]]
    """Open a fresh store (an async CM), given the test's tmp_path."""
    missing: Callable[[], str | None] = lambda: None
    """Why the service this backend needs is not there, or None when it is."""


def _open_memory(tmp_path: Path) -> AbstractAsyncContextManager[storage.Store]:
    return storage.open("memory://")


def _open_sqlite(tmp_path: Path) -> AbstractAsyncContextManager[storage.Store]:
    return storage.open(f"sqlite:///{tmp_path}/contract.db")


def _open_sqlite_thread(tmp_path: Path) -> AbstractAsyncContextManager[storage.Store]:
    return storage.open(f"sqlite:///{tmp_path}/contract.db?writer=thread")


#: Every backend the contract suite runs against.
BACKENDS: list[ContractBackend] = [
    ContractBackend("memory", _open_memory),
    ContractBackend("sqlite", _open_sqlite),
    ContractBackend("sqlite-thread", _open_sqlite_thread),
]


def services_required() -> bool:
    """Whether a backend whose service is missing fails (else it skips)."""
    return os.environ.get("TASKACTORS_REQUIRE_SERVICES") == "1"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "backends(*ids): run a contract test on these backends only")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Every backend, or those a ``backends`` mark names (a property only some
    # backends have, such as text they must encode), so that no test is
    # generated only to be skipped.
    if "open_store" not in metafunc.fixturenames:
        return
    mark = metafunc.definition.get_closest_marker("backends")
    chosen = [b for b in BACKENDS if mark is None or b.id in mark.args]
    assert chosen, f"no backend named {mark.args if mark else ()}"
    metafunc.parametrize("open_store", chosen, ids=[b.id for b in chosen], indirect=True)


@pytest.fixture
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreOpener:
    """A callable opening a store on the backend under test (an async CM)."""
    backend: ContractBackend = request.param
    reason = backend.missing()
    if reason is not None:
        if services_required():
            pytest.fail(f"{backend.id}: {reason} (TASKACTORS_REQUIRE_SERVICES=1)")
        pytest.skip(f"{backend.id}: {reason}")
    return functools.partial(backend.open, tmp_path)


@pytest.fixture
async def store(open_store: StoreOpener) -> AsyncIterator[storage.Store]:
    """An open store on the backend under test, closed after the test."""
    async with open_store() as opened:
        yield opened
