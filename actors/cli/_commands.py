"""The client commands of ``taskactors``: submit, watch, ls, get, history,
send, cancel, stop, pause, resume, usage.

Each opens one connection (``open_client``), makes its requests and prints
the answer: text for people by default, JSON with ``--json``. ``watch``
draws a live progress bar on a terminal (``_display.Display``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..client._client import Client, Json, open_client
from ._display import Display, age, bar, clip, compact, event_line, short_id, table

#: Exit statuses of ``watch`` (and ``submit --watch``) by the task's final state.
EXIT_COMPLETED, EXIT_FAILED, EXIT_CANCELLED, EXIT_OTHER = 0, 1, 2, 3
#: Exit status of any error (usage, connection, not found, refused transition...).
EXIT_ERROR = 4
EXIT_INTERRUPTED = 130

#: Every task state, as the protocol spells them.
STATES = (
    "pending",
    "running",
    "paused",
    "input_required",
    "auth_required",
    "stopped",
    "completed",
    "failed",
    "cancelled",
    "rejected",
)


class CliError(Exception):
    """A user error the command line reports in one line."""


def exit_code(state: str | None) -> int:
    """The exit status of ``watch`` for a task's final state."""
    return {"completed": EXIT_COMPLETED, "failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}.get(
        state or "", EXIT_OTHER
    )


# -- input ------------------------------------------------------------------------------
def parse_json(text: str, what: str = "--input") -> Any:
    """A JSON value from the command line: literal JSON, ``@file`` or ``-`` (stdin).

    Raises:
        CliError: the text is not JSON, or the file cannot be read.
    """
    source = text
    try:
        if text == "-":
            source = sys.stdin.read()
        elif text.startswith("@"):
            with open(text[1:], encoding="utf-8") as file:
                source = file.read()
    except OSError as exc:
        raise CliError(f"{what}: cannot read {text[1:]}: {exc.strerror or exc}") from None
    try:
        return json.loads(source)
    except ValueError as exc:
        raise CliError(f"{what} is not valid JSON ({exc}): {clip(source.strip(), 40)}") from None


# -- output ---------------------------------------------------------------------------------
def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def _progress(info: Json) -> str:
    progress = info.get("progress")
    if not progress:
        return "-"
    done, total = progress
    return bar(done, total, 10)


def _when(at: Any) -> str:
    if not isinstance(at, int | float):
        return "-"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
    return f"{stamp}  ({age(time.time() - at)} ago)"


def _info_lines(info: Json) -> str:
    rows = [
        ("id", info.get("id")),
        ("name", info.get("name")),
        ("state", info.get("state")),
        ("progress", _progress(info)),
        ("error", info.get("error") or "-"),
        ("thread", info.get("thread_id") or "-"),
        ("user", info.get("user_id") or "-"),
        ("parent", info.get("parent_id") or "-"),
        ("created", _when(info.get("created_at"))),
        ("updated", _when(info.get("updated_at"))),
        ("run", info.get("run", "-")),
        ("events", info.get("last_seq", "-")),
        ("strategy", info.get("strategy", "-")),
        ("owner", info.get("owner") or "-"),
        ("metadata", compact(info.get("metadata")) or "-"),
    ]
    return "\n".join(f"{key:<9} {value}" for key, value in rows)


# -- client commands -------------------------------------------------------------------------
async def with_client(args: argparse.Namespace, command: Callable[[Client], Awaitable[int]]) -> int:
    async with open_client(args.url, token=args.token) as client:
        return await command(client)


async def watch_task(
    client: Client,
    task_id: str,
    *,
    after: int = 0,
    until: Sequence[str] = (),
    as_json: bool = False,
    display: Display,
) -> int:
    """Print a task's events (and a live progress bar on a terminal) until it
    finishes, or enters one of the ``until`` states; the exit status (0 for an
    ``until`` state, else by its final state: see ``exit_code``)."""
    info = await client.get(task_id)
    state, name = info["state"], info["name"]
    if state in until:
        if not as_json:
            print(f"task {task_id} {state}", flush=True)
        return EXIT_COMPLETED
    # Only a state entered after now counts for --until (the history replays older ones).
    now = int(info.get("last_seq", 0))
    progress = _progress(info) if info.get("progress") else ""
    reached = False

    def draw(redraw: bool = True) -> None:
        display.row(task_id, f"{name} {short_id(task_id)}  {progress:<32} {state}", redraw=redraw)

    draw()
    async with client.watch(task_id, after=after) as events:
        async for event in events:
            data = event.get("data")
            if event.get("kind") == "state" and isinstance(data, dict):
                state = str(data.get("to"))
                reached = state in until and event["seq"] > now
            elif event.get("kind") == "progress" and isinstance(data, dict):
                progress = bar(data.get("done", 0), data.get("total"), 20, fancy=display.fancy)
            if as_json:
                print(json.dumps(event, sort_keys=True), flush=True)
            else:
                draw(redraw=False)
                display.line(event_line(event))
            if reached:
                break
    display.close()
    final = await client.get(task_id)
    if not reached and state not in ("completed", "failed", "cancelled", "rejected"):
        state = final["state"]
    if not as_json:
        error = f": {final['error']}" if final.get("error") else ""
        print(f"task {task_id} {state}{error}", flush=True)
    return EXIT_COMPLETED if reached else exit_code(state)


def _display(args: argparse.Namespace) -> Display:
    return Display(sys.stdout, live=False if args.plain or args.json else None)


