"""The ``taskactors`` command line: issue 4, items 1, 7, 8 and 9.

In-process tests call ``main(argv)`` (the client commands run ``trio.run``
in a worker thread while the test serves a runtime in-process); the end to
end tests run the real ``taskactors serve`` and the commands as
subprocesses. Nothing waits on time: a test waits for a line of output, a
process exit (with a timeout) or a task state.
"""

from __future__ import annotations

import functools
import io
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

import actors
from actors.cli._commands import EXIT_ERROR, exit_code, parse_json
from actors.cli._display import Display, bar
from actors.cli._main import build_parser, main

REPO = Path(__file__).parents[2]
COMMANDS = [
    "serve",
    "submit",
    "watch",
    "ls",
    "get",
    "history",
    "send",
    "cancel",
    "stop",
    "pause",
    "resume",
    "usage",
    "demo",
]
CLIENT_CALLS = [
    ["submit", "echo"],
    ["watch", "x"],
    ["ls"],
    ["get", "x"],
    ["history", "x"],
    ["send", "x", "--input", "1"],
    ["cancel", "x"],
    ["stop", "x"],
    ["pause", "x"],
    ["resume", "x"],
    ["usage"],
]


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one line a failed command wrote on stderr."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


# -- the parser --------------------------------------------------------------------------
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: taskactors {command}")
    if command not in ("serve", "demo"):
        assert "--url URL" in out and "--token TOKEN" in out and "--json" in out


