"""An independent client: drives a taskactors server with the `websockets` library.

Run by tests/actors/test_server.py in a subprocess (asyncio stays out of the
test process): ``python ws_interop.py URL TOKEN``. It authenticates by header,
submits an ``emit`` task, subscribes and reads its events to the end; then on
a second connection authenticates with an ``auth`` op and reads the history;
then checks that a bad token is closed with 1008. It prints one JSON report.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed


async def call(ws: ClientConnection, request_id: int, op: str, **fields: Any) -> Any:
    await ws.send(json.dumps({"id": request_id, "op": op, **fields}))
    while True:
        frame = json.loads(await ws.recv())
        if "ok" in frame:
            assert frame["id"] == request_id, frame
            assert frame["ok"] is True, frame
            return frame["result"]


async def main(url: str, token: str) -> dict[str, Any]:
    report: dict[str, Any] = {}
    async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        report["user_id"] = (await call(ws, 1, "auth", token=token))["user_id"]
        info = await call(ws, 2, "submit", name="emit", input={"count": 25})
        report["task_id"] = info["id"]
        sub = (await call(ws, 3, "subscribe", task_id=info["id"], after=0))["sub"]
        events: list[dict[str, Any]] = []
        while True:
            frame = json.loads(await ws.recv())
            assert frame["sub"] == sub, frame
            if frame["op"] == "end":
                break
            events.extend(frame["events"] if frame["op"] == "events" else [frame["event"]])
        report["seqs"] = [event["seq"] for event in events]
        report["ticks"] = sum(event["kind"] == "tick" for event in events)
    async with connect(url) as ws:
        await call(ws, 1, "auth", token=token)
        history = await call(ws, 2, "history", task_id=report["task_id"])
        report["history"] = [event["seq"] for event in history]
    async with connect(url, additional_headers={"Authorization": "Bearer forged"}) as ws:
        try:
            await ws.recv()
        except ConnectionClosed as closed:
            report["refused"] = closed.rcvd.code if closed.rcvd is not None else None
    return report


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2]))))
