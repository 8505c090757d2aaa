"""A process the crash test runs and kills: one multi-step task on a SQLite file.

Usage: python crash_child.py DB_PATH

Each step body prints ``ran N`` and waits for a line on stdin before it
returns; after ``ctx.step`` returns (the result is durable), the handler
prints ``acked N``. At the end the process prints ``result <json>``. The
parent paces the steps through stdin and kills the process where it wants.
"""

from __future__ import annotations

import json
import sys

import trio

import actors

STEPS = 6
app = actors.App()


def body(index: int) -> int:
    print(f"ran {index}", flush=True)
    if not sys.stdin.readline():
        raise SystemExit("stdin closed")
    return index * index


@app.task("crashy")
async def crashy(ctx: actors.TaskContext, request: actors.Request) -> list[int]:
    results = []
    for index in range(STEPS):
        results.append(await ctx.step(f"step-{index}", body, index))
        print(f"acked {index}", flush=True)
    return results


async def main(db_path: str) -> None:
    async with actors.open_runtime(app, f"sqlite:///{db_path}", node_id="crash-node") as rt:
        info = await rt.submit("crashy", task_id="crash-task")
        result = await rt.result(info.id)
        print(f"result {json.dumps(result)}", flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
