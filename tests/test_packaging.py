"""The package builds as a wheel and an sdist, and the wheel works installed
alone in a clean virtual environment (issue #19): the CLI and an embedded app.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

APP = textwrap.dedent(
    """
    import sys
    import trio
    import actors

    app = actors.App()

    @app.task("double")
    async def double(ctx, request):
        value = await ctx.step("double", lambda n: n * 2, request.input)
        ctx.progress(1, 1)
        return value

    async def main():
        async with actors.open_runtime(app, store=f"sqlite:///{sys.argv[1]}") as rt:
            info = await rt.submit("double", 21)
            print(await rt.result(info.id), actors.__file__)

    trio.run(main)
    """
)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    return out


@pytest.fixture(scope="module")
def venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    (wheel,) = dist.glob("*.whl")
    subprocess.run(
        [str(where / "bin" / "pip"), "install", "--quiet", str(wheel)],
        check=True,
        capture_output=True,
    )
    return where


def test_the_wheel_and_the_sdist_carry_the_packages_and_their_data(dist: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"actors/py.typed", "storage/py.typed", "actors/__init__.py"} <= names
    assert not any(name.startswith(("tests/", "bench/")) for name in names)
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        members = archive.getnames()
    assert any(name.endswith("actors/py.typed") for name in members)


def test_the_installed_cli_answers_help(venv: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [str(venv / "bin" / "taskactors"), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "usage: taskactors" in done.stdout


def test_an_embedded_app_runs_from_the_installed_package(venv: Path, tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text(APP)
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run(
        [str(venv / "bin" / "python"), str(script), str(tmp_path / "app.db")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=True,
    )
    result, location = done.stdout.split()
    assert result == "42"
    assert location.startswith(str(venv))  # the installed copy, not this checkout
