"""The ``taskactors`` command line: ``serve``, the client commands, and ``demo``.

Every client command opens one connection to a server (``--url``, default
``$TASKACTORS_URL`` or ws://127.0.0.1:8765; ``--token``, default
``$TASKACTORS_TOKEN``), makes its requests and prints the answer: a table or
a few lines by default, JSON with ``--json``. Errors a user can cause (no
server, unknown task, a refused transition, bad JSON input...) print one
line on stderr and exit with status 4; no traceback.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, NoReturn

import trio

import storage

from ..client._client import ClientError
from ..core._errors import ActorsError
from ..runtime._app import App
from ..runtime._runtime import open_runtime
from ..server._server import describe_auth, load_tokens, serve_websocket
from ._commands import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    STATES,
    CliError,
    cmd_cancel,
    cmd_get,
    cmd_history,
    cmd_ls,
    cmd_send,
    cmd_signal,
    cmd_submit,
    cmd_usage,
    cmd_watch,
)

DEFAULT_URL = "ws://127.0.0.1:8765"
DEFAULT_STORE = "sqlite:///taskactors.db"
DEFAULT_DEMO_STORE = "sqlite:///taskactors-demo.db"
DEFAULT_APP = "actors.cli:demo_app"
#: The collector thresholds ``serve`` sets (CPython's default: 700, 10, 10).
#: Thousands of tasks in flight are hundreds of thousands of live objects,
#: which the default thresholds rescan each time the heap grows by a quarter
#: (about a third of the time of scenario a in bench/); taskactors makes no
#: reference cycles on its hot path, so collecting less often frees the same.
SERVE_GC_THRESHOLD = (50_000, 20, 100)


def gc_threshold(text: str) -> tuple[int, int, int] | None:
    """``--gc-threshold``: ``N0,N1,N2`` for gc.set_threshold, or ``python``
    (None: leave CPython's own)."""
    if text == "python":
        return None
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or any(value < 0 for value in values):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected three counts N0,N1,N2 (e.g. 50000,20,100) or 'python'"
        )
    return values[0], values[1], values[2]


def positive_count(text: str) -> int:
    """``--max-running``: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number of at least 1")
    return value


# -- serve and demo -------------------------------------------------------------------------
def load_app(spec: str) -> App:
    """The ``App`` that ``module:attribute`` names (the current folder is importable).

    Raises:
        CliError: the module or attribute is missing, or it is not an ``actors.App``.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise CliError(f"--app {spec!r}: expected module:attribute, e.g. myapp.tasks:app")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CliError(f"--app {spec!r}: cannot import {module_name}: {exc}") from None
    value: Any = module
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise CliError(f"--app {spec!r}: {module_name} has no attribute {attribute}") from None
    if not isinstance(value, App):
        raise CliError(f"--app {spec!r} is a {type(value).__name__}, not an actors.App")
    return value


async def _cmd_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="taskactors: %(levelname)s %(name)s: %(message)s",
    )
    app = load_app(args.app)
    tokens = load_tokens(args.tokens)
    if args.gc_threshold is not None:
        gc.set_threshold(*args.gc_threshold)  # the server owns its process
    say = partial(print, flush=True)
    async with open_runtime(
        app, args.store, node_id=args.node_id, max_running=args.max_running
    ) as rt:
        resumed = await rt.list(states=["pending", "running"])
        async with trio.open_nursery() as nursery:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                serve = partial(serve_websocket, rt, host=args.host, port=args.port, tokens=tokens)
                try:
                    port = await nursery.start(serve)
                except* OSError as group:
                    # (serve_websocket's nursery may wrap the OSError in a group.)
                    exc = group.exceptions[0]
                    text = getattr(exc, "strerror", None) or str(exc)
                    raise CliError(f"cannot listen on {args.host}:{args.port}: {text}") from None
                say(f"taskactors: app {args.app} ({', '.join(app.names)}) on {args.store}")
                if resumed:
                    say(f"taskactors: resumed {len(resumed)} unfinished task(s)")
                say(f"taskactors: {describe_auth(tokens)}")
                say(f"taskactors: listening on ws://{args.host}:{port} (Ctrl-C to stop)")
                async for signum in signals:
                    say(f"taskactors: {signal.Signals(signum).name}: shutting down")
                    break
            nursery.cancel_scope.cancel()
        left = await rt.list(states=["pending", "running", "paused", "input_required", "stopped"])
    say(f"taskactors: stopped; {len(left)} unfinished task(s) resume at the next start")
    return 0


