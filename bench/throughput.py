"""Scenario a: durable throughput of 3-step tasks on SQLite, and its baselines.

Ours: N tasks submitted concurrently (one trio task per submit) to a runtime
on a fresh SQLite file (WAL, synchronous=FULL), in a child process of its
own; each runs 3 durable steps of an async function and returns. A task
counts when its ``completed`` state event is committed (a commit listener on
the store: no extra reads). The figures: tasks/s, committed events/s,
commits (storage batches) per task, store writes per task, submits/s.

One more figure, ``tasks_per_s.awaited``: the same tasks, each submitter
awaiting its task's result with ``rt.result`` (what an application does)
instead of the run counting commits.

In a full run ours and the naive baseline run five times each, by turns,
and each figure is the median of its runs (all of them are printed too):
a run lasts a second or two, and the machine drifts.

The runtime is opened with ``max_running=500``: at most 500 handlers run at
once, and a task submitted beyond that waits as a record in a queue, with no
actor (see ``actors/_slots.py``). That is the figure the targets are
checked on, with CPython's default garbage collector settings. In the same
run, two more: with no bound (every submitted task gets its actor at once:
10,000 actors, trio tasks and coroutine stacks alive together, which the
collector rescans each time the heap grows by a quarter), and bounded with
``gc.set_threshold(50_000, 20, 100)``, to show what the collector still costs.

Baselines, in the same run:
 (i)  naive: plain ``sqlite3``, the same schema, the same writes the runtime
      makes for a task, each its own transaction (one fsync), one task
      after another: the task and its pending event; running; then per
      step its step_started event, and its result with its step_completed
      event; then the completed state with the result (9 transactions);
 (ii) the raw SQLite ceiling: the rows our run inserted (tasks, events,
      journal entries, results: counted in its file) inserted again with
      ``executemany`` in transactions of 1,000 rows, as tasks/s;
 (iii) DBOS on its SQLite system database (WAL set on the file, FULL sync),
      the same 3-step workflow (and, in a full run, DBOS's default rollback
      journal too);
 (iv) a2a-sdk's request handler with its SQLite task store (and in memory).
The peers run in child processes (asyncio stays out of the trio processes).
"""

from __future__ import annotations

import gc
import json
import resource
import sqlite3
import time
import uuid
from typing import Any

import trio

import actors
from storage.sqlite._schema import MIGRATIONS

from ._common import (
    SQLITE_BATCHED,
    TRIO_SPAWN,
    Bench,
    ChildError,
    child_args,
    log,
    report,
    run_child,
    wait_with_progress,
)

app = actors.App()


async def _add_one(value: int) -> int:
    return value + 1


@app.task("three_steps")
async def three_steps(ctx: actors.TaskContext, request: actors.Request) -> int:
    value = await ctx.step("one", _add_one, request.input)
    value = await ctx.step("two", _add_one, value)
    return int(await ctx.step("three", _add_one, value))


#: The collector thresholds of the "tuned" run (CPython's default: 700, 10, 10).
TUNED_GC = (50_000, 20, 100)


#: max_running of the headline run: tasks beyond it wait as records, not actors.
MAX_RUNNING = 500


