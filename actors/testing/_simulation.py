"""Seeded simulation: random operations, crashes and restarts, then invariants.

Theory of operation
-------------------
``run_simulation(seed)`` runs a whole trio program on a virtual clock with
trio's scheduler seeded, so one seed is one run, every time. A driver opens a
runtime on one store and throws a random (seeded) stream of operations at a
few tasks: submits, sends, pauses, resumes, stops, cancels, subscribers that
connect and disconnect, write failures, crashes at random step points (the
runtime stops as if killed: no more writes, leases kept) and graceful
restarts; each incarnation runs with a random ``max_running`` (none, 1 or 2). Each crash or
restart ends a runtime *incarnation*; the next one reopens on the same store.
At the end a last incarnation answers, resumes and re-sends until the tasks
settle, and the invariants are checked:

* every history is contiguous from 1 and ordered; after a terminal state event
  nothing follows, and the record's state is the last state event's;
* no step body ran when its result was already stored (checked against the
  store each time a body is about to run);
* no subscriber saw a gap or a duplicate, and every event a subscriber saw was
  already committed when it saw it;
* no task is left pending or running without a live owner.

A violation raises ``SimulationFailure``, whose message names the seed.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from typing import Any

import attrs
import trio
import trio.testing

import storage
from storage._compat import scheduler_random

from ..core._errors import ActorsError
from ..core._messages import Request, Signal
from ..runtime._app import App
from ..runtime._context import TaskContext
from ..runtime._faults import POINTS, CrashPoint, Point
from ..runtime._runtime import Runtime, open_runtime

NODE = "sim-node"


class SimulationFailure(AssertionError):
    """The simulation found invariant violations."""

    def __init__(self, seed: int, violations: list[str], trace: list[str]) -> None:
        lines = "\n  ".join(violations[:20])
        tail = "\n  ".join(trace[-25:])
        super().__init__(
            f"simulation seed={seed} found {len(violations)} violation(s):\n  {lines}\n"
            f"last operations:\n  {tail}\n"
            f"replay it with actors.testing.run_simulation({seed})"
        )
        self.seed = seed
        self.violations = violations
        self.trace = trace


@attrs.frozen
class SimulationReport:
    """What a passing simulation did."""

    seed: int
    operations: int
    crashes: int
    restarts: int
    #: Final state of each task.
    states: dict[str, str]
    #: Events committed, and events delivered to subscribers.
    events: int
    delivered: int
    #: Step bodies run.
    bodies: int


#: Node-level duties that log the store's refusal and go on (the next
#: renewal, the next open): expected when the store refuses on purpose.
_NODE_DUTIES = ("could not renew leases", "could not release this node's tasks on close")


class _ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        message = record.getMessage()
        if message in _NODE_DUTIES and isinstance(error, storage.StorageError):
            return  # an injected write failure, reported as it should be
        detail = f" ({error!r})" if error is not None else ""
        self.messages.append(message + detail)


def simulation_app() -> App:
    """The app the simulation drives: steps, emits, asks and checkpoints."""
    app = App()

    async def body(index: int, delay: float) -> int:
        await trio.sleep(delay)
        return index

    @app.task("sim", retries=1, backoff=0.5)
    async def sim(ctx: TaskContext, request: Request) -> dict[str, Any]:
        spec = request.input if isinstance(request.input, dict) else {"steps": 2}
        total = 0
        answers = []
        for index in range(int(spec.get("steps", 2))):
            total += await ctx.step(f"s{index}", body, index, float(spec.get("delay", 1)))
            ctx.emit("tick", {"index": index})
            ctx.progress(index + 1, spec.get("steps", 2))
            if index == spec.get("ask_at"):
                answers.append(await ctx.ask({"index": index}))
            if index % 2:
                await ctx.checkpoint({"index": index, "total": total})
        ctx.usage(model="sim", input_tokens=total, output_tokens=1)
        return {"total": total, "answers": answers, "input": request.input}

    return app


class _Simulation:
    def __init__(self, seed: int, tasks: int, operations: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.task_count = tasks
        self.operations = operations
        self.app = simulation_app()
        self.task_ids: list[str] = []
        self.violations: list[str] = []
        self.trace: list[str] = []
        self.crashes = 0
        self.restarts = 0
        self.delivered = 0
        self.bodies: Counter[tuple[str, int]] = Counter()
        #: Per task, the last seq any subscriber saw (to resume from).
        self.seen: dict[str, int] = {}

    # -- checks while running ---------------------------------------------------
    def _observer(self, store: storage.Store) -> Any:
        async def observe(point: Point, task_id: str, step: str, index: int) -> None:
            if point != "before_step":
                return
            self.bodies[task_id, index] += 1
            for entry in await store.read_journal(task_id):
                if entry.index == index and entry.kind == "step":
                    self.violations.append(
                        f"task {task_id}: step {step!r} (#{index}) ran again after its "
                        "result was stored"
                    )

        return observe

    async def _subscriber(self, rt: Runtime, task_id: str, budget: int) -> None:
        after = self.seen.get(task_id, 0)
        try:
            async with rt.subscribe(task_id, after=after, buffer=16) as events:
                last = after
                async for event in events:
                    if event.seq != last + 1:
                        self.violations.append(
                            f"task {task_id}: subscriber after={after} saw seq {event.seq} "
                            f"after {last}"
                        )
                    last = event.seq
                    committed = await rt.store.read_events(task_id, event.seq - 1, 1)
                    if not committed or committed[0].seq != event.seq:
                        self.violations.append(
                            f"task {task_id}: seq {event.seq} delivered before it was committed"
                        )
                    self.delivered += 1
                    self.seen[task_id] = max(self.seen.get(task_id, 0), event.seq)
                    budget -= 1
                    if budget <= 0:
                        return
                    if self.rng.random() < 0.1:
                        await trio.sleep(self.rng.choice([0.5, 2, 5]))
        except (ActorsError, storage.StorageError):
            # Lagged (it then resumes next time from what it saw), runtime
            # closed, or a read refused.
            return

    # -- operations -------------------------------------------------------------
    async def _operate(self, rt: Runtime, nursery: trio.Nursery) -> str:
        """One random operation; returns "crash" or "restart" to end the incarnation."""
        rng = self.rng
        choices = ["send", "pause", "resume", "stop", "cancel", "watch", "watch", "sleep"]
        if len(self.task_ids) < self.task_count:
            choices += ["submit"] * 3
        choices += ["crash_at", "crash_at", "crash_now", "restart", "fail_writes"]
        op = rng.choice(choices)
        task_id = rng.choice(self.task_ids) if self.task_ids else None
        self.trace.append(f"{op} {task_id or ''}".strip())
        try:
            if op == "submit":
                new_id = f"task-{len(self.task_ids)}"
                spec = {
                    "steps": rng.randint(2, 5),
                    "delay": rng.choice([0.5, 1, 3]),
                    "ask_at": rng.choice([None, None, 0, 1]),
                }
                strategy = rng.choice(["enqueue", "enqueue", "interrupt", "rollback", "reject"])
                await rt.submit("sim", spec, task_id=new_id, strategy=strategy, thread_id="sim")
                self.task_ids.append(new_id)
            elif task_id is None or op == "sleep":
                await trio.sleep(rng.choice([0.5, 1, 4, 10]))
            elif op == "send":
                await rt.send(task_id, {"n": rng.randint(0, 9)})
            elif op in ("pause", "resume", "stop"):
                await rt.signal(task_id, Signal(op))
            elif op == "cancel":
                if rng.random() < 0.5:  # cancels end tasks: keep some alive
                    await rt.cancel(task_id, reason="simulated")
            elif op == "watch":
                nursery.start_soon(self._subscriber, rt, task_id, rng.randint(1, 40))
            elif op == "crash_at":
                point: Point = rng.choice(POINTS)
                step = f"s{rng.randint(0, 3)}"
                CrashPoint(point, step, rng.choice([None, task_id])).arm(rt)
            elif op == "fail_writes":
                # The next writes fail, whoever makes them (as testing.fail_writes).
                rt.store._writer.fail_next = rng.randint(1, 3)
            elif op == "crash_now":
                self.crashes += 1
                rt.abort()
                return "crash"
            elif op == "restart":
                self.restarts += 1
                return "restart"
        except (ActorsError, storage.StorageError):
            pass  # invalid transitions, rejected requests, failed writes, a crash...
        if rt.aborted:
            self.crashes += 1
            return "crash"
        return ""

    async def _incarnation(self, store: storage.Store) -> None:
        bound = self.rng.choice([None, None, 1, 2])
        self.trace.append(f"open max_running={bound}")
        async with open_runtime(self.app, store, node_id=NODE, lease=10, max_running=bound) as rt:
            rt.observe_steps(self._observer(store))
            async with trio.open_nursery() as nursery:
                while self.operations > 0:
                    self.operations -= 1
                    if await self._operate(rt, nursery):
                        break
                    await trio.sleep(self.rng.choice([0, 0, 0.5, 1]))
                nursery.cancel_scope.cancel()
        store._writer.fail_next = 0  # failures injected are transient: not the next open's

    async def _settle(self, store: storage.Store) -> dict[str, str]:
        async with open_runtime(self.app, store, node_id=NODE, lease=10) as rt:
            rt.observe_steps(self._observer(store))
            for _ in range(12):
                await trio.sleep(30)
                for task_id in self.task_ids:
                    info = await rt.get(task_id)
                    try:
                        if info.state is storage.TaskState.PAUSED:
                            await rt.signal(task_id, Signal.RESUME)
                        elif info.state in (
                            storage.TaskState.INPUT_REQUIRED,
                            storage.TaskState.AUTH_REQUIRED,
                            storage.TaskState.STOPPED,
                        ):
                            await rt.send(task_id, {"settle": True})
                    except ActorsError:
                        pass
            await trio.sleep(60)
            await trio.testing.wait_all_tasks_blocked()
            states = {}
            for task_id in self.task_ids:
                record = await store.get_task(task_id)
                assert record is not None
                states[task_id] = record.state.value
                if record.state in storage.ACTIVE_STATES and (
                    not rt.has_actor(task_id) or record.owner != NODE
                ):
                    self.violations.append(
                        f"task {task_id} is {record.state.value} without a live owner "
                        f"(owner {record.owner!r})"
                    )
            return states

    async def _check_histories(self, store: storage.Store) -> int:
        total = 0
        for task_id in self.task_ids:
            record = await store.get_task(task_id)
            events = await store.read_events(task_id)
            total += len(events)
            assert record is not None
            if [e.seq for e in events] != list(range(1, len(events) + 1)):
                self.violations.append(f"task {task_id}: history is not contiguous from 1")
            states = [storage.decode(e.data)["to"] for e in events if e.kind == "state"]
            for position, event in enumerate(events):
                if event.kind != "state":
                    continue
                if storage.TaskState(storage.decode(event.data)["to"]).terminal and (
                    position != len(events) - 1
                ):
                    self.violations.append(
                        f"task {task_id}: events after its terminal event #{event.seq}"
                    )
            if states and states[-1] != record.state.value:
                self.violations.append(
                    f"task {task_id}: record says {record.state.value}, history says {states[-1]}"
                )
        return total

    async def run(self) -> SimulationReport:
        # An actor that crashes, or any error the runtime logs, is a finding too.
        errors = _ErrorLog()
        logger = logging.getLogger("taskactors")
        logger.addHandler(errors)
        try:
            async with storage.open("memory://") as store:
                while self.operations > 0:
                    await self._incarnation(store)
                states = await self._settle(store)
                events = await self._check_histories(store)
        finally:
            logger.removeHandler(errors)
        self.violations.extend(f"logged error: {message}" for message in errors.messages)
        if self.violations:
            raise SimulationFailure(self.seed, self.violations, self.trace)
        return SimulationReport(
            seed=self.seed,
            operations=len(self.trace),
            crashes=self.crashes,
            restarts=self.restarts,
            states=states,
            events=events,
            delivered=self.delivered,
            bodies=sum(self.bodies.values()),
        )


def run_simulation(seed: int, *, tasks: int = 4, operations: int = 40) -> SimulationReport:
    """Run one seeded simulation in its own trio run; see the module docstring.

    Call it from a plain (sync) test. The same seed gives the same run: the
    operations, trio's scheduler and the virtual clock are all seeded.

    Raises:
        SimulationFailure: an invariant was violated (the message names the seed).
    """
    # trio shuffles runnable batches with this generator: seed it for a replayable run.
    scheduler_rng = scheduler_random() or random.Random()  # (None: trio changed it)
    saved_scheduler, saved_global = scheduler_rng.getstate(), random.getstate()
    scheduler_rng.seed(seed)
    random.seed(seed)
    simulation = _Simulation(seed, tasks, operations)
    try:
        clock = trio.testing.MockClock(autojump_threshold=0)
        report: SimulationReport = trio.run(simulation.run, clock=clock)
        return report
    except SimulationFailure:
        raise
    except Exception as exc:  # the runtime broke outright: that is a finding too
        raise SimulationFailure(seed, [f"raised {exc!r}"], simulation.trace) from exc
    finally:
        scheduler_rng.setstate(saved_scheduler)
        random.setstate(saved_global)


def soak(seeds: range, *, tasks: int = 5, operations: int = 60) -> int:
    """Run the simulation over many seeds; print each failure; return how many failed."""
    failed = 0
    for seed in seeds:
        try:
            run_simulation(seed, tasks=tasks, operations=operations)
        except SimulationFailure as failure:
            failed += 1
            print(failure, flush=True)
    print(f"soak: {len(seeds)} seeds, {failed} failed", flush=True)
    return failed
