"""The pending writes: what a writer holds while its write waits for a batch.

A ``PendingWrite`` is queued by the storage actor (``_writer.py``) and
resolved, in commit order, when its batch is applied: ``_QueuedCommand``
for any command, ``TaskDraft`` for the writes of a task that keep joining
one command while it waits.

A ``TaskDraft`` is a ``TaskWrite`` that stays open while it waits in the
queue: the task actor that owns it keeps adding to it (events, journal
entries, a state change...) until the storage actor takes it into a batch
and seals it. So a task that emits a thousand events while the writer is
busy costs one command, not a thousand: coalescing happens exactly when
the store falls behind (issue #5).

A writer that waits parks without a coroutine of its own (``_Parked``, one
shared message ``_PARK``, one shared wake-up ``_WOKEN``): a wait lives as
long as a batch, six times a task, and every object it keeps is one more
for the collector to walk (issue #5).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import outcome
import trio

from .._compat import park_message
from ..model._commands import Command, JournalWrite, TaskWrite
from ..model._errors import StorageError
from ..model._records import EventLike, TaskState, UsageRecord

_NOT_DONE: Any = object()
T = TypeVar("T")


def _refuse_abort(_: Any) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED


class _Ready:
    """An awaitable that is done at once (no checkpoint): what an
    ``await``-able API returns when there is nothing to wait for, without
    making a coroutine (``PendingWrite.wait_quietly``, the actor lock)."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return iter(())  # type: ignore[return-value]


READY = _Ready()


def _park_message() -> object | None:
    """trio's message "park this task until it is rescheduled", made once.

    ``trio.lowlevel.wait_task_rescheduled`` makes a coroutine, a generator,
    and this message with its ``__dict__`` for every wait: four objects that
    live as long as the wait (a batch), six times a task, and that the
    collector walks (issue #5). The message is immutable and our abort
    function is always the same, so one serves every wait. It is trio's
    private class (``storage._compat``): if it is gone, waits go through the
    public function.
    """
    return park_message(_refuse_abort)


_PARK = _park_message()
#: What a parked writer is woken with: one outcome for all (trio's
#: ``reschedule`` makes a new ``Value(None)`` each time otherwise). Only
#: ``_Parked`` receives it, and it never unwraps it.
_WOKEN = outcome.Value(None)


class _Parked(Generator[Any, Any, None]):
    """``await`` it: park the current task until rescheduled.

    Its own iterator, and one object for every wait: the first step hands
    trio the shared message, and the step that resumes the task (a ``send``
    of what it was rescheduled with) ends the wait. No generator per wait
    (issue #5: six a task, each alive as long as its wait, long enough for
    the collector to move it to an older generation and walk it again).
    """

    __slots__ = ()

    def __await__(self) -> _Parked:
        return self

    def send(self, sent: Any) -> Any:
        if sent is None:  # the first step
            return _PARK
        if sent is not _WOKEN:
            sent.unwrap()  # an Error outcome raises here
        raise StopIteration

    def throw(self, typ: Any, value: Any = None, traceback: Any = None) -> Any:
        raise typ if value is None else value


_PARKED = _Parked()


class PendingWrite:
    """A queued write and, once its batch is applied, its outcome.

    Made by ``StorageActor.submit_nowait`` (a command) or ``open_draft`` (a
    ``TaskDraft``). The slots are the subclasses': a TaskDraft is a
    TaskWrite too, and two bases cannot both lay slots out.
    """

    if not TYPE_CHECKING:  # (mypy would refuse the subclasses' slots here)
        __slots__ = ()
    _outcome: object
    _waiters: trio.lowlevel.Task | list[trio.lowlevel.Task] | None
    #: Called with the outcome (result or StorageError) when the batch is
    #: applied, in commit order, before any waiter wakes: how a
    #: fire-and-forget writer learns of it without keeping the write.
    on_outcome: Callable[[object], None] | None

    @property
    def command(self) -> Command:
        raise NotImplementedError

    def _take(self) -> Command:
        """The command, as the storage actor takes it into a batch."""
        return self.command

    def _resolve(self, outcome: object) -> None:
        self._outcome = outcome
        if self.on_outcome is not None:
            self.on_outcome(outcome)
        waiters, self._waiters = self._waiters, None
        if waiters is None:
            return
        if _PARK is None:  # (parked with trio's public wait: a Value each)
            for task in waiters if isinstance(waiters, list) else (waiters,):
                trio.lowlevel.reschedule(task)
        elif isinstance(waiters, list):
            for task in waiters:
                trio.lowlevel.reschedule(task, _WOKEN)
        else:
            trio.lowlevel.reschedule(waiters, _WOKEN)

    @property
    def done(self) -> bool:
        """Whether the batch holding this write has been applied (or refused)."""
        return self._outcome is not _NOT_DONE

    def outcome_nowait(self) -> object:
        """The outcome of a done write: its result, or raise its StorageError."""
        assert self.done
        if isinstance(self._outcome, StorageError):
            raise self._outcome
        return self._outcome

    def wait_quietly(self) -> Awaitable[None]:
        """``await`` it: wait until the write is applied, without raising its error.

        Not interruptible: a cancelled caller goes on waiting for the (short)
        batch and sees the cancellation at its next checkpoint. Returns at
        once, without a checkpoint, if the write is done already. (Not a
        coroutine function: the awaitable it returns is trio's own wait, so
        a waiting task holds one coroutine less, and the collector walks
        one object less per waiting task.)
        """
        if self._outcome is _NOT_DONE:
            self._register(trio.lowlevel.current_task())
            if _PARK is not None:
                return _PARKED
            return trio.lowlevel.wait_task_rescheduled(_refuse_abort)  # noqa: ASYNC105
        return READY

    def _register(self, task: trio.lowlevel.Task) -> None:
        waiters = self._waiters
        # One waiter is the rule (the writer): no list for it.
        if waiters is None:
            self._waiters = task
        elif isinstance(waiters, list):
            waiters.append(task)
        else:
            self._waiters = [waiters, task]

    async def wait(self) -> object:
        """Wait until the write is applied; return its result or raise its error.

        The wait is not interruptible: a queued write is applied whatever the
        caller does, and the caller learns the truth.
        """
        await self.wait_quietly()
        return self.outcome_nowait()


