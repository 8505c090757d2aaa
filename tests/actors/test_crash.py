"""A real process killed with SIGKILL mid-task; a new process finishes the task."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import trio

import storage

CHILD = Path(__file__).with_name("crash_child.py")
STEPS = 6


class Child:
    """The crash child, driven line by line through its stdin and stdout."""

    def __init__(self, db: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(CHILD), str(db)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.lines: list[str] = []

    def read(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        self.lines.append(line)
        return line

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def read_until(self, wanted: str) -> None:
        while True:
            line = self.read()
            if line == wanted:
                return
            if not line:
                raise AssertionError(f"child ended before {wanted!r}: {self.lines}")

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


def drive_to_kill_point(db: Path, acked: int, mid_step: bool) -> list[str]:
    """Run the child until `acked` steps are durable (and, if mid_step, the
    next body ran but its result is not stored), then SIGKILL it."""
    child = Child(db)
    try:
        for index in range(acked):
            child.read_until(f"ran {index}")
            child.go()
            child.read_until(f"acked {index}")
        if mid_step:
            child.read_until(f"ran {acked}")
    finally:
        child.kill()
    return child.lines


def finish(db: Path) -> list[str]:
    child = Child(db)
    try:
        while True:
            line = child.read()
            if line.startswith("ran "):
                child.go()
            if line.startswith("result ") or not line:
                break
    finally:
        child.kill()
    return child.lines


async def read_history(db: Path) -> list[storage.StoredEvent]:
    async with storage.open(f"sqlite:///{db}") as store:
        return await store.read_events("crash-task")


#: (steps acknowledged before the kill, whether the next step's body ran too)
KILL_POINTS = [(0, True), (2, False), (3, True), (5, False), (5, True)]


async def test_sigkill_mid_task_then_new_process_finishes_it(tmp_path: Path) -> None:
    for acked, mid_step in KILL_POINTS:
        db = tmp_path / f"crash-{acked}-{mid_step}.db"
        with trio.fail_after(60):
            first = await trio.to_thread.run_sync(drive_to_kill_point, db, acked, mid_step)
            second = await trio.to_thread.run_sync(finish, db)
        point = f"kill point {acked}, mid_step={mid_step}"
        acked_first = {int(line.split()[1]) for line in first if line.startswith("acked ")}
        ran_second = {int(line.split()[1]) for line in second if line.startswith("ran ")}
        assert acked_first == set(range(acked)), point
        # No step whose result was acknowledged ran again...
        assert not acked_first & ran_second, point
        # ...and every other step ran in the second process.
        assert ran_second == set(range(acked, STEPS)), point
        assert second[-1] == "result " + json.dumps([i * i for i in range(STEPS)]), point
        history = await read_history(db)
        assert [e.seq for e in history] == list(range(1, len(history) + 1)), point
        completed = [json.loads(e.data)["name"] for e in history if e.kind == "step_completed"]
        assert completed == [f"step-{i}" for i in range(STEPS)], point


def interrupt_after_first_step(db: Path) -> int:
    child = Child(db)
    try:
        child.read_until("ran 0")
        child.go()
        child.read_until("acked 0")
        child.read_until("ran 1")
        child.process.send_signal(signal.SIGINT)
        return child.process.wait(timeout=30)
    finally:
        child.kill()


async def test_sigint_shuts_down_gracefully_and_releases_the_task(tmp_path: Path) -> None:
    db = tmp_path / "sigint.db"
    with trio.fail_after(60):
        await trio.to_thread.run_sync(interrupt_after_first_step, db)
        async with storage.open(f"sqlite:///{db}") as store:
            record = await store.get_task("crash-task")
        assert record is not None
        assert record.state is storage.TaskState.RUNNING
        assert record.owner is None and record.lease_expires is None
        second = await trio.to_thread.run_sync(finish, db)
    ran_second = {int(line.split()[1]) for line in second if line.startswith("ran ")}
    assert ran_second == set(range(1, STEPS))
    assert second[-1].startswith("result ")
