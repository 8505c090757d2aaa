"""The in-memory backend: the reference implementation and the test double.

Theory of operation
-------------------
Every table is a plain dict, and the backend never blocks (``blocking =
False``), so the storage actor and the store client call it inline from
trio: no locks are needed, since trio runs one task at a time.

``apply`` runs each command as validate-then-mutate. Every mutation goes
through ``_put``/``_pop``/``_append``, which log how to undo it, so
atomicity does not rest on the order of the code alone:

- a command refused with a ``StorageError`` is rolled back to where it
  started, and the error instance becomes its outcome (the rest of the
  batch still commits);
- any other exception (a bug, an injected fault) rolls the whole batch back
  and propagates: the Backend contract says a failed batch applies nothing.

Reads return frozen records and fresh lists, never the backend's own
containers. Data lives as long as the object: ``close`` forgets nothing,
and ``open`` creates nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import attrs

from .._backend import Backend
from ..model import _codec
from ..model._commands import (
    ClaimTask,
    Command,
    CompareAndSetKeyState,
    CreateResult,
    CreateTask,
    DeleteKeyState,
    RegisterNode,
    ReleaseTasks,
    RemoveNode,
    RenewLeases,
    SetDeterministicValue,
    SetKeyState,
    SetWorkflowData,
    TaskWrite,
    TaskWriteResult,
    UpdateStatus,
)
from ..model._errors import RecordNotFoundError, StorageError
from ..model._fence import (
    claimable,
    decide_claim,
    decide_compare_and_set,
    decide_task_write,
    key_expires_at,
    key_state_alive,
    lease_holds,
    owned_by,
)
from ..model._records import (
    ACTIVE_STATES,
    EventLike,
    ExceptionRecord,
    InboxItem,
    JournalEntry,
    NewEvent,
    NodeRecord,
    StoredEvent,
    TaskFilter,
    TaskRecord,
    TaskState,
    UsageRecord,
)
from ..model._usage import aggregate_usage

K = TypeVar("K")
V = TypeVar("V")

_MISSING: Any = object()


def _oldest_first(records: Iterable[TaskRecord]) -> list[TaskRecord]:
    return sorted(records, key=lambda record: (record.created_at, record.id))


class MemoryBackend(Backend):
    """A store kept in dicts; see the module docstring.

    Not thread-safe: call it from one trio thread (``blocking`` is False, so
    the store never hands it to worker threads).
    """

    blocking: bool = False
    shared: bool = False  # (this process's alone)

    def __init__(self) -> None:
        self._tasks: dict[str, TaskRecord] = {}
        self._events: dict[str, list[StoredEvent]] = {}
        self._journal: dict[str, dict[int, JournalEntry]] = {}
        self._inbox: dict[str, dict[int, InboxItem]] = {}
        self._results: dict[str, str] = {}
        self._exceptions: dict[str, ExceptionRecord] = {}
        self._usage: dict[tuple[str, str], UsageRecord] = {}
        self._nodes: dict[str, NodeRecord] = {}
        #: key -> (state, expires at or None for never).
        self._key_states: dict[str, tuple[str, float | None]] = {}
        self._workflow_data: dict[tuple[str, str], str] = {}
        self._deterministic: dict[tuple[str, str], str] = {}
        #: Last inbox id given out (ids are global and only grow).
        self._counters: dict[str, int] = {"inbox": 0}
        self._undo: list[Callable[[], object]] = []

    # -- lifecycle -----------------------------------------------------------
    def open(self) -> None:
        """Nothing to connect to."""

    def close(self) -> None:
        """Nothing to release. Idempotent; the data stays."""

    # -- writes --------------------------------------------------------------
    def apply(self, commands: Sequence[Command], now: float) -> list[object]:
        """Apply commands in order, each atomically; one outcome per command.

        Raises:
            Exception: whatever a command raised that is not a StorageError;
                then nothing of the batch is applied.
        """
        self._undo = []
        try:
            outcomes = [self._apply_one(command, now) for command in commands]
        except Exception:
            self._rollback(0)
            raise
        self._undo = []
        return outcomes

    def _apply_one(self, command: Command, now: float) -> object:
        mark = len(self._undo)
        try:
            return self._dispatch(command, now)
        except StorageError as exc:
            self._rollback(mark)
            return exc

    def _dispatch(self, command: Command, now: float) -> object:
        match command:
            case CreateTask():
                return self._create_task(command, now)
            case TaskWrite():
                return self._task_write(command, now)
            case ClaimTask():
                return self._claim_task(command, now)
            case RenewLeases():
                return self._renew_leases(command)
            case ReleaseTasks():
                return self._release_tasks(command)
            case RegisterNode():
                self._put(self._nodes, command.node.node_id, command.node)
                return None
            case RemoveNode():
                self._pop(self._nodes, command.node_id)
                return None
            case UpdateStatus():
                return self._update_status(command, now)
            case SetKeyState():
                self._set_key_state(command.key, command.state, command.ttl, now)
                return None
            case CompareAndSetKeyState():
                return self._compare_and_set_key_state(command, now)
            case DeleteKeyState():
                self._pop(self._key_states, command.key)
                return None
            case SetWorkflowData():
                self._put(self._workflow_data, (command.workflow_id, command.key), command.value)
                return None
            case SetDeterministicValue():
                self._put(self._deterministic, (command.workflow_id, command.key), command.value)
                return None
        raise TypeError(f"not a storage command: {command!r}")

    # Undo-logged mutations: the only way state changes inside ``apply``.
    def _put(self, table: dict[K, V], key: K, value: V) -> None:
        old = table.get(key, _MISSING)
        table[key] = value
        if old is _MISSING:
            self._undo.append(lambda: table.pop(key))
        else:
            self._undo.append(lambda: table.__setitem__(key, old))

    def _pop(self, table: dict[K, V], key: K) -> None:
        if key in table:
            old = table.pop(key)
            self._undo.append(lambda: table.__setitem__(key, old))

    def _append(self, items: list[V], item: V) -> None:
        items.append(item)
        self._undo.append(items.pop)

    def _rollback(self, mark: int) -> None:
        while len(self._undo) > mark:
            self._undo.pop()()

    def _require(self, task_id: str) -> TaskRecord:
        record = self._tasks.get(task_id)
        if record is None:
            raise RecordNotFoundError(task_id)
        return record

    def _append_events(
        self, record: TaskRecord, events: Sequence[EventLike], now: float
    ) -> tuple[StoredEvent, ...]:
        history = self._events[record.id]
        stored = tuple(
            StoredEvent(record.id, seq, kind, now, data)
            for seq, (kind, data) in enumerate(events, start=record.last_seq + 1)
        )
        for event in stored:
            self._append(history, event)
        return stored

    def _create_task(self, command: CreateTask, now: float) -> CreateResult:
        existing = self._tasks.get(command.record.id)
        if existing is not None:
            return CreateResult(existing, created=False)
        record = attrs.evolve(command.record, last_seq=0)
        self._put(self._tasks, record.id, record)
        self._put(self._events, record.id, [])
        self._put(self._journal, record.id, {})
        self._put(self._inbox, record.id, {})
        events = self._append_events(record, command.events, now)
        record = attrs.evolve(record, last_seq=len(events))
        self._put(self._tasks, record.id, record)
        return CreateResult(record, created=True, events=events)

    def _task_write(self, write: TaskWrite, now: float) -> TaskWriteResult:
        record = self._require(write.task_id)
        refusal = decide_task_write(
            record.id,
            record.state,
            record.epoch,
            record.lease_expires,
            write.epoch,
            write.expect,
            now,
        )
        if refusal is not None:
            raise refusal

        changes: dict[str, Any] = {}
        if write.state is not None:
            changes["state"] = write.state
        if write.input is not None:
            changes["input"] = write.input
        if write.run is not None:
            changes["run"] = write.run
        if write.progress is not None:
            changes["progress_done"], changes["progress_total"] = write.progress
        if write.error is not None:
            changes["error"] = write.error
        if write.release:
            changes["owner"] = changes["lease_expires"] = None

        events = self._append_events(record, write.events, now)
        if events:
            changes["last_seq"] = events[-1].seq

        journal = self._journal[record.id]
        if write.discard_run is not None:
            for index, entry in list(journal.items()):
                if entry.run == write.discard_run:
                    self._pop(journal, index)
        for item in write.journal:
            entry = JournalEntry(
                record.id, item.index, item.kind, item.name, item.value, item.run, now
            )
            self._put(journal, item.index, entry)

        # Removals apply to the items that were waiting before this write;
        # the items it adds survive its own inbox_clear.
        inbox = self._inbox[record.id]
        for item_id in write.inbox_consume:
            self._pop(inbox, item_id)
        if write.inbox_clear:
            for item_id in list(inbox):
                self._pop(inbox, item_id)
        inbox_ids: list[int] = []
        for text in write.inbox_add:
            item_id = self._counters["inbox"] + 1
            self._put(self._counters, "inbox", item_id)
            self._put(inbox, item_id, InboxItem(record.id, item_id, text, now))
            inbox_ids.append(item_id)

        if write.result is not None:
            self._put(self._results, record.id, write.result)
        if write.exception is not None:
            self._put(self._exceptions, record.id, write.exception)
        for usage in write.usage:
            # Usage belongs to the task the write names, whatever the report says.
            if (record.id, usage.key) not in self._usage:
                self._put(
                    self._usage, (record.id, usage.key), attrs.evolve(usage, task_id=record.id)
                )

        if write.changes_anything:
            changes["updated_at"] = now
        new = attrs.evolve(record, **changes) if changes else record
        if new is not record:
            self._put(self._tasks, record.id, new)
        return TaskWriteResult(new, events, tuple(inbox_ids))

    def _claim_task(self, command: ClaimTask, now: float) -> TaskRecord:
        record = self._require(command.task_id)
        refusal = decide_claim(
            record.id,
            record.state,
            record.owner,
            record.lease_expires,
            command.node_id,
            command.states,
            command.force,
            now,
        )
        if refusal is not None:
            raise refusal
        claimed = attrs.evolve(
            record,
            owner=command.node_id,
            lease_expires=command.lease_until,
            epoch=record.epoch + 1,
        )
        self._put(self._tasks, record.id, claimed)
        return claimed

    def _renew_leases(self, command: RenewLeases) -> int:
        node = self._nodes.get(command.node_id)
        if node is not None:
            self._put(
                self._nodes, node.node_id, attrs.evolve(node, lease_expires=command.lease_until)
            )
        owned = [
            record for record in self._tasks.values() if owned_by(record.owner, command.node_id)
        ]
        for record in owned:
            self._put(
                self._tasks, record.id, attrs.evolve(record, lease_expires=command.lease_until)
            )
        return len(owned)

    def _release_tasks(self, command: ReleaseTasks) -> int:
        if command.task_ids is None:
            candidates = list(self._tasks.values())
        else:
            candidates = [
                self._tasks[task_id] for task_id in set(command.task_ids) if task_id in self._tasks
            ]
        owned = [record for record in candidates if owned_by(record.owner, command.node_id)]
        for record in owned:
            self._put(self._tasks, record.id, attrs.evolve(record, owner=None, lease_expires=None))
        return len(owned)

    def _update_status(self, command: UpdateStatus, now: float) -> TaskWriteResult | None:
        record = self._tasks.get(command.task_id)
        if record is None:
            return None
        data: dict[str, str] = {"from": record.state.value, "to": command.status.value}
        if command.error is not None:
            data["error"] = command.error
        events = self._append_events(record, (NewEvent("state", _codec.encode(data)),), now)
        new = attrs.evolve(
            record,
            state=command.status,
            last_seq=events[-1].seq,
            updated_at=now,
            error=command.error if command.error is not None else record.error,
        )
        self._put(self._tasks, record.id, new)
        return TaskWriteResult(new, events)

    def _set_key_state(self, key: str, state: str, ttl: float | None, now: float) -> None:
        self._put(self._key_states, key, (state, key_expires_at(now, ttl)))

    def _compare_and_set_key_state(self, command: CompareAndSetKeyState, now: float) -> bool:
        current, expires_at = self._key_states.get(command.key, (None, None))
        matches = decide_compare_and_set(
            current, expires_at, now, command.expected_state, command.negate
        )
        if matches:
            self._set_key_state(command.key, command.new_state, command.ttl, now)
        return matches

    # -- tasks -----------------------------------------------------------------
    def get_task(self, task_id: str) -> TaskRecord | None:
        return self._tasks.get(task_id)

    def list_tasks(self, query: TaskFilter) -> list[TaskRecord]:
        """Tasks matching the filter, oldest first (created_at, then id)."""
        matching = _oldest_first(
            record
            for record in self._tasks.values()
            if (query.user_id is None or record.user_id == query.user_id)
            and (query.thread_id is None or record.thread_id == query.thread_id)
            and (query.parent_id is None or record.parent_id == query.parent_id)
            and (query.states is None or record.state in query.states)
            and (query.name is None or record.name == query.name)
            and (query.owner is None or record.owner == query.owner)
        )
        return matching if query.limit is None else matching[: max(query.limit, 0)]

    def list_pending(self) -> list[TaskRecord]:
        """Tasks in state pending, oldest first."""
        return _oldest_first(r for r in self._tasks.values() if r.state is TaskState.PENDING)

    def list_inflight(self) -> list[TaskRecord]:
        """Tasks in state pending or running, oldest first."""
        return _oldest_first(r for r in self._tasks.values() if r.state in ACTIVE_STATES)

    def list_claimable(self, node_id: str, now: float) -> list[TaskRecord]:
        """Pending or running tasks with no owner, owned by node_id, or whose
        lease expired before now; oldest first."""
        return _oldest_first(
            record
            for record in self._tasks.values()
            if record.state in ACTIVE_STATES
            and claimable(record.owner, record.lease_expires, node_id, now)
        )

    # -- history and results -----------------------------------------------------
    def read_events(
        self, task_id: str, after: int = 0, limit: int | None = None
    ) -> list[StoredEvent]:
        """Events with seq > after, in seq order."""
        # Seqs are contiguous from 1, so seq n sits at index n - 1.
        history = self._events.get(task_id, [])
        start = max(after, 0)
        stop = None if limit is None else start + max(limit, 0)
        return history[start:stop]

    def get_result(self, task_id: str) -> str | None:
        return self._results.get(task_id)

    def get_exception(self, task_id: str) -> ExceptionRecord | None:
        return self._exceptions.get(task_id)

    def read_journal(self, task_id: str) -> list[JournalEntry]:
        """Journal entries in index order."""
        journal = self._journal.get(task_id, {})
        return [journal[index] for index in sorted(journal)]

    def list_inbox(self, task_id: str) -> list[InboxItem]:
        """Inbox items in id order."""
        inbox = self._inbox.get(task_id, {})
        return [inbox[item_id] for item_id in sorted(inbox)]

    def read_journals(self, task_ids: Sequence[str]) -> dict[str, list[JournalEntry]]:
        """``read_journal`` of many tasks at once."""
        return {task_id: self.read_journal(task_id) for task_id in task_ids}

    def list_inboxes(self, task_ids: Sequence[str]) -> dict[str, list[InboxItem]]:
        """``list_inbox`` of many tasks at once."""
        return {task_id: self.list_inbox(task_id) for task_id in task_ids}

    # -- keyed state, workflow data, deterministic values -------------------------
    def get_key_state(self, key: str, now: float) -> str | None:
        """The state of key, None if missing or expired at now."""
        entry = self._key_states.get(key)
        if entry is None:
            return None
        state, expires = entry
        return state if key_state_alive(expires, now) else None

    def get_workflow_data(self, workflow_id: str, key: str) -> str | None:
        return self._workflow_data.get((workflow_id, key))

    def get_deterministic_value(self, workflow_id: str, key: str) -> str | None:
        return self._deterministic.get((workflow_id, key))

    # -- usage and nodes -------------------------------------------------------------
    def aggregate_tokens_by_thread(
        self, thread_id: str, include_active: bool, user_id: str | None = None
    ) -> dict[str, Any]:
        """Token usage of a thread's tasks (thread from each usage report).

        Only tasks in a terminal state count, unless include_active. Runs are
        distinct tasks; a report without a caller counts under "unknown".
        """
        rows = []
        for usage in self._usage.values():
            if usage.thread_id != thread_id:
                continue
            record = self._tasks.get(usage.task_id)
            if record is None or not (include_active or record.state.terminal):
                continue
            if user_id is not None and record.user_id != user_id:
                continue
            rows.append(
                (usage.task_id, usage.model, usage.caller, usage.input_tokens, usage.output_tokens)
            )
        return aggregate_usage(rows)

    def list_nodes(self, now: float) -> list[NodeRecord]:
        """Nodes whose lease holds at now, by start time then id."""
        return sorted(
            (node for node in self._nodes.values() if lease_holds(node.lease_expires, now)),
            key=lambda node: (node.started_at, node.node_id),
        )
