"""Node: what a runtime does as a node of its store, and its table of actors.

Theory of operation
-------------------
The runtime is a node: it registers itself in the store, renews its lease
and its tasks' leases on trio's clock, and scans for tasks it may own (its
own after a restart, unowned ones, and those of nodes whose lease expired),
claiming each (the epoch grows) and starting its actor. Every actor lives in
the runtime's nursery; the table ``_actors`` maps task ids to live actors.

A message for a task goes to its live actor, or revives it: claim, read its
journal and inbox, start an actor (``_actor_for``). A finished task has no
actor.

Leaving ``open_runtime`` cancels every actor (a running task stays
``running`` in the store: its journal is its checkpoint), releases this
node's leases so the next open resumes them at once, and closes the store if
the runtime opened it. ``abort`` stops the node as if its process died.

``Runtime`` (the public API, in ``_runtime``) is this class's subclass, and
the ``Supervisor`` its actors see.
"""

from __future__ import annotations

import builtins
import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

import trio

import storage
from storage import (
    INFLIGHT_STATES,
    ClaimTask,
    ConflictError,
    LeaseHeldError,
    RecordNotFoundError,
    Store,
    TaskRecord,
    TaskState,
    TaskWrite,
)

from ..core._errors import RuntimeClosedError, TaskNotFound, UnknownTaskName
from ._actor import TaskActor
from ._app import App
from ._events import EventHub
from ._faults import StepObserver
from ._slots import RunSlots

if TYPE_CHECKING:
    from ._supervisor import Supervisor

log = logging.getLogger("taskactors.runtime")

S = TaskState
#: Tasks claimed and started together by a scan. Large: the actors of one
#: chunk run (and write) while the next chunk is claimed, and each chunk
#: after the first waited behind them (issue #5, scenario f: 10,000 tasks
#: resumed in 2.6-3.0 s with chunks of 2,000, 1.5-1.7 s with one chunk).
_SCAN_CHUNK = 10_000


