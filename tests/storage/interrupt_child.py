"""Child of test_interrupt.py: Ctrl-C lands while the storage actor runs.

A commit listener (called by the storage actor, at commit time) raises
SIGINT in the process. Prints ``put ok`` or ``put failed: ...`` for the
write being committed, then ``interrupted`` once KeyboardInterrupt reached
``trio.run``'s caller.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence

import trio

import storage
from storage import NewEvent, StoredEvent, TaskRecord, TaskState


async def main(path: str) -> None:
    async with storage.open(f"sqlite:///{path}") as store:
        fired = False

        def interrupt_once(events: Sequence[StoredEvent]) -> None:
            nonlocal fired
            if not fired:
                fired = True
                signal.raise_signal(signal.SIGINT)

        store.add_commit_listener(interrupt_once)
        record = TaskRecord(
            id="t", name="job", state=TaskState.PENDING, input="{}", created_at=1.0, updated_at=1.0
        )
        try:
            await store.put_task(record, [NewEvent("submitted")])
            print("put ok", flush=True)
        except storage.StorageError as exc:
            print(f"put failed: {exc}", flush=True)
        await trio.sleep(30)  # the interrupt comes here


if __name__ == "__main__":
    try:
        trio.run(main, sys.argv[1])
    except* KeyboardInterrupt:
        print("interrupted", flush=True)
