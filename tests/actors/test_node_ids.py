"""Node ids: a runtime opened without one gets its process's own.

Two processes that shared the old default (the host name) took each other's
running tasks at every scan, a node taking back "its own" tasks at once, and
ran their steps twice at the same time. Across processes, so on SQLite, on
trio's real clock: the test waits for the other process, never sleeps.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import trio

import actors
from actors import TaskState

#: The repository (the other process imports ``actors`` from it).
ROOT = Path(__file__).resolve().parents[2]

#: Opens a runtime with the default node id on the store given, with a
#: handler for "job" (a node leaves tasks it has no handler for), and closes it.
OTHER_PROCESS = """
import sys, trio, actors
app = actors.App()

@app.task("job")
async def job(ctx, request):
    return await ctx.step("wait", trio.sleep_forever)

async def main():
    async with actors.open_runtime(app, sys.argv[1]) as rt:
        print(rt.node_id)

trio.run(main)
"""


async def test_a_second_process_with_the_default_node_id_leaves_running_tasks_alone(
    tmp_path: Path,
) -> None:
    app = actors.App()
    gate = trio.Event()
    ran = 0

    async def wait_for_gate() -> str:
        nonlocal ran
        ran += 1
        await gate.wait()
        return "done"

    @app.task("job")
    async def job(ctx: actors.TaskContext, request: actors.Request) -> str:
        return str(await ctx.step("wait", wait_for_gate))

    url = f"sqlite:///{tmp_path}/tasks.db"
    with trio.fail_after(120):
        async with actors.open_runtime(app, url) as rt:
            assert rt.node_id == f"{socket.gethostname()}-{os.getpid()}"
            info = await rt.submit("job")
            await rt.wait(info.id, states=[TaskState.RUNNING])
            other = await trio.run_process(
                [sys.executable, "-c", OTHER_PROCESS, url],
                capture_stdout=True,
                cwd=ROOT,
            )
            assert other.stdout.decode().strip() not in ("", rt.node_id)
            # Still this node's, never claimed (a claim, then the other
            # node's close, would have released it).
            assert (await rt.get(info.id)).owner == rt.node_id
            gate.set()
            assert await rt.result(info.id) == "done"
    assert ran == 1