async def _cmd_demo(args: argparse.Namespace) -> int:
    from ._tour import run_demo

    if args.speed <= 0:
        raise CliError("--speed must be > 0")
    live = False if args.plain else None
    return await run_demo(args.store, port=args.port, speed=args.speed, out=sys.stdout, live=live)


# -- the parser --------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, exit status 4 like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


_EPILOG = """\
exit status: 0 on success; watch and submit --watch exit with the task's
final state: 0 completed, 1 failed, 2 cancelled, 3 any other; 4 on any error
(bad usage, no server, unknown task, refused transition, bad JSON...).

environment: TASKACTORS_URL (--url), TASKACTORS_TOKEN (--token),
TASKACTORS_TOKENS (serve: the tokens JSON when --tokens is not given).
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``taskactors`` argument parser (every command with its help)."""
    parser = _Parser(
        prog="taskactors",
        description="A durable actor runtime for long-running tasks: run a server, "
        "submit and watch tasks, signal them.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    client = _Parser(add_help=False)
    group = client.add_argument_group("server connection")
    group.add_argument(
        "--url",
        default=os.environ.get("TASKACTORS_URL") or DEFAULT_URL,
        help=f"the server's websocket URL (default: $TASKACTORS_URL or {DEFAULT_URL})",
    )
    group.add_argument(
        "--token",
        default=os.environ.get("TASKACTORS_TOKEN") or None,
        help="bearer token (default: $TASKACTORS_TOKEN; none for a single-user server)",
    )
    client.add_argument("--json", action="store_true", help="print JSON instead of text")
    live = _Parser(add_help=False)
    live.add_argument(
        "--plain",
        action="store_true",
        help="plain lines, no live progress bar (even on a terminal)",
    )

    def command(
        name: str, run: Callable[[argparse.Namespace], Awaitable[int]], text: str, **options: Any
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text, **options)
        sub.set_defaults(run=run)
        return sub

    serve = command(
        "serve",
        _cmd_serve,
        "run a runtime and its websocket server until SIGINT or SIGTERM; unfinished "
        "tasks stay in the store and resume at the next start",
    )
    serve.add_argument(
        "--store",
        default=DEFAULT_STORE,
        metavar="URL",
        help=f"store URL: sqlite:///PATH or memory:// (default: {DEFAULT_STORE})",
    )
    serve.add_argument("--host", default="127.0.0.1", help="interface (default: 127.0.0.1)")
    serve.add_argument(
        "--port", type=int, default=8765, help="TCP port, 0 for any free one (default: 8765)"
    )
    serve.add_argument(
        "--app",
        default=DEFAULT_APP,
        metavar="MODULE:ATTR",
        help=f"the actors.App to serve (default: the demo app, {DEFAULT_APP})",
    )
    serve.add_argument(
        "--tokens",
        metavar="FILE",
        help='JSON file {"token": "user_id"} (default: $TASKACTORS_TOKENS; '
        "neither: a single local user, no token needed)",
    )
    serve.add_argument(
        "--node-id",
        metavar="ID",
        help="this node's name in the store (default: <host name>-<pid>; a stable one lets a"
        " restarted process take its tasks back at once)",
    )
    serve.add_argument(
        "--gc-threshold",
        type=gc_threshold,
        default=SERVE_GC_THRESHOLD,
        metavar="N0,N1,N2",
        help="the garbage collector's thresholds for this process, or 'python' for "
        f"CPython's own (default: {','.join(map(str, SERVE_GC_THRESHOLD))}: many tasks "
        "at once are many live objects)",
    )
    serve.add_argument(
        "--max-running",
        type=positive_count,
        metavar="N",
        help="at most N handlers at once; tasks submitted beyond wait pending, with no "
        "actor (default: no bound)",
    )
    serve.add_argument("-v", "--verbose", action="store_true", help="log connections and more")

    submit = command("submit", cmd_submit, "submit a task and print its id", parents=[client, live])
    submit.add_argument("name", help="the handler name")
    submit.add_argument(
        "--input", metavar="JSON", help="the task input: JSON, @FILE or - for stdin (default: null)"
    )
    submit.add_argument("--thread", metavar="T", help="thread id (groups tasks for usage)")
    submit.add_argument("--task-id", metavar="ID", help="your own id (submit is then idempotent)")
    submit.add_argument("--metadata", metavar="JSON", help="a JSON object kept with the task")
    submit.add_argument(
        "--strategy",
        choices=["enqueue", "reject", "interrupt", "rollback"],
        help="what a request does to the task while it runs (default: the handler's)",
    )
    submit.add_argument("--watch", action="store_true", help="then watch it (see watch)")

    watch = command(
        "watch",
        cmd_watch,
        "show a task's events and a live progress bar until it finishes; the exit status "
        "is its final state (0 completed, 1 failed, 2 cancelled, 3 other)",
        parents=[client, live],
    )
    watch.add_argument("task_id", metavar="ID", help="the task id")
    watch.add_argument(
        "--after", type=int, default=0, metavar="N", help="start after event N (default: 0)"
    )
    watch.add_argument(
        "--until",
        action="append",
        choices=STATES,
        metavar="STATE",
        help="stop (exit 0) once the task is in this state, e.g. input_required (repeatable)",
    )

    ls = command("ls", cmd_ls, "list your tasks, oldest first", parents=[client])
    ls.add_argument("--thread", metavar="T", help="only the tasks of this thread")
    ls.add_argument(
        "--state",
        action="append",
        choices=STATES,
        metavar="STATE",
        help=f"only tasks in this state (repeatable): {', '.join(STATES)}",
    )
    ls.add_argument("--limit", type=int, metavar="N", help="at most N tasks")

    get = command("get", cmd_get, "show a task's info", parents=[client])
    get.add_argument("task_id", metavar="ID", help="the task id")

    history = command("history", cmd_history, "print a task's events", parents=[client])
    history.add_argument("task_id", metavar="ID", help="the task id")
    history.add_argument(
        "--after", type=int, default=0, metavar="N", help="only events after N (default: 0)"
    )
    history.add_argument("--limit", type=int, metavar="N", help="at most N events")

    send = command(
        "send",
        cmd_send,
        "send a request (new input) to a task: answers its question, or runs it again",
        parents=[client],
    )
    send.add_argument("task_id", metavar="ID", help="the task id")
    send.add_argument(
        "--input", required=True, metavar="JSON", help="the input: JSON, @FILE or - for stdin"
    )

    cancel = command(
        "cancel", cmd_cancel, "cancel a task and its children (final)", parents=[client]
    )
    cancel.add_argument("task_id", metavar="ID", help="the task id")
    cancel.add_argument("--reason", help="why (kept in its history)")

    for name, text in (
        ("stop", "abort a task's current request; it stays open for the next one (send)"),
        ("pause", "pause a task at its next safe point"),
        ("resume", "resume a paused task where it paused"),
    ):
        sub = command(name, cmd_signal, text, parents=[client])
        sub.add_argument("task_id", metavar="ID", help="the task id")

    usage = command(
        "usage", cmd_usage, "token usage, per thread, model and caller", parents=[client]
    )
    usage.add_argument("--thread", metavar="T", help="one thread (default: every thread of yours)")
    usage.add_argument("--include-active", action="store_true", help="count unfinished tasks too")

    demo = command(
        "demo",
        _cmd_demo,
        "run the demo: a server in-process on an embedded SQLite file, six tasks driven "
        "through the websocket API (paused, stopped, cancelled, answered, failed), a summary",
        parents=[live],
    )
    demo.add_argument(
        "--store",
        default=DEFAULT_DEMO_STORE,
        metavar="URL",
        help=f"store URL (default: {DEFAULT_DEMO_STORE} in the current folder)",
    )
    demo.add_argument(
        "--port", type=int, help="server port (default: 8765 if free, else any free port)"
    )
    demo.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="speed-up factor of the simulated work (default: 1)",
    )
    return parser


# -- the entry point ------------------------------------------------------------------------
#: Exceptions that are the user's or the environment's, not a bug: one line, no traceback.
_USER_ERRORS = (CliError, ClientError, ActorsError, storage.StorageError, OSError)


def _user_error(exc: BaseException) -> BaseException | None:
    """The user error ``exc`` is (or wraps, alone or beside Cancelled), else None."""
    if isinstance(exc, _USER_ERRORS):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        found = [e for e in exc.exceptions if not isinstance(e, trio.Cancelled)]
        if len(found) == 1:
            return _user_error(found[0])
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``taskactors`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        status: int = trio.run(args.run, args)
    except KeyboardInterrupt:
        print("taskactors: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (Exception, BaseExceptionGroup) as exc:
        error = _user_error(exc)
        if error is None:
            raise
        if isinstance(error, BrokenPipeError):
            # The reader of our output went away (`taskactors history ID | head`):
            # stop quietly, and keep Python from complaining when it flushes stdout.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_ERROR
        text = " ".join(str(error).split()) or type(error).__name__
        print(f"taskactors: error: {text}", file=sys.stderr)
        return EXIT_ERROR
    return status


if __name__ == "__main__":
    sys.exit(main())