class _QueuedCommand(PendingWrite):
    """A queued command (any but a draft)."""

    __slots__ = ("_command", "_outcome", "_waiters", "on_outcome")

    def __init__(self, command: Command) -> None:
        self._command = command
        self._outcome = _NOT_DONE
        self._waiters = None
        self.on_outcome = None

    @property
    def command(self) -> Command:
        return self._command


def _grown(held: Sequence[T], more: Sequence[T]) -> Sequence[T]:
    """A draft's entries with more added: the first part's as they came
    (one part is the rule: no list for it), a list once more come."""
    if not held:
        return more if isinstance(more, tuple) else tuple(more)  # (never the caller's list)
    if isinstance(held, list):
        held.extend(more)
        return held
    return [*held, *more]


#: The one-state sets a draft leaves the task in, made once.
_ONLY = {state: frozenset({state}) for state in TaskState}

#: The fields of a TaskWrite that join a draft without closing it.
_OPEN_FIELDS = frozenset({"events", "journal", "usage", "progress", "state"})


class TaskDraft(TaskWrite, PendingWrite):
    """A ``TaskWrite`` of one task that grows until the storage actor takes it.

    Made by ``StorageActor.open_draft`` with the fence of its first part
    (epoch, expected states). Its owner adds parts with ``add`` while
    ``accepts(expect)`` says it may: the draft is not taken yet, not closed,
    not full, and the part expects the states the draft leaves the task in.
    A part's events, journal entries, usage, progress and state change join
    the draft; a part with any other field (input, run, inbox, result,
    exception, error, release, discard_run) closes it.

    The draft is one command, and the command is the draft itself (no copy
    when it is taken): applied or refused as a whole, which is what its
    parts would each have been (every part expects what the one before it
    leaves, so a fence or state check that refuses the first would refuse
    them all).
    """

    __slots__ = ("_closed", "_leaves", "_outcome", "_taken", "_waiters", "on_outcome")

    events: list[EventLike]

    #: Events after which a draft takes no more (the next part opens a new one).
    max_events = 4096

    def __init__(
        self, task_id: str, epoch: int | None, expect: frozenset[TaskState] | None
    ) -> None:
        # (journal and usage stay the empty tuple until a part brings some:
        # most drafts have none, and a list is one more object to collect)
        super().__init__(task_id, epoch, expect, events=[])
        self._outcome = _NOT_DONE
        self._waiters = None
        self.on_outcome = None
        self._leaves = expect
        self._closed = False
        self._taken = False

    @property
    def command(self) -> Command:
        return self

    def accepts(self, expect: frozenset[TaskState] | None) -> bool:
        """Whether a part that expects these states may join."""
        return (
            not self._taken
            and not self._closed
            and (expect is self._leaves or expect == self._leaves)
            and len(self.events) < self.max_events
        )

    @property
    def empty(self) -> bool:
        """Whether no part was added yet."""
        return not (
            self.events or self.journal or self.usage or self.state or self.progress or self._closed
        )

    def add(
        self,
        events: Sequence[EventLike] = (),
        *,
        journal: Sequence[JournalWrite] = (),
        usage: Sequence[UsageRecord] = (),
        progress: tuple[float, float | None] | None = None,
        state: TaskState | None = None,
        **rest: Any,
    ) -> None:
        """Append a part (check ``accepts`` first). ``rest``: the TaskWrite
        fields that close the draft (input, run, inbox_add, release...)."""
        assert self.accepts(self._leaves)
        if events:
            self.events.extend(events)
        if journal:
            self.journal = _grown(self.journal, journal)
        if usage:
            self.usage = _grown(self.usage, usage)
        if progress is not None:
            self.progress = progress
        if state is not None:
            self.state = state
            self._leaves = _ONLY[state]
        for name, value in rest.items():
            if value is not None and value != ():
                assert name not in _OPEN_FIELDS and hasattr(self, name), name
                setattr(self, name, value)
                self._closed = True

    def __reduce__(self) -> tuple[object, ...]:
        # Pickled (for the SQLite writer process) as the TaskWrite it is.
        return (TaskWrite, tuple(getattr(self, field.name) for field in attrs.fields(TaskWrite)))

    def _take(self) -> Command:
        self._taken = True
        return self