class Node:
    """The node duties and the actor table of a ``Runtime`` (its base class)."""

    def __init__(
        self,
        app: App,
        store: Store,
        *,
        node_id: str,
        lease: float,
        max_running: int | None,
        subscriber_buffer: int,
    ) -> None:
        self.app = app
        self.store = store
        self.node_id = node_id
        self.lease = lease
        self.hub = EventHub(subscriber_buffer)
        #: The bound of max_running (None: unbounded); see RunSlots.
        self.run_slots = (
            RunSlots(max_running, self._start_waiting) if max_running is not None else None
        )
        self._actors: dict[str, TaskActor] = {}
        self._starting: dict[str, trio.Event] = {}
        #: Tasks in flight whose handler is not registered here (id -> record).
        self.orphaned: dict[str, TaskRecord] = {}
        self._nursery: trio.Nursery | None = None
        #: What every actor's task starts from: a copy of the context the
        #: runtime was opened in (see ``_start_actor``).
        self._context: contextvars.Context | None = None
        #: Whether other processes may commit to this store (unheard here).
        #: A backend that does not say is taken to be shared: its waits then
        #: also read the store now and then, rather than hang.
        self._shared = bool(getattr(store.backend, "shared", True))
        #: Whether another live node was registered on the store at the last
        #: look (at open, then at each scan): only then can a task's commits
        #: be made where this node does not hear them.
        self._others = False
        self._closing = False
        self._closed = trio.Event()
        #: How many ``pause_lease_renewal`` blocks are open (renewal is off meanwhile).
        self._renewal_pauses = 0
        #: Awaited at the step points of every step whose body runs (see
        #: ``observe_steps``); a tuple replaced on change, so a step reads it
        #: with one truth test, and a point awaits those registered then.
        self.step_observers: tuple[StepObserver, ...] = ()
        self._aborted = False

    # -- instrumentation seams ---------------------------------------------------
    def observe_steps(self, observer: StepObserver) -> Callable[[], None]:
        """Await ``observer(point, task_id, step, index)`` at the step points.

        An instrumentation (and chaos-testing) seam: the points are
        ``"before_step"`` (the body is about to run), ``"after_body"`` (it
        returned, its result is not stored yet) and ``"after_store"`` (the
        result is durable), of every step whose body runs (a replayed step
        reaches none). The step waits for the observer; an exception from it
        fails the step's handler attempt. With no observer registered a step
        costs one truth test more.

        Returns:
            A function that removes the observer again (a no-op once removed).
        """
        self.step_observers = (*self.step_observers, observer)

        def remove() -> None:
            observers = builtins.list(self.step_observers)
            if observer in observers:
                observers.remove(observer)
                self.step_observers = tuple(observers)

        return remove

    def abort(self) -> None:
        """Stop at once, as if the process died here.

        A chaos-testing seam (``actors.testing.crash_at`` uses it): every
        actor is cancelled where it is, nothing more is written (not even the
        release of the leases: this node's tasks stay leased to it, as a
        killed process leaves them), and watches end. Leaving
        ``open_runtime`` then closes the store if the runtime opened it.
        Every later call on the runtime raises RuntimeClosedError. A no-op
        once aborted.
        """
        if self._aborted:
            return
        self._aborted = True
        self._closing = True
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
        self.hub.close()
        self._closed.set()

    @property
    def aborted(self) -> bool:
        """Whether ``abort`` stopped this runtime."""
        return self._aborted

    @contextlib.contextmanager
    def pause_lease_renewal(self) -> Iterator[None]:
        """Within the block, renew no lease, as if this node hung.

        A chaos-testing seam (``actors.testing.stop_heartbeats`` uses it).
        This node's tasks' leases then expire after ``lease`` seconds;
        another node on the store may claim them, and this node's later
        writes for them are refused (their actors stop). Renewal resumes on
        exit; blocks may nest.
        """
        self._renewal_pauses += 1
        try:
            yield
        finally:
            self._renewal_pauses -= 1

    def has_actor(self, task_id: str) -> bool:
        """Whether a live actor of the task is on this node now."""
        return task_id in self._actors

    # -- the table of actors -----------------------------------------------------
    def _check_open(self) -> None:
        if self._closing:
            raise RuntimeClosedError("the runtime is closing")

    async def _load(self, task_id: str, user_id: str | None) -> TaskRecord:
        self._check_open()
        record = await self.store.get_task(task_id)
        if record is None or (user_id is not None and record.user_id != user_id):
            raise TaskNotFound(task_id)
        return record

    def _remote(self, task_id: str) -> bool:
        """Whether the task's commits may be made where this node does not
        hear them: the store is shared with other processes, another live
        node was seen on it, and no actor here runs the task nor waits for a
        run slot. A wait on such a task reads it again every REMOTE_POLL
        seconds."""
        return (
            self._shared
            and self._others
            and not (
                task_id in self._actors
                or (self.run_slots is not None and task_id in self.run_slots.waiting)
            )
        )

    async def _look_for_others(self) -> None:
        """Note whether another live node shares the store (see ``_remote``):
        a process alone on its store polls nothing."""
        if self._shared:
            nodes = await self.store.list_nodes()
            others = any(node.node_id != self.node_id for node in nodes)
            if others and not self._others:
                self.hub.wake_all()  # the waits on tasks run elsewhere start to poll
            self._others = others

    def _held_record(self, task_id: str, user_id: str | None) -> TaskRecord | None:
        """The task as this node holds it (committed: its actor's last write,
        or the record of a task waiting for a run slot), if it does and the
        user may see it; None to read it from the store."""
        self._check_open()
        actor = self._actors.get(task_id)
        record = actor.record if actor is not None else None
        if record is None and self.run_slots is not None:
            record = self.run_slots.waiting.get(task_id)
        if record is None or (user_id is not None and record.user_id != user_id):
            return None
        return record

    def _start_fresh(self, record: TaskRecord) -> None:
        """Start the actor of a task that never ran (pending, no journal, no
        inbox), or, under max_running with no slot free, queue its record."""
        slots = self.run_slots
        if slots is None:
            self._start_actor(record, (), ())
        elif slots.take_nowait():
            self._start_actor(record, (), ()).holds_slot = True
        else:
            slots.waiting[record.id] = record  # no actor until a slot frees

    @asynccontextmanager
    async def _starting_guard(self, task_id: str) -> AsyncIterator[None]:
        while task_id in self._starting:
            await self._starting[task_id].wait()
        event = trio.Event()
        self._starting[task_id] = event
        try:
            yield
        finally:
            del self._starting[task_id]
            event.set()

    async def _actor_for(self, task_id: str) -> TaskActor | None:
        """The live actor of a task, reviving it if needed; None if it is finished.

        Raises:
            LeaseHeldError: another live node owns the task.
        """
        while True:
            actor = self._actors.get(task_id)
            if actor is not None:
                return actor
            if self.run_slots is not None and task_id in self.run_slots.waiting:
                # Waiting for a slot, without an actor: it gets one for the
                # message now (its run, if any, still waits for a slot).
                return self._start_actor(self.run_slots.waiting.pop(task_id), (), ())
            if task_id in self._starting:
                await self._starting[task_id].wait()
                continue
            async with self._starting_guard(task_id):
                return await self._revive(task_id)

    async def _revive(self, task_id: str) -> TaskActor | None:
        record = await self.store.get_task(task_id)
        if record is None:
            raise TaskNotFound(task_id)
        if record.state.terminal:
            return None
        if record.name not in self.app:
            self.orphaned[task_id] = record
            raise UnknownTaskName(record.name)
        try:
            record = await self.store.claim_task(task_id, self.node_id, self.lease, INFLIGHT_STATES)
        except ConflictError:
            return None  # it finished meanwhile
        journal = await self.store.read_journal(task_id)
        inbox = await self.store.list_inbox(task_id)
        return self._start_actor(record, journal, inbox)

    def _start_actor(self, record: TaskRecord, journal: Any, inbox: Any) -> TaskActor:
        # Closing (or crashed) while this claim was in flight: start nothing.
        self._check_open()
        assert self._nursery is not None
        # (a Node is the base of Runtime, which is its actors' Supervisor)
        supervisor = cast("Supervisor", self)
        actor = TaskActor(supervisor, self.app.spec(record.name), record, journal, inbox)
        actor.boot()
        self._actors[record.id] = actor
        # A task spawned by trio starts from a copy of its spawner's
        # context, and an actor is started by whoever comes first: a
        # submitter, a message's sender, or the actor whose run slot it
        # takes, whose handler's context variables it would then see. Every
        # actor starts from the runtime's context instead: a task runs the
        # same whether it started at once, waited for a slot, or was
        # resumed by another process.
        assert self._context is not None
        self._context.run(self._nursery.start_soon, actor.serve)
        return actor

    def _start_waiting(self, record: TaskRecord) -> bool:
        """Start the actor of a task that waited for a slot, handing it the slot."""
        if self._closing:
            return False
        self._start_actor(record, (), ()).holds_slot = True
        return True

    def forget(self, task_id: str, actor: object) -> None:
        """An actor stopped: take it out of the table (for its actors)."""
        if self._actors.get(task_id) is actor:
            del self._actors[task_id]

    def actor_crashed(self, task_id: str) -> None:
        """The actor of a task crashed: let go of the task (for its actors)."""
        if self._nursery is not None and not self._closing:
            self._nursery.start_soon(self._release_quietly, task_id)

    async def _release_quietly(self, task_id: str) -> None:
        try:
            await self.store.release_tasks(self.node_id, [task_id])
        except storage.StorageError:
            log.exception("task %s: could not release it after its actor crashed", task_id)

    # -- node duties ---------------------------------------------------------------
    async def _scan(self) -> None:
        """Claim and start every task this node may own and does not run yet.

        In bulk: the claims of a few thousand tasks share a few commits, and
        their journals and inboxes come in a few queries, so resuming ten
        thousand tasks costs a handful of transactions, not four round trips
        each (issue #5, scenario f).
        """
        # (Oldest first: under max_running, the tasks that waited longest run first.)
        records = await self.store.list_claimable(self.node_id)
        wanted: builtins.list[str] = []
        for record in records:
            if record.id in self._actors or record.id in self._starting:
                continue
            if self.run_slots is not None and record.id in self.run_slots.waiting:
                continue  # ours, waiting for a slot
            if record.name not in self.app:
                if record.id not in self.orphaned:
                    log.warning(
                        "task %s: no handler named %r here; left as it is", record.id, record.name
                    )
                self.orphaned[record.id] = record
                continue
            wanted.append(record.id)
        for start in range(0, len(wanted), _SCAN_CHUNK):
            if self._closing:
                return
            await self._revive_many(wanted[start : start + _SCAN_CHUNK])

    async def _revive_many(self, task_ids: builtins.list[str]) -> None:
        """Claim tasks, read their journals and inboxes in bulk, start their actors."""
        guards = {task_id: trio.Event() for task_id in task_ids if task_id not in self._starting}
        self._starting.update(guards)
        try:
            claims = [
                (
                    task_id,
                    self.store.execute_nowait(
                        ClaimTask(
                            task_id,
                            self.node_id,
                            self.store.clock.now() + self.lease,
                            INFLIGHT_STATES,
                        ),
                        # Ahead of the writes of the tasks resumed so far:
                        # the next ones start sooner (a claim is fenced by
                        # state and lease, whatever waits before it).
                        urgent=True,
                    ),
                )
                for task_id in guards
            ]
            claimed: builtins.list[TaskRecord] = []
            for task_id, pending in claims:
                await pending.wait_quietly()
                try:
                    record = pending.outcome_nowait()
                except (LeaseHeldError, ConflictError, RecordNotFoundError):
                    continue  # another node has it, or it finished meanwhile
                except storage.StorageError:
                    log.exception("task %s: could not claim it", task_id)
                    continue
                assert isinstance(record, TaskRecord)
                claimed.append(record)
            ids = [record.id for record in claimed]
            journals = await self.store.read_journals(ids)
            inboxes = await self.store.list_inboxes(ids)
            fresh: builtins.list[TaskRecord] = []
            slots = self.run_slots
            for record in claimed:
                journal, inbox = journals[record.id], inboxes[record.id]
                if record.state is S.PENDING and not journal and not inbox:
                    fresh.append(record)
                    continue
                # A run that was under way: its actor first, and a slot if free.
                actor = self._start_actor(record, journal, inbox)
                if slots is not None and slots.take_nowait():
                    actor.holds_slot = True
            for record in fresh:
                self._start_fresh(record)  # under max_running, maybe only queued
        finally:
            for task_id, event in guards.items():
                del self._starting[task_id]
                event.set()

    async def _renew_loop(self) -> None:
        while True:
            await trio.sleep(self.lease / 3)
            if self._renewal_pauses:
                continue
            try:
                await self.store.renew_leases(self.node_id, self.lease)
                await self._end_runs_cancelled_elsewhere()
            except storage.StorageError:
                log.exception("could not renew leases")

    async def _end_runs_cancelled_elsewhere(self) -> None:
        """Stop the runs of the tasks another node cancelled while this one
        runs them, and let go of them.

        A cancel from another node is a compare-and-set that leaves this node
        the owner (see ``_cancel_remote``): the run here would go on until
        its next write, which the store refuses, however long its step.
        Checked with each lease renewal: a run stops within ``lease / 3``.
        """
        for record in await self.store.list_tasks(owner=self.node_id, states=[S.CANCELLED]):
            actor = self._actors.get(record.id)
            if actor is not None:
                # (in a task of its own: the renewals never wait for an actor's lock)
                assert self._nursery is not None
                self._nursery.start_soon(actor.cancelled_elsewhere, record)
                continue
            # No actor: one stopped at a refused write, or the task waited
            # for a run slot. Nothing here runs it any more.
            if self.run_slots is not None:
                self.run_slots.waiting.pop(record.id, None)
            with contextlib.suppress(storage.StorageError):
                await self.store.write(TaskWrite(record.id, epoch=record.epoch, release=True))

    async def _scan_loop(self) -> None:
        while True:
            await trio.sleep(self.lease / 2)
            try:
                await self._look_for_others()
                await self._scan()
            except storage.StorageError:
                log.exception("could not scan for tasks to own")
