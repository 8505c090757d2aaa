"""Peer (iii): DBOS Transact with its SQLite system database, a 3-step workflow.

Run as a child process (``python -m bench.peer_dbos '{"n": 200, "path": "...",
"journal": "wal"}'``): DBOS is an asyncio library, kept out of the trio process
being measured. ``journal`` is ``"wal"`` (set on the file before DBOS opens
it, as ours) or ``"delete"`` (DBOS's default rollback journal). Commits are
counted with SQLAlchemy's ``commit`` event. Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import sys
import time
from typing import Any


async def _main(n: int, path: str, journal: str) -> dict[str, Any]:
    import sqlalchemy
    from sqlalchemy import event

    with sqlite3.connect(path) as connection:
        journal_mode = connection.execute(f"PRAGMA journal_mode = {journal}").fetchone()[0]

    commits = 0

    @event.listens_for(sqlalchemy.engine.Engine, "commit")
    def _count(_connection: Any) -> None:
        nonlocal commits
        commits += 1

    from dbos import DBOS

    logging.getLogger("dbos").setLevel(logging.WARNING)
    dbos = DBOS(
        config={
            "name": "bench",
            "system_database_url": f"sqlite:///{path}",
            "run_admin_server": False,
        }
    )

    @DBOS.step()
    async def step_one(value: int) -> int:
        return value + 1

    @DBOS.step()
    async def step_two(value: int) -> int:
        return value + 1

    @DBOS.step()
    async def step_three(value: int) -> int:
        return value + 1

    @DBOS.workflow()
    async def three_steps(value: int) -> int:
        value = await step_one(value)
        value = await step_two(value)
        return await step_three(value)

    DBOS.launch()
    try:
        handle = await DBOS.start_workflow_async(three_steps, -1)  # warm up
        await handle.get_result()
        commits = 0
        started = time.perf_counter()
        handles = await asyncio.gather(
            *(DBOS.start_workflow_async(three_steps, i) for i in range(n))
        )
        results = await asyncio.gather(*(h.get_result() for h in handles))
        elapsed = time.perf_counter() - started
        assert results == [i + 3 for i in range(n)]
        counted = commits
        with sqlite3.connect(path) as connection:
            synchronous = connection.execute("PRAGMA synchronous").fetchone()[0]
    finally:
        DBOS.destroy()
    del dbos
    return {
        "n": n,
        "elapsed": elapsed,
        "tasks_per_s": n / elapsed,
        "commits_per_task": counted / n,
        "journal_mode": journal_mode,
        "synchronous": synchronous,
    }


def main() -> None:
    args = json.loads(sys.argv[1])
    result = asyncio.run(_main(args["n"], args["path"], args.get("journal", "wal")))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
