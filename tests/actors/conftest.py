"""Fixtures of the runtime tests: every runtime test runs on every backend."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

import actors

OpenRuntime = Callable[..., AbstractAsyncContextManager[actors.Runtime]]

BACKENDS = ["memory", "sqlite"]


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a fresh store on the backend under test."""
    if request.param == "memory":
        return "memory://"
    return f"sqlite:///{tmp_path}/tasks.db"


@pytest.fixture
def open_rt(store_url: str) -> OpenRuntime:
    """``open_rt(app, **options)``: open_runtime on the backend under test."""

    def opener(app: actors.App, **options: Any) -> AbstractAsyncContextManager[actors.Runtime]:
        options.setdefault("node_id", "node-a")
        return actors.open_runtime(app, store_url, **options)

    return opener