def test_the_top_level_help_lists_every_command_and_the_exit_statuses(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert re.search(rf"^    {command} ", out, re.MULTILINE), command
    assert "0 completed, 1 failed, 2 cancelled, 3 any other; 4 on any error" in out


def test_starting_imports_no_test_tooling() -> None:
    # trio.testing imports pytest: a tenth of a second at every command.
    code = (
        "import sys, actors, actors.cli._main;"
        " print(sorted({'pytest', 'trio.testing'} & set(sys.modules)))"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert found.stdout.strip() == "[]"


def test_the_defaults_follow_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    args = build_parser().parse_args(["ls"])
    assert (args.url, args.token) == ("ws://127.0.0.1:8765", None)
    monkeypatch.setenv("TASKACTORS_URL", "ws://example:1")
    monkeypatch.setenv("TASKACTORS_TOKEN", "t0k")
    args = build_parser().parse_args(["ls"])
    assert (args.url, args.token) == ("ws://example:1", "t0k")
    serve = build_parser().parse_args(["serve"])
    assert (serve.store, serve.host, serve.port) == ("sqlite:///taskactors.db", "127.0.0.1", 8765)
    assert serve.app == "actors.cli:demo_app" and serve.tokens is None
    assert build_parser().parse_args(["demo"]).store == "sqlite:///taskactors-demo.db"
    assert serve.gc_threshold == (50_000, 20, 100)
    assert build_parser().parse_args(["serve", "--gc-threshold", "python"]).gc_threshold is None
    custom = build_parser().parse_args(["serve", "--gc-threshold", "1000,10,10"])
    assert custom.gc_threshold == (1000, 10, 10)
    assert serve.max_running is None
    assert build_parser().parse_args(["serve", "--max-running", "500"]).max_running == 500


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["nope"],
        ["submit"],
        ["send", "x"],
        ["ls", "--state", "bogus"],
        ["watch"],
        ["serve", "--gc-threshold", "1,2"],
        ["serve", "--gc-threshold", "a,b,c"],
        ["serve", "--gc-threshold", "-1,10,10"],
        ["serve", "--max-running", "0"],
        ["serve", "--max-running", "many"],
    ],
)
def test_usage_errors_are_one_line_with_status_4(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == EXIT_ERROR
    assert "error:" in error_line(capsys)


@pytest.mark.parametrize("argv", CLIENT_CALLS, ids=lambda argv: argv[0])
def test_an_unreachable_server_is_one_line_and_status_4(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"ws://127.0.0.1:{free_port()}"
    assert main([*argv, "--url", url]) == EXIT_ERROR
    assert error_line(capsys) == f"taskactors: error: cannot connect to {url}: connection refused"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["submit", "x", "--input", "{bad"], "--input is not valid JSON"),
        (["send", "x", "--input", "@/nonexistent/input.json"], "cannot read"),
        (["submit", "x", "--metadata", "[1]"], "--metadata must be a JSON object"),
        (["ls", "--url", "http://127.0.0.1:1"], "bad server URL"),
        (["serve", "--app", "no_such_module:app"], "cannot import no_such_module"),
        (["serve", "--app", "actors:App"], "not an actors.App"),
        (["serve", "--app", "actors"], "expected module:attribute"),
        (["demo", "--speed", "0"], "--speed must be > 0"),
    ],
)
def test_bad_input_is_one_line_and_status_4(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"ws://127.0.0.1:{free_port()}"  # never reached: the input is checked first
    full = [*argv, "--url", url] if argv[0] in ("submit", "send") else argv
    assert main(full) == EXIT_ERROR
    assert message in error_line(capsys)


def test_a_bad_tokens_file_is_one_line_and_status_4(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens = tmp_path / "tokens.json"
    tokens.write_text('["not", "an", "object"]')
    argv = ["serve", "--store", "memory://", "--port", "0", "--tokens", str(tokens)]
    assert main(argv) == EXIT_ERROR
    assert "expected a JSON object" in error_line(capsys)


def test_a_port_in_use_is_one_line_and_status_4(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--store", "memory://", "--port", str(port)]) == EXIT_ERROR
    assert f"cannot listen on 127.0.0.1:{port}" in error_line(capsys)


def test_watch_exit_statuses_follow_the_final_state() -> None:
    assert [exit_code(s) for s in ("completed", "failed", "cancelled")] == [0, 1, 2]
    assert exit_code("rejected") == exit_code("paused") == exit_code(None) == 3


def test_json_input_comes_from_text_a_file_or_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert parse_json('{"a": [1, null]}') == {"a": [1, None]}
    path = tmp_path / "input.json"
    path.write_text('"from a file"')
    assert parse_json(f"@{path}") == "from a file"
    monkeypatch.setattr(sys, "stdin", __import__("io").StringIO("[1, 2]"))
    assert parse_json("-") == [1, 2]


def test_a_live_display_redraws_its_rows_below_the_scrolling_lines() -> None:
    out = io.StringIO()
    display = Display(out, live=True, colour=False)
    display.row("a", "task a [#-] 1/2")
    display.line("event 1")
    display.row("a", "task a [##] 2/2")
    display.close()
    display.line("after")
    up = "\x1b[1F\x1b[J"  # cursor up one line, erase to the end of the screen
    assert out.getvalue() == (
        "task a [#-] 1/2\n" + up + "event 1\ntask a [#-] 1/2\n" + up + "task a [##] 2/2\nafter\n"
    )


def test_a_plain_display_writes_lines_only() -> None:
    out = io.StringIO()
    display = Display(out)
    display.row("a", "a row")
    display.line("event 1")
    display.close()
    assert out.getvalue() == "event 1\n"


def test_progress_bars() -> None:
    assert bar(3, 8, 8) == "[###-----] 3/8"
    assert bar(2.5, 10, 4) == "[#---] 2.5/10"
    assert bar(7, None) == "7 done"
    assert bar(12, 10, 4) == "[####] 12/10"


# -- client commands against a server in-process --------------------------------------------
def make_app(gate: trio.Event) -> actors.App:
    app = actors.App()

    @app.task("echo")
    async def echo(ctx: actors.TaskContext, request: actors.Request) -> Any:
        ctx.usage(model="m1", input_tokens=3, output_tokens=4, caller="c1")
        return request.input

    @app.task("boom")
    async def boom(ctx: actors.TaskContext, request: actors.Request) -> None:
        raise ValueError("boom on purpose")

    @app.task("ask")
    async def ask(ctx: actors.TaskContext, request: actors.Request) -> Any:
        return await ctx.ask({"question": "ok?"})

    @app.task("gated")
    async def gated(ctx: actors.TaskContext, request: actors.Request) -> str:
        ctx.progress(1, 2)
        await ctx.step("wait", gate.wait)
        ctx.progress(2, 2)
        return "through"

    return app


@asynccontextmanager
async def serving(tmp_path: Path) -> AsyncIterator[tuple[actors.Runtime, str, trio.Event]]:
    gate = trio.Event()
    store = f"sqlite:///{tmp_path}/cli.db"
    async with (
        actors.open_runtime(make_app(gate), store, node_id="node-cli") as rt,
        trio.open_nursery() as nursery,
    ):
        port = await nursery.start(functools.partial(actors.serve_websocket, rt, port=0))
        yield rt, f"ws://127.0.0.1:{port}", gate
        nursery.cancel_scope.cancel()


async def run_cli(*argv: str) -> int:
    """``main(argv)`` in a worker thread (it runs trio.run of its own)."""
    status: int = await trio.to_thread.run_sync(main, list(argv))
    return status


async def test_watch_exits_0_for_a_completed_task_and_prints_its_events(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with serving(tmp_path) as (rt, url, _):
        info = await rt.submit("echo", {"x": 1})
        await rt.wait(info.id)
        assert await run_cli("watch", info.id, "--url", url) == 0
    out = capsys.readouterr().out.splitlines()
    assert re.search(r"#1\s+state\s+pending$", out[0])
    assert re.search(r"state\s+running -> completed$", out[-2])
    assert out[-1] == f"task {info.id} completed"


async def test_watch_exits_1_for_a_failed_task_with_its_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with serving(tmp_path) as (_, url, _):
        assert await run_cli("submit", "boom", "--watch", "--url", url) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[-1].endswith("failed: ValueError: boom on purpose")


async def test_watch_exits_2_for_a_cancelled_task(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with serving(tmp_path) as (rt, url, _):
        info = await rt.submit("ask")
        await rt.wait(info.id, states=["input_required"])

        async def cancel() -> None:
            assert await run_cli("cancel", info.id, "--reason", "enough", "--url", url) == 0

        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel)
            assert await run_cli("watch", info.id, "--url", url) == 2
    out = capsys.readouterr().out
    assert "input_required -> cancelled  (enough)" in out
    assert f"task {info.id} cancelled" in out


async def test_watch_until_a_state_exits_0_once_the_task_enters_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with serving(tmp_path) as (rt, url, gate):
        info = await rt.submit("gated")
        await rt.wait(info.id, states=["running"])
        assert await run_cli("pause", info.id, "--url", url) == 0
        gate.set()
        assert await run_cli("watch", info.id, "--until", "paused", "--url", url) == 0
        assert (await rt.get(info.id)).state is actors.TaskState.PAUSED
        assert await run_cli("watch", info.id, "--until", "paused", "--url", url) == 0
        assert await run_cli("resume", info.id, "--url", url) == 0
        assert await run_cli("watch", info.id, "--url", url, "--until", "input_required") == 0
    out = capsys.readouterr().out
    assert f"pause: task {info.id} is running; it pauses at its next safe point" in out
    assert f"task {info.id} paused" in out
    assert f"resume: task {info.id} is running" in out
    assert out.splitlines()[-1] == f"task {info.id} completed"


async def test_json_output_is_machine_readable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with serving(tmp_path) as (_, url, _):
        argv = ["submit", "echo", "--input", "[1]", "--thread", "t", "--json", "--watch"]
        assert await run_cli(*argv, "--url", url) == 0
        events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        task_id = events[0]["task_id"]
        assert await run_cli("ls", "--json", "--url", url) == 0
        assert [t["id"] for t in json.loads(capsys.readouterr().out)] == [task_id]
        assert await run_cli("get", task_id, "--json", "--url", url) == 0
        assert json.loads(capsys.readouterr().out)["state"] == "completed"
        assert await run_cli("history", task_id, "--after", "2", "--json", "--url", url) == 0
        assert json.loads(capsys.readouterr().out)[0]["seq"] == 3
        assert await run_cli("usage", "--thread", "t", "--json", "--url", url) == 0
        assert json.loads(capsys.readouterr().out)["by_model"] == {"m1": {"tokens": 7, "runs": 1}}


async def test_tables_for_people(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with serving(tmp_path) as (rt, url, _):
        info = await rt.submit("echo", 1, thread_id="t1")
        await rt.wait(info.id)
        assert await run_cli("ls", "--url", url) == 0
        header, row = capsys.readouterr().out.splitlines()
        assert header.split() == ["ID", "NAME", "STATE", "PROGRESS", "THREAD", "UPDATED"]
        assert row.split()[:5] == [info.id, "echo", "completed", "-", "t1"]
        assert await run_cli("ls", "--state", "running", "--url", url) == 0
        assert capsys.readouterr().out == "no tasks\n"
        assert await run_cli("get", info.id, "--url", url) == 0
        assert "state     completed" in capsys.readouterr().out
        assert await run_cli("usage", "--url", url) == 0
        out = capsys.readouterr().out
        assert re.search(r"^t1\s+7\s+3\s+4\s+1$", out, re.MULTILINE)
        assert re.search(r"^m1\s+7\s+1$", out, re.MULTILINE)


async def test_runtime_refusals_are_one_line_and_status_4(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with serving(tmp_path) as (rt, url, _):
        info = await rt.submit("echo", 1)
        await rt.wait(info.id)
        capsys.readouterr()
        assert await run_cli("resume", info.id, "--url", url) == EXIT_ERROR
        assert "cannot resume" in error_line(capsys)
        assert await run_cli("cancel", info.id, "--url", url) == EXIT_ERROR
        assert "cannot cancel" in error_line(capsys)
        assert await run_cli("get", "nope", "--url", url) == EXIT_ERROR
        assert error_line(capsys) == "taskactors: error: task 'nope' not found"
        assert await run_cli("submit", "no-such-task", "--url", url) == EXIT_ERROR
        assert "no task handler named 'no-such-task'" in error_line(capsys)


# -- end to end: the real `taskactors serve` and the commands as subprocesses ----------------------
def taskactors_command() -> list[str]:
    script = Path(sys.executable).with_name("taskactors")
    return [str(script)] if script.exists() else [sys.executable, "-m", "actors.cli._main"]


class Server:
    """A ``taskactors serve`` subprocess whose output lines are read by a thread."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [*taskactors_command(), "serve", *argv],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """The first (new) output line matching ``pattern``."""
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r}; got {self.seen}") from None
            if line is None:
                raise AssertionError(f"the server exited; its output: {self.seen}")
            self.seen.append(line)
            if match := re.search(pattern, line):
                return match

    def interrupt(self, timeout: float = 30.0) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self._reader.join(timeout=30)
        assert self.process.stdout is not None
        self.process.stdout.close()


@contextmanager
def serve(argv: list[str], cwd: Path, env: dict[str, str]) -> Iterator[tuple[Server, str]]:
    server = Server(argv, cwd, env)
    try:
        url = server.wait_for(r"listening on (ws://\S+)").group(1)
        yield server, url
    finally:
        server.kill()


class Cli:
    """Runs ``taskactors COMMAND ...`` as a subprocess against one server."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd = cwd
        self.env = env

    def run(self, *argv: str, status: int = 0) -> str:
        done = subprocess.run(
            [*taskactors_command(), *argv],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == status, (argv, done.stdout, done.stderr)
        if status == EXIT_ERROR:
            assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
            return done.stderr
        return done.stdout

    def json(self, *argv: str) -> Any:
        return json.loads(self.run(*argv, "--json"))


@pytest.fixture
def environment(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKACTORS_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def test_serve_and_every_client_command_end_to_end(
    tmp_path: Path, environment: dict[str, str]
) -> None:
    """Issue 4, item 9: the real server, driven by the real commands."""
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"alice-token": "alice", "bob-token": "bob"}))
    store = f"sqlite:///{tmp_path}/tasks.db"
    argv = ["--store", store, "--port", "0", "--tokens", str(tokens), "--node-id", "e2e"]
    with serve(argv, tmp_path, environment) as (server, url):
        assert "2 token(s) for 2 user(s)" in " ".join(server.seen)
        cli = Cli(
            tmp_path, {**environment, "TASKACTORS_URL": url, "TASKACTORS_TOKEN": "alice-token"}
        )

        # submit --watch: the events, then the final state (exit 0).
        quick = '{"documents": 3, "delay": 0.01}'
        out = cli.run("submit", "ingest", "--input", quick, "--thread", "t1", "--watch")
        first = re.search(r"submitted ingest task (\w+)", out)
        assert first is not None
        done_id = first.group(1)
        assert "[##########] 3/3" in out and out.endswith(f"task {done_id} completed\n")
        assert done_id in cli.run("ls")
        assert [t["id"] for t in cli.json("ls", "--state", "completed")] == [done_id]
        assert cli.json("get", done_id)["state"] == "completed"
        assert "step_completed   fetch-2" in cli.run("history", done_id)
        assert cli.json("history", done_id, "--after", "2")[0]["seq"] == 3

        # A task that asks: wait until it does, answer, watch it finish.
        asking = cli.json("submit", "research", "--input", '{"delay": 0.01}', "--thread", "t1")
        cli.run("watch", asking["id"], "--until", "input_required")
        cli.run("send", asking["id"], "--input", '{"approve": true}')
        assert cli.run("watch", asking["id"]).endswith("completed\n")

        # Pause, resume, stop and re-send one long task.
        long_input = '{"documents": 500, "delay": 0.02}'
        long = cli.json("submit", "ingest", "--input", long_input)["id"]
        cli.run("pause", long)
        cli.run("watch", long, "--until", "paused")
        assert cli.json("get", long)["state"] == "paused"
        assert "is running" in cli.run("resume", long)
        assert "is stopped" in cli.run("stop", long)
        cli.run("send", long, "--input", '{"documents": 2, "delay": 0.01}')
        assert cli.run("watch", long).endswith(f"task {long} completed\n")
        kinds = [(e["kind"], e["data"].get("to")) for e in cli.json("history", long)]
        for change in ("paused", "running", "stopped"):
            assert ("state", change) in kinds

        # Cancel (watch exits 2) and a failure (watch exits 1).
        doomed = cli.json("submit", "ingest", "--input", long_input)["id"]
        assert "cancelled" in cli.run("cancel", doomed, "--reason", "not needed")
        assert "not needed" in cli.run("watch", doomed, status=2)
        assert "failed: ConnectionError" in cli.run(
            "submit", "sync", "--input", '{"delay": 0.01}', "--watch", status=1
        )

        # Usage of a thread: the two finished ingest and research tasks of t1.
        usage = cli.json("usage", "--thread", "t1")
        assert usage["by_model"]["embed-small"]["tokens"] == 750
        assert usage["total_runs"] == 2
        assert "planner-large" in cli.run("usage")

        # Errors: one line, exit 4.
        assert "not found" in cli.run("get", "nope", status=EXIT_ERROR)
        assert "cannot resume" in cli.run("resume", done_id, status=EXIT_ERROR)
        assert "not found" in cli.run("get", done_id, "--token", "bob-token", status=EXIT_ERROR)
        assert "invalid bearer token" in cli.run("ls", "--token", "nope", status=EXIT_ERROR)

        # A task running when the server stops: SIGINT, exit 0, the task resumable.
        resumable = cli.json("submit", "ingest", "--input", '{"documents": 40, "delay": 0.05}')
        cli.run("watch", resumable["id"], "--until", "running")
        assert server.interrupt() == 0
        server.wait_for("SIGINT: shutting down")
        server.wait_for(r"stopped; [1-9]\d* unfinished task\(s\) resume at the next start")

    with serve(argv, tmp_path, environment) as (server, url):
        assert any(re.search(r"resumed [1-9]\d* unfinished task", line) for line in server.seen)
        cli.env["TASKACTORS_URL"] = url
        assert cli.run("watch", resumable["id"]).endswith("completed\n")
        history = cli.json("history", resumable["id"])
        assert "recovered" in [e["kind"] for e in history]
        finished = [e["data"]["name"] for e in history if e["kind"] == "step_completed"]
        assert sorted(finished) == sorted(set(finished)) and len(finished) == 40
        assert server.interrupt() == 0


def leave_unfinished_tasks(store: str) -> None:
    """Leave a running demo task and a task of another app in ``store``, as an
    interrupted earlier run would."""
    from actors.cli._demo import demo_app

    other = actors.App()

    @other.task("retired")
    async def retired(ctx: actors.TaskContext, request: actors.Request) -> None:
        await ctx.step("forever", trio.sleep_forever)

    async def seed() -> None:
        for app, name, value in [
            (demo_app, "ingest", {"documents": 100, "delay": 30}),
            (other, "retired", None),
        ]:
            async with actors.open_runtime(app, store) as rt:
                info = await rt.submit(name, value)
                await rt.wait(info.id, states=["running"])

    trio.run(seed)


def test_demo_runs_twice_in_the_same_folder(tmp_path: Path, environment: dict[str, str]) -> None:
    """Issue 4, item 8: `taskactors demo`, twice on the same file, after an
    interrupted run left unfinished tasks in it."""
    leave_unfinished_tasks(f"sqlite:///{tmp_path}/taskactors-demo.db")
    for run in range(2):
        done = subprocess.run(
            [*taskactors_command(), "demo", "--speed", "4"],
            cwd=tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert (tmp_path / "taskactors-demo.db").exists()
        check_demo_output(done.stdout)
        if run == 0:
            assert "cancelled 1 task(s) an earlier run left unfinished" in done.stdout
        else:
            assert not re.search(r"^cancelled \d+ task", done.stdout, re.MULTILINE)
        assert "left 1 unfinished task(s) of other handlers as they are" in done.stdout


def check_demo_output(out: str) -> None:
    summary = out[out.index("\nsummary\n") :]
    for scenario, state in [
        ("runs to the end", "completed"),
        ("paused, resumed", "completed"),
        ("stopped, re-sent", "completed"),
        ("cancelled", "cancelled"),
        ("asks for input", "completed"),
        ("fails", "failed"),
    ]:
        assert re.search(rf"{scenario}\s+{state}\s+\d+\s+[\d.]+ s", summary), (scenario, summary)
    assert "failed: ConnectionError" in summary
    assert re.search(r"^thread demo-\w+: \d+ tokens in 4 task\(s\)", summary, re.MULTILINE)
    assert re.search(r"^done in [\d.]+ s$", out, re.MULTILINE)
    for act in (">> pause", ">> resume", ">> stop", ">> re-send", ">> cancel", ">> answer"):
        assert act in out
