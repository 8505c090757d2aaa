"""The process the embedded torture run kills: ``open_runtime`` on SQLite, many tasks.

Usage: python -m tests.soak.torture_child DB TASKS STEPS PAUSE

Submits ``t-0`` .. ``t-{TASKS-1}`` (with their own ids, so a restarted
process finds the tasks it submitted before instead of doubling them), waits
for every result and prints ``done <json>`` (task id -> result). A stable
node id lets a restarted process take its tasks back at once.
"""

from __future__ import annotations

import json
import sys

import trio

import actors

from .torture_app import app


async def main(db: str, tasks: int, steps: int, pause: float) -> None:
    async with actors.open_runtime(app, f"sqlite:///{db}", node_id="torture-node") as rt:
        ids = [f"t-{i}" for i in range(tasks)]
        for task_id in ids:
            await rt.submit("torture", {"steps": steps, "pause": pause}, task_id=task_id)
        print("submitted", flush=True)
        results = {task_id: await rt.result(task_id) for task_id in ids}
        print("done " + json.dumps(results), flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
