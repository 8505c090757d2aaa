"""The app of the SIGKILL torture runs: tasks of a few durable steps whose bodies log.

Each step body appends ``task,step,run`` to the file ``$TORTURE_LOG`` and
fsyncs it before it returns (``run``: ``$TORTURE_RUN``, the incarnation of
the process), prints ``ran task,step,run`` on stdout for the driver to pace
its kills, then yields a little so that several bodies are in flight at once.
Served by ``taskactors serve --app tests.soak.torture_app:app`` or embedded by
``torture_child.py``.
"""

from __future__ import annotations

import os
from typing import Any

import trio

import actors

app = actors.App()


def step_value(task_id: str, index: int) -> str:
    """What step ``index`` of ``task_id`` returns (the result is the list of them)."""
    return f"{task_id}:{index}"


def expected_result(task_id: str, steps: int) -> list[str]:
    return [step_value(task_id, i) for i in range(steps)]


async def body(task_id: str, index: int, pause: float) -> str:
    line = f"{task_id},{index},{os.environ.get('TORTURE_RUN', '0')}\n"
    descriptor = os.open(os.environ["TORTURE_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(descriptor, line.encode())
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    print(f"ran {line.strip()}", flush=True)
    await trio.sleep(pause)
    return step_value(task_id, index)


@app.task("torture")
async def torture(ctx: actors.TaskContext, request: actors.Request) -> Any:
    steps, pause = request.input["steps"], request.input["pause"]
    results = []
    for index in range(steps):
        results.append(await ctx.step(f"step-{index}", body, ctx.task_id, index, pause))
        ctx.progress(index + 1, steps)
    return results