async def _ours(n: int, path: str, max_running: int | None = MAX_RUNNING) -> dict[str, Any]:
    async with actors.open_runtime(
        app, store=f"sqlite:///{path}", node_id="bench", max_running=max_running
    ) as rt:
        await rt.result((await rt.submit("three_steps", 0)).id)  # warm up
        completed = 0
        committed = 0
        all_done = trio.Event()

        def on_commit(events: Any) -> None:
            nonlocal completed, committed
            committed += len(events)
            for event in events:
                if event.kind == "state" and '"to":"completed"' in event.data:
                    completed += 1
            if completed >= n:
                all_done.set()

        before = rt.store.statistics()
        remove = rt.store.add_commit_listener(on_commit)
        started = time.perf_counter()
        submitted_at = 0.0
        try:

            async def submit(i: int) -> None:
                await rt.submit("three_steps", i)

            async with trio.open_nursery() as nursery:
                for i in range(n):
                    nursery.start_soon(submit, i)
            submitted_at = time.perf_counter()
            if not await wait_with_progress(all_done, lambda: committed):
                raise RuntimeError(f"the run stalled: {completed} of {n} tasks completed")
            elapsed = time.perf_counter() - started
        finally:
            remove()
        after = rt.store.statistics()
    batches = after["batches"] - before["batches"]
    writes = after["writes"] - before["writes"]
    connection = sqlite3.connect(path)
    rows = {
        table: connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] - 0
        for table in ("tasks", "events", "journal", "results")
    }
    connection.close()
    return {
        "n": n,
        "elapsed": elapsed,
        "tasks_per_s": n / elapsed,
        "events_per_s": committed / elapsed,
        "events": committed,
        "commits_per_task": batches / n,
        "writes_per_task": writes / n,
        "submits_per_s": n / (submitted_at - started),
        # Rows the run inserted, per task (the warm-up task included in the counts).
        "rows": {table: count / (n + 1) for table, count in rows.items()},
    }


async def _awaited(n: int, path: str, max_running: int | None = MAX_RUNNING) -> dict[str, Any]:
    """As ``_ours``, but each submitter awaits its task's result with
    ``rt.result`` (what an application does), instead of a commit listener."""
    async with actors.open_runtime(
        app, store=f"sqlite:///{path}", node_id="bench", max_running=max_running
    ) as rt:
        await rt.result((await rt.submit("three_steps", 0)).id)  # warm up
        started = time.perf_counter()

        async def submit_and_await(i: int) -> None:
            info = await rt.submit("three_steps", i)
            if await rt.result(info.id) != i + 3:
                raise RuntimeError(f"task {info.id}: wrong result")

        with trio.fail_after(900):
            async with trio.open_nursery() as nursery:
                for i in range(n):
                    nursery.start_soon(submit_and_await, i)
        elapsed = time.perf_counter() - started
    return {"n": n, "elapsed": elapsed, "tasks_per_s": n / elapsed}


def _schema(connection: sqlite3.Connection) -> None:
    for migration in MIGRATIONS:
        for statement in migration:
            connection.execute(statement)


