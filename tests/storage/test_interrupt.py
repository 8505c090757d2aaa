"""Ctrl-C that lands while the storage actor runs reaches the main task.

The storage actor is KeyboardInterrupt-protected: an interrupt raised in it
(here by a commit listener, which it calls) would kill it, refuse every
write after, and leave the program waiting. It is delivered to the main
task instead, which closes the store the proper way. (A child process: a
SIGINT must not reach the test runner.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CHILD = Path(__file__).with_name("interrupt_child.py")


def test_an_interrupt_in_the_storage_actor_goes_to_the_main_task(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(CHILD), str(tmp_path / "interrupt.db")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.stdout.splitlines() == ["put ok", "interrupted"], done.stderr[-2000:]
    assert done.returncode == 0
