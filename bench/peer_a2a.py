"""Peer (iv): a2a-sdk's request handler with its SQLite task store.

Run as a child process (``python -m bench.peer_a2a '{"n": 200, "path": "..."}'``):
it is an asyncio program, kept out of the trio process being measured. Each
task is a 3-step agent: the Task (submitted), working, one artifact per step,
completed: 6 events, each saved by the task store. Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time
import uuid
from typing import Any


async def _main(n: int, path: str, concurrency: int, in_memory: bool) -> dict[str, Any]:
    from a2a.helpers.proto_helpers import new_task, new_text_part
    from a2a.server.agent_execution import AgentExecutor, RequestContext
    from a2a.server.context import ServerCallContext
    from a2a.server.events import EventQueue
    from a2a.server.request_handlers import DefaultRequestHandler
    from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
    from a2a.types.a2a_pb2 import (
        AgentCapabilities,
        AgentCard,
        Message,
        Part,
        Role,
        SendMessageRequest,
        TaskState,
    )

    class ThreeSteps(AgentExecutor):
        async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
            task_id = context.task_id
            context_id = context.context_id
            assert task_id is not None and context_id is not None
            await event_queue.enqueue_event(
                new_task(task_id, context_id, TaskState.TASK_STATE_SUBMITTED)
            )
            updater = TaskUpdater(event_queue, task_id, context_id)
            await updater.start_work()
            for value, step in enumerate(("one", "two", "three"), start=1):
                await updater.add_artifact([new_text_part(str(value))], name=step)
            await updater.complete()

        async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
            raise NotImplementedError

    journal_mode = synchronous = None
    engine = None
    if in_memory:
        store: Any = InMemoryTaskStore()
    else:
        from a2a.server.tasks import DatabaseTaskStore
        from sqlalchemy import event
        from sqlalchemy.ext.asyncio import create_async_engine

        with sqlite3.connect(path) as connection:  # the same settings as ours
            journal_mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        engine = create_async_engine(f"sqlite+aiosqlite:///{path}")

        @event.listens_for(engine.sync_engine, "connect")
        def _full(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.close()

        store = DatabaseTaskStore(engine)
        await store.initialize()
        async with engine.connect() as connection:
            from sqlalchemy import text

            synchronous = (await connection.execute(text("PRAGMA synchronous"))).scalar()
    commits = 0
    if engine is not None:
        from sqlalchemy import event

        @event.listens_for(engine.sync_engine, "commit")
        def _count(_connection: Any) -> None:
            nonlocal commits
            commits += 1

    card = AgentCard(
        name="bench",
        description="3 steps",
        version="1",
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
    )
    card.capabilities.CopyFrom(AgentCapabilities(streaming=False))
    handler = DefaultRequestHandler(ThreeSteps(), store, card)
    limit = asyncio.Semaphore(concurrency)
    states: dict[str, int] = {}

    async def one(i: int) -> None:
        message = Message(
            message_id=uuid.uuid4().hex,
            role=Role.ROLE_USER,
            parts=[Part(text=f"task {i}")],
        )
        async with limit:
            result = await handler.on_message_send(
                SendMessageRequest(message=message), ServerCallContext()
            )
        state = TaskState.Name(result.status.state) if hasattr(result, "status") else "message"
        states[state] = states.get(state, 0) + 1

    await one(-1)  # warm up (imports, table)
    commits = 0
    states.clear()
    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - started
    if engine is not None:
        await engine.dispose()
    return {
        "n": n,
        "elapsed": elapsed,
        "tasks_per_s": n / elapsed,
        "commits_per_task": commits / n if engine is not None else None,
        "events_per_task": 6,
        "states": states,
        "journal_mode": journal_mode,
        "synchronous": synchronous,
        "concurrency": concurrency,
    }


def main() -> None:
    args = json.loads(sys.argv[1])
    result = asyncio.run(
        _main(args["n"], args["path"], args.get("concurrency", 1000), args.get("memory", False))
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