async def cmd_submit(args: argparse.Namespace) -> int:
    value = parse_json(args.input) if args.input is not None else None
    metadata = parse_json(args.metadata, "--metadata") if args.metadata is not None else None
    if metadata is not None and not isinstance(metadata, dict):
        raise CliError("--metadata must be a JSON object")

    async def run(client: Client) -> int:
        info = await client.submit(
            args.name,
            value,
            task_id=args.task_id,
            thread_id=args.thread,
            metadata=metadata,
            strategy=args.strategy,
        )
        if args.json and not args.watch:
            _print_json(info)
        elif not args.json:
            print(f"submitted {info['name']} task {info['id']} ({info['state']})", flush=True)
        if not args.watch:
            return 0
        return await watch_task(client, info["id"], as_json=args.json, display=_display(args))

    return await with_client(args, run)


async def cmd_watch(args: argparse.Namespace) -> int:
    async def run(client: Client) -> int:
        return await watch_task(
            client,
            args.task_id,
            after=args.after,
            until=args.until or (),
            as_json=args.json,
            display=_display(args),
        )

    return await with_client(args, run)


async def cmd_ls(args: argparse.Namespace) -> int:
    async def run(client: Client) -> int:
        tasks = await client.list(thread_id=args.thread, states=args.state, limit=args.limit)
        if args.json:
            _print_json(tasks)
            return 0
        if not tasks:
            print("no tasks")
            return 0
        now = time.time()
        rows = [
            [
                t["id"],
                t["name"],
                t["state"],
                _progress(t),
                t.get("thread_id") or "-",
                age(now - float(t["updated_at"])) + " ago",
            ]
            for t in tasks
        ]
        print(table(["ID", "NAME", "STATE", "PROGRESS", "THREAD", "UPDATED"], rows))
        return 0

    return await with_client(args, run)


async def cmd_get(args: argparse.Namespace) -> int:
    async def run(client: Client) -> int:
        info = await client.get(args.task_id)
        if args.json:
            _print_json(info)
        else:
            print(_info_lines(info))
        return 0

    return await with_client(args, run)


async def cmd_history(args: argparse.Namespace) -> int:
    async def run(client: Client) -> int:
        events = await client.history(args.task_id, after=args.after, limit=args.limit)
        if args.json:
            _print_json(events)
        elif not events:
            print(f"no events after #{args.after}")
        else:
            for event in events:
                print(event_line(event))
        return 0

    return await with_client(args, run)


async def cmd_send(args: argparse.Namespace) -> int:
    value = parse_json(args.input)

    async def run(client: Client) -> int:
        info = await client.send(args.task_id, value)
        if args.json:
            _print_json(info)
        else:
            print(f"sent to task {info['id']} ({info['state']})")
        return 0

    return await with_client(args, run)


async def cmd_cancel(args: argparse.Namespace) -> int:
    async def run(client: Client) -> int:
        info = await client.cancel(args.task_id, reason=args.reason)
        if args.json:
            _print_json(info)
        else:
            print(f"task {info['id']} {info['state']}")
        return 0

    return await with_client(args, run)


_SIGNAL_NOTES = {
    "pause": "it pauses at its next safe point",
    "stop": "send it a new request to run it again",
    "resume": "",
}


async def cmd_signal(args: argparse.Namespace) -> int:
    async def run(client: Client) -> int:
        info = await client.signal(args.task_id, args.command)
        if args.json:
            _print_json(info)
            return 0
        note = _SIGNAL_NOTES[args.command]
        if args.command == "pause" and info["state"] == "paused":
            note = ""
        print(
            f"{args.command}: task {info['id']} is {info['state']}" + (f"; {note}" if note else "")
        )
        return 0

    return await with_client(args, run)


async def cmd_usage(args: argparse.Namespace) -> int:
    async def run(client: Client) -> int:
        if args.thread is not None:
            threads = [args.thread]
        else:
            tasks = await client.list()
            threads = sorted({t["thread_id"] for t in tasks if t.get("thread_id")})
        usage = {t: await client.usage(t, include_active=args.include_active) for t in threads}
        if args.json:
            _print_json(usage[args.thread] if args.thread is not None else usage)
            return 0
        if not usage:
            print("no threads: usage is counted per thread (submit --thread T)")
            return 0
        rows = [
            [
                thread,
                figures["total_tokens"],
                figures["total_input_tokens"],
                figures["total_output_tokens"],
                figures["total_runs"],
            ]
            for thread, figures in usage.items()
        ]
        print(table(["THREAD", "TOKENS", "INPUT", "OUTPUT", "TASKS"], rows))
        models: dict[str, list[int]] = {}
        callers: dict[str, int] = {}
        for figures in usage.values():
            for model, numbers in figures["by_model"].items():
                total = models.setdefault(model, [0, 0])
                total[0] += numbers["tokens"]
                total[1] += numbers["runs"]
            for caller, tokens in figures["by_caller"].items():
                callers[caller] = callers.get(caller, 0) + tokens
        if models:
            print()
            print(table(["MODEL", "TOKENS", "TASKS"], [[m, *v] for m, v in sorted(models.items())]))
        if callers:
            print()
            print(table(["CALLER", "TOKENS"], sorted(callers.items())))
        if not args.include_active:
            print("\n(finished tasks only; --include-active counts the others too)")
        return 0

    return await with_client(args, run)
