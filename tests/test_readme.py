"""The README's embedding example runs as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_embedding_example_runs(tmp_path: Path) -> None:
    example = python_blocks()[0]
    script = tmp_path / "example.py"
    script.write_text(example)
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(README.parent)},
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "'published': True" in lines[-2]
    assert "'total_tokens': 160" in lines[-1]
    assert (tmp_path / "tasks.db").exists()
