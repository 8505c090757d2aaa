"""Child of test_sqlite_process.py: a store cancelled while its first
batches are being written, at one moment or another (after 1, 3, 5, 8 and
13 turns of the scheduler). For each, prints one JSON line: the writes that
reported success, and the events in the database. (A child process: a
regression would hang in a shielded wait no test timeout can cancel.)
"""

from __future__ import annotations

import json
import sqlite3
import sys
from contextlib import closing
from pathlib import Path

import trio

import storage
from storage import NewEvent, TaskRecord, TaskState, TaskWrite
from storage.actor._pending import PendingWrite


def _succeeded(write: PendingWrite) -> bool:
    try:
        write.outcome_nowait()
    except storage.StorageError:
        return False
    return True


async def cancelled_after(path: Path, turns: int) -> dict[str, int]:
    with trio.CancelScope() as scope:
        async with storage.open(f"sqlite:///{path}") as store:
            record = TaskRecord(
                id="a", name="job", state=TaskState.PENDING, input="{}", created_at=0.0,
                updated_at=0.0, root_id="a",
            )  # fmt: skip
            await store.put_task(record)
            pending = [
                store.execute_nowait(TaskWrite("a", events=(NewEvent(f"e{i}"),)))
                for i in range(3000)
            ]
            for _ in range(turns):
                await trio.lowlevel.checkpoint()
            scope.cancel()
            await trio.sleep_forever()
    with closing(sqlite3.connect(path)) as connection:
        (count,) = connection.execute("SELECT COUNT(*) FROM events").fetchone()
    return {
        "turns": turns,
        "done": sum(write.done for write in pending),
        "succeeded": sum(_succeeded(write) for write in pending if write.done),
        "in_database": count,
    }


def main(folder: str) -> None:
    for turns in (1, 3, 5, 8, 13):
        result = trio.run(cancelled_after, Path(folder) / f"cancel-{turns}.db", turns)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