def _connect(path: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = FULL")
    _schema(connection)
    return connection


_TASK_COLUMNS = (
    "id, name, state, input, created_at, updated_at, root_id, owner, lease_expires, epoch, last_seq"
)


def _naive_write(
    execute: Any,
    task_id: str,
    state: str | None,
    events: list[tuple[str, str]],
    journal: tuple[int, str, str] | None = None,
    result: str | None = None,
    release: bool = False,
) -> None:
    """One of the runtime's task writes, as its own transaction."""
    execute("BEGIN IMMEDIATE")
    row = execute(
        "SELECT state, epoch, lease_expires, last_seq FROM tasks WHERE id = ?", (task_id,)
    ).fetchone()
    last_seq = row[3]
    now = time.time()
    sets = "updated_at = ?, last_seq = ?"
    values: list[Any] = [now, last_seq + len(events)]
    if state is not None:
        sets += ", state = ?"
        values.append(state)
    if release:
        sets += ", owner = NULL, lease_expires = NULL"
    execute(f"UPDATE tasks SET {sets} WHERE id = ?", (*values, task_id))
    for number, (kind, data) in enumerate(events, start=1):
        execute(
            "INSERT INTO events (task_id, seq, kind, at, data) VALUES (?, ?, ?, ?, ?)",
            (task_id, last_seq + number, kind, now, data),
        )
    if journal is not None:
        execute(
            'INSERT OR REPLACE INTO journal (task_id, "index", kind, name, value, run, at)'
            " VALUES (?, ?, 'step', ?, ?, 1, ?)",
            (task_id, *journal, now),
        )
    if result is not None:
        execute("INSERT INTO results (task_id, value) VALUES (?, ?)", (task_id, result))
    execute("COMMIT")


def _naive(n: int, path: str) -> dict[str, Any]:
    """The runtime's writes for n tasks, one transaction per write, sequentially."""
    connection = _connect(path)
    execute = connection.execute
    started = time.perf_counter()
    transactions = 0
    for i in range(n):
        task_id = uuid.uuid4().hex
        now = time.time()
        execute("BEGIN IMMEDIATE")
        execute(
            f"INSERT INTO tasks ({_TASK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, 1)",
            (task_id, "three_steps", "pending", str(i), now, now, task_id, "bench", now + 30),
        )
        execute(
            "INSERT INTO events (task_id, seq, kind, at, data) VALUES (?, 1, 'state', ?, ?)",
            (task_id, now, '{"to":"pending","name":"three_steps"}'),
        )
        execute("COMMIT")
        _naive_write(execute, task_id, "running", [("state", '{"from":"pending","to":"running"}')])
        for index, name in enumerate(("one", "two", "three")):
            step = json.dumps({"name": name, "index": index})
            _naive_write(execute, task_id, None, [("step_started", step)])
            journal = (index, name, str(i + index + 1))
            _naive_write(execute, task_id, None, [("step_completed", step)], journal=journal)
        completed = [("state", '{"from":"running","to":"completed"}')]
        _naive_write(execute, task_id, "completed", completed, result=str(i + 3), release=True)
        transactions += 9
    elapsed = time.perf_counter() - started
    connection.close()
    return {
        "n": n,
        "elapsed": elapsed,
        "tasks_per_s": n / elapsed,
        "transactions_per_task": transactions / n,
    }


def _raw_ceiling(n: int, rows_per_task: dict[str, float], path: str) -> dict[str, Any]:
    """Insert the rows of n tasks with executemany, 1,000 rows per transaction."""
    connection = _connect(path)
    events = round(rows_per_task.get("events", 9))
    journal = round(rows_per_task.get("journal", 3))
    results = round(rows_per_task.get("results", 1))
    now = time.time()
    tasks_rows = []
    event_rows = []
    journal_rows = []
    result_rows = []
    for i in range(n):
        task_id = uuid.uuid4().hex
        tasks_rows.append(
            (task_id, "three_steps", "completed", str(i), now, now, task_id, None, None, 1, events)
        )
        event_rows.extend(
            (task_id, seq, "step_completed", now, '{"name":"one","index":0}')
            for seq in range(1, events + 1)
        )
        journal_rows.extend(
            (task_id, index, "step", "one", str(i), 1, now) for index in range(journal)
        )
        result_rows.extend((task_id, str(i)) for _ in range(results))
    statements = [
        (
            f"INSERT INTO tasks ({_TASK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            tasks_rows,
        ),
        ("INSERT INTO events (task_id, seq, kind, at, data) VALUES (?, ?, ?, ?, ?)", event_rows),
        (
            'INSERT INTO journal (task_id, "index", kind, name, value, run, at)'
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            journal_rows,
        ),
        ("INSERT INTO results (task_id, value) VALUES (?, ?)", result_rows),
    ]
    total = sum(len(rows) for _, rows in statements)
    started = time.perf_counter()
    for sql, rows in statements:
        for start in range(0, len(rows), 1000):
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(sql, rows[start : start + 1000])
            connection.execute("COMMIT")
    elapsed = time.perf_counter() - started
    connection.close()
    return {
        "n": n,
        "rows": total,
        "rows_per_s": total / elapsed,
        "tasks_per_s": n / elapsed,
        "rows_per_task": total / n,
    }


def _peer(b: Bench, key: str, module: str, args: dict[str, Any]) -> dict[str, Any] | None:
    """Run a peer child; print its figure, or why it could not run."""
    log(f"a: peer {key} ({args['n']} tasks)")
    try:
        result = run_child(module, args, timeout=900)
    except ChildError as exc:
        missing = "No module named" in str(exc)
        hint = " (pip install -e '.[bench]')" if missing else ""
        b.error("a", f"peer.{key}", f"{exc}{hint}")
        return None
    extra = {k: v for k, v in result.items() if k not in ("tasks_per_s", "elapsed")}
    b.emit("a", f"peer.{key}.tasks_per_s", result["tasks_per_s"], "tasks/s", **extra)
    return result


def _ours_child(
    b: Bench,
    n: int,
    gc_threshold: tuple[int, int, int] | None,
    max_running: int | None = MAX_RUNNING,
    *,
    awaited: bool = False,
) -> dict[str, Any]:
    label = "default GC" if gc_threshold is None else f"gc.set_threshold{gc_threshold}"
    how = ", each awaited with rt.result" if awaited else ""
    log(f"a: ours, {n} tasks{how}, {label}, max_running={max_running} (child process)")
    args = {
        "n": n,
        "path": str(b.path("a-ours.db")),
        "gc": gc_threshold,
        "max_running": max_running,
        "awaited": awaited,
    }
    return run_child("bench.throughput", args, timeout=900)


#: Runs of ours and of the naive baseline in a full run, by turns; the
#: figures are the runs' medians (a run is a second or two, and this kind of
#: machine drifts by a quarter from one minute to the next).
REPEATS = 5


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median rate (its other figures go with it), and the
    rates of all of them."""
    ordered = sorted(runs, key=lambda run: float(run["tasks_per_s"]))
    median = dict(ordered[len(ordered) // 2])
    median["runs"] = [round(run["tasks_per_s"], 1) for run in runs]
    return median


def run(b: Bench) -> None:
    n = b.size(10_000, 1_000)
    naive_n = b.size(500, 100)
    ours_runs: list[dict[str, Any]] = []
    naive_runs: list[dict[str, Any]] = []
    for _ in range(1 if b.quick else REPEATS):
        ours_runs.append(_ours_child(b, n, None))
        try:
            log(f"a: naive baseline, {naive_n} tasks")
            naive_runs.append(_naive(naive_n, str(b.path("a-naive.db"))))
        except Exception as exc:
            b.error("a", "naive_one_txn_per_write", repr(exc))
    ours = _median_run(ours_runs)

    def variant(name: str, **options: Any) -> dict[str, Any] | None:
        """One more run of ours, or None (and why) if it failed."""
        try:
            return _ours_child(b, n, **options)
        except ChildError as exc:
            b.error("a", f"tasks_per_s.{name}", str(exc))
            return None

    unbounded = variant("unbounded", gc_threshold=None, max_running=None)
    tuned = variant("tuned_gc", gc_threshold=TUNED_GC)
    awaited = variant("awaited", gc_threshold=None, awaited=True)
    naive = _median_run(naive_runs) if naive_runs else None
    raw: dict[str, Any] | None = None
    if naive is not None:
        b.emit(
            "a",
            "naive_one_txn_per_write.tasks_per_s",
            naive["tasks_per_s"],
            "tasks/s",
            n=naive_n,
            transactions_per_task=naive["transactions_per_task"],
            runs=naive["runs"],
        )
    try:
        log("a: raw SQLite ceiling")
        raw = _raw_ceiling(n, ours["rows"], str(b.path("a-raw.db")))
        b.emit(
            "a",
            "raw_sqlite_ceiling.tasks_per_s",
            raw["tasks_per_s"],
            "tasks/s",
            rows_per_s=raw["rows_per_s"],
            rows_per_task=raw["rows_per_task"],
            n=n,
        )
    except Exception as exc:
        b.error("a", "raw_sqlite_ceiling", repr(exc))
    peer_n = b.size(1_000, 100)
    dbos = _peer(
        b, "dbos_sqlite_wal", "bench.peer_dbos", {"n": peer_n, "path": str(b.path("a-dbos.db"))}
    )
    if not b.quick:
        _peer(
            b,
            "dbos_sqlite_rollback_journal",
            "bench.peer_dbos",
            {"n": b.size(500, 100), "path": str(b.path("a-dbos-j.db")), "journal": "delete"},
        )
    a2a = _peer(
        b,
        "a2a_sqlite",
        "bench.peer_a2a",
        {"n": b.size(1_000, 60), "path": str(b.path("a-a2a.db"))},
    )
    if not b.quick:
        _peer(b, "a2a_memory", "bench.peer_a2a", {"n": 2_000, "path": "", "memory": True})

    rate = ours["tasks_per_s"]
    common = {"n": n, "elapsed_s": ours["elapsed"], "max_running": MAX_RUNNING}
    runs = {"runs": ours["runs"]}
    b.emit(
        "a",
        "tasks_per_s",
        rate,
        "tasks/s",
        baseline="naive_one_txn_per_write",
        baseline_value=naive["tasks_per_s"] if naive else None,
        target=(">=", 5000),
        ratio_target=(">=", 10),
        **common,
        **runs,
    )
    b.emit(
        "a",
        "tasks_per_s",
        rate,
        "tasks/s",
        baseline="dbos_sqlite_wal",
        baseline_value=dbos["tasks_per_s"] if dbos else None,
        ratio_target=(">=", 40),
        **common,
        **runs,
    )
    b.emit(
        "a",
        "tasks_per_s",
        rate,
        "tasks/s",
        baseline="a2a_sqlite",
        baseline_value=a2a["tasks_per_s"] if a2a else None,
        **common,
    )
    b.emit(
        "a",
        "tasks_per_s",
        rate,
        "tasks/s",
        baseline="raw_sqlite_ceiling",
        baseline_value=raw["tasks_per_s"] if raw else None,
        **common,
    )
    for name, result, extra in (
        ("unbounded", unbounded, {"max_running": None}),
        (
            "awaited",
            awaited,
            {"max_running": MAX_RUNNING, "how": "each submitter awaits rt.result"},
        ),
    ):
        if result is not None:
            b.emit(
                "a",
                f"tasks_per_s.{name}",
                result["tasks_per_s"],
                "tasks/s",
                baseline="naive_one_txn_per_write",
                baseline_value=naive["tasks_per_s"] if naive else None,
                n=n,
                elapsed_s=result["elapsed"],
                **extra,
            )
    if tuned is not None:
        for baseline, value, target in (
            ("naive_one_txn_per_write", naive["tasks_per_s"] if naive else None, 10),
            ("dbos_sqlite_wal", dbos["tasks_per_s"] if dbos else None, 40),
        ):
            b.emit(
                "a",
                "tasks_per_s.tuned_gc",
                tuned["tasks_per_s"],
                "tasks/s",
                baseline=baseline,
                baseline_value=value,
                target=(">=", 5000),
                ratio_target=(">=", target),
                gc_threshold=list(TUNED_GC),
                max_running=MAX_RUNNING,
                n=n,
                elapsed_s=tuned["elapsed"],
            )
    b.emit(
        "a",
        "committed_events_per_s",
        ours["events_per_s"],
        "events/s",
        baseline=SQLITE_BATCHED,
        events=ours["events"],
        **common,
    )
    b.emit(
        "a",
        "commits_per_task",
        ours["commits_per_task"],
        "commits/task",
        baseline="dbos_sqlite_wal",
        baseline_value=dbos["commits_per_task"] if dbos else None,
        better="lower",
        writes_per_task=ours["writes_per_task"],
        **common,
    )
    b.emit(
        "a",
        "submits_per_s",
        ours["submits_per_s"],
        "tasks/s",
        baseline=TRIO_SPAWN,
        **common,
    )


def main() -> None:
    args = child_args()
    if args.get("gc") is not None:
        gc.set_threshold(*args["gc"])
    run = _awaited if args.get("awaited") else _ours
    result = trio.run(run, args["n"], args["path"], args.get("max_running", MAX_RUNNING))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # The whole child's CPU, threads and start-up included (bench.compare).
    result["process_cpu_s"] = round(usage.ru_utime + usage.ru_stime, 2)
    report(result)


if __name__ == "__main__":
    main()
