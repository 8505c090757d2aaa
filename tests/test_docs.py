"""The API reference (``make docs``) builds without a warning and documents
every public name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import actors
import actors.client
import actors.testing
import storage

ROOT = Path(__file__).resolve().parent.parent
PUBLIC = (actors, actors.client, actors.testing, storage)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("docs")
    # -W: a warning fails the build, as `make docs` does.
    command = [sys.executable, "-m", "sphinx", "-q", "-W", "--keep-going", "-b", "html"]
    subprocess.run([*command, str(ROOT / "docs"), str(out)], check=True)
    return "".join(page.read_text() for page in (out / "api").glob("*.html"))


def test_every_public_name_has_an_entry(built: str) -> None:
    # A name re-exported by another public module may be documented there;
    # an alias (the same object under a former name) by its new name.
    modules = [module.__name__ for module in PUBLIC]

    def documented(module: object, name: str) -> bool:
        names = {name, getattr(getattr(module, name), "__name__", name)}
        return any(f'id="{where}.{each}"' in built for where in modules for each in names)

    missing = [
        f"{module.__name__}.{name}"
        for module in PUBLIC
        for name in module.__all__
        if not documented(module, name)
    ]
    assert not missing, f"not in docs/api/*.rst: {missing}"
