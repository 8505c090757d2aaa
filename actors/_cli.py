"""The ``taskactors`` command line."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

import trio

from ._errors import ActorsError
from ._info import TaskEvent
from ._runtime import Runtime, open_runtime


def _line(event: TaskEvent, names: dict[str, str]) -> str:
    who = f"{names.get(event.task_id, '?')}:{event.task_id[:8]}"
    data = event.data
    if event.kind == "state":
        detail = f"{data.get('from', '-')} -> {data['to']}"
        if "error" in data:
            detail += f"  ({data['error']})"
    elif event.kind == "progress":
        detail = f"{data['done']}/{data['total']}"
    elif event.kind in ("step_started", "step_completed", "step_failed"):
        detail = data["name"] + (f"  ({data['error']})" if "error" in data else "")
    else:
        detail = ", ".join(f"{k}={v}" for k, v in data.items()) if isinstance(data, dict) else ""
    return f"  #{event.seq:<3} {who:<22} {event.kind:<16} {detail}"


async def _print_events(rt: Runtime, task_id: str, names: dict[str, str]) -> None:
    async with rt.subscribe(task_id, resume_on_lag=True) as events:
        async for event in events:
            print(_line(event, names), flush=True)


async def run_demo(store: str) -> int:
    """Submit the demo tasks on ``store`` and print their events and results."""
    from ._demo import demo_app

    started = time.monotonic()
    print(f"taskactors demo on {store}\n")
    async with open_runtime(demo_app, store) as rt:
        leftovers = [t for t in await rt.list() if not t.terminal]
        if leftovers:
            print(f"resumed {len(leftovers)} unfinished task(s) from an earlier run")
        names: dict[str, str] = {}
        async with trio.open_nursery() as nursery:
            submitted = [
                await rt.submit("pipeline", {"items": 4}, thread_id="demo"),
                await rt.submit("approval", {}, thread_id="demo"),
                await rt.submit("flaky", {}, thread_id="demo"),
            ]
            for info in [*leftovers, *submitted]:
                names[info.id] = info.name
                nursery.start_soon(_print_events, rt, info.id, names)
            approval = submitted[1]
            await rt.wait(approval.id, states=["input_required"])
            print("  ... answering the approval task's question: approve")
            await rt.send(approval.id, {"approve": True})
        print("\nresults:")
        for info in [*leftovers, *submitted]:
            final = await rt.get(info.id)
            try:
                outcome: Any = await rt.result(info.id)
            except ActorsError as exc:
                outcome = f"error: {exc}"
            print(f"  {final.name:<9} {final.id[:8]}  {final.state.value:<10} {outcome}")
        usage = await rt.usage("demo")
        print(f"\ntoken usage of thread 'demo': {usage['total_tokens']} tokens")
        for model, figures in sorted(usage["by_model"].items()):
            print(f"  {model:<11} {figures['tokens']:>6} tokens in {figures['runs']} task(s)")
    print(f"\ndone in {time.monotonic() - started:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``taskactors`` command."""
    parser = argparse.ArgumentParser(
        prog="taskactors", description="A durable actor runtime for long-running tasks."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser("demo", help="run the demo app on an embedded SQLite file")
    demo.add_argument(
        "--store",
        default="sqlite:///taskactors-demo.db",
        help="store URL (default: sqlite:///taskactors-demo.db in the current folder)",
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            return trio.run(run_demo, args.store)
    except KeyboardInterrupt:
        return 130
    except (ActorsError, OSError) as exc:
        print(f"taskactors: {exc}", file=sys.stderr)
        return 1
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
