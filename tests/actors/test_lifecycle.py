"""The pure task lifecycle (actors.core._lifecycle), driven without trio.

Like h11's tests/test_state.py: plain synchronous tests of the table in
DESIGN.md "Task lifecycle", plus a hypothesis state machine that sends random
commands and Requests and checks the invariants every move must keep.
"""

from __future__ import annotations

import ast
import inspect

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import actors.core._lifecycle as lifecycle
from actors.core._errors import InvalidTransition, NotCancelable, RequestRejected
from actors.core._lifecycle import Command, RequestAction, Strategy, is_noop, on_request, transition
from storage import TERMINAL_STATES, TaskState

S = TaskState
C = Command

TASK_ID = "t-7f3"
NON_TERMINAL = sorted(frozenset(TaskState) - TERMINAL_STATES, key=lambda s: s.value)
TERMINAL = sorted(TERMINAL_STATES, key=lambda s: s.value)
#: Terminal states that refuse CANCEL with NotCancelable (cancel of cancelled is a no-op).
FINISHED = (S.COMPLETED, S.FAILED, S.REJECTED)
#: States in which a Request meets the task's multitask strategy.
BUSY = (S.PENDING, S.RUNNING, S.PAUSED)
WAITING = (S.INPUT_REQUIRED, S.AUTH_REQUIRED)


def outcome(state: TaskState, command: Command) -> TaskState | type[Exception]:
    """The new state, or the type of the error ``transition`` raises."""
    try:
        return transition(state, command)
    except InvalidTransition as exc:
        return type(exc)


# --------------------------------------------------------------------------
# The lifecycle table, row by row
# --------------------------------------------------------------------------


def test_start_moves_pending_to_running() -> None:
    assert transition(S.PENDING, C.START) is S.RUNNING


def test_pause_moves_running_to_paused() -> None:
    assert transition(S.RUNNING, C.PAUSE) is S.PAUSED
    assert not is_noop(S.RUNNING, C.PAUSE)


def test_pause_of_a_paused_task_is_a_noop() -> None:
    assert transition(S.PAUSED, C.PAUSE) is S.PAUSED
    assert is_noop(S.PAUSED, C.PAUSE)


def test_resume_moves_paused_to_running() -> None:
    assert transition(S.PAUSED, C.RESUME) is S.RUNNING


def test_only_resume_takes_a_paused_task_back_to_running() -> None:
    for command in Command:
        assert (outcome(S.PAUSED, command) is S.RUNNING) == (command is C.RESUME)


def test_resume_of_a_running_task_raises_naming_the_state() -> None:
    with pytest.raises(InvalidTransition) as info:
        transition(S.RUNNING, C.RESUME, TASK_ID)
    exc = info.value
    assert type(exc) is InvalidTransition
    assert exc.state == "running"
    assert exc.command == "resume"
    assert exc.task_id == TASK_ID
    message = str(exc)
    assert "in state running" in message
    assert "resume" in message
    assert TASK_ID in message


def test_stop_moves_running_to_stopped() -> None:
    assert transition(S.RUNNING, C.STOP) is S.STOPPED


def test_start_of_a_stopped_task_begins_a_new_run() -> None:
    state = transition(S.RUNNING, C.STOP)
    assert transition(state, C.START) is S.RUNNING


def test_stop_of_a_stopped_task_is_a_noop() -> None:
    assert transition(S.STOPPED, C.STOP) is S.STOPPED
    assert is_noop(S.STOPPED, C.STOP)


@pytest.mark.parametrize("state", [*BUSY, *WAITING])
def test_stop_aborts_the_current_request_from_every_open_state(state: TaskState) -> None:
    assert transition(state, C.STOP) is S.STOPPED


@pytest.mark.parametrize("state", NON_TERMINAL)
def test_cancel_from_every_non_terminal_state(state: TaskState) -> None:
    assert transition(state, C.CANCEL) is S.CANCELLED


def test_cancelled_pending_task_never_starts() -> None:
    state = transition(S.PENDING, C.CANCEL)
    with pytest.raises(InvalidTransition):
        transition(state, C.START)


def test_cancel_of_a_cancelled_task_is_a_noop() -> None:
    assert transition(S.CANCELLED, C.CANCEL) is S.CANCELLED
    assert is_noop(S.CANCELLED, C.CANCEL)


@pytest.mark.parametrize("state", FINISHED)
def test_cancel_of_a_finished_task_raises_not_cancelable(state: TaskState) -> None:
    with pytest.raises(NotCancelable) as info:
        transition(state, C.CANCEL, TASK_ID)
    assert isinstance(info.value, InvalidTransition)
    assert info.value.state == state.value
    assert info.value.task_id == TASK_ID
    assert state.value in str(info.value)


@pytest.mark.parametrize(
    ("ask", "waiting"), [(C.ASK_INPUT, S.INPUT_REQUIRED), (C.ASK_AUTH, S.AUTH_REQUIRED)]
)
def test_ask_waits_for_a_request_and_answer_resumes_running(
    ask: Command, waiting: TaskState
) -> None:
    assert transition(S.RUNNING, ask) is waiting
    assert transition(waiting, C.ANSWER) is S.RUNNING


@pytest.mark.parametrize("command", [C.ASK_INPUT, C.ASK_AUTH, C.ANSWER])
@pytest.mark.parametrize("state", [S.PENDING, S.PAUSED, S.STOPPED])
def test_ask_and_answer_need_a_running_or_waiting_task(state: TaskState, command: Command) -> None:
    with pytest.raises(InvalidTransition):
        transition(state, command)


def test_answer_of_a_running_task_is_refused() -> None:
    with pytest.raises(InvalidTransition):
        transition(S.RUNNING, C.ANSWER)


@pytest.mark.parametrize(("command", "end"), [(C.COMPLETE, S.COMPLETED), (C.FAIL, S.FAILED)])
def test_handler_outcome_ends_a_running_task(command: Command, end: TaskState) -> None:
    assert transition(S.RUNNING, command) is end


@pytest.mark.parametrize("command", [C.COMPLETE, C.FAIL])
@pytest.mark.parametrize("state", [s for s in TaskState if s is not S.RUNNING])
def test_complete_and_fail_only_from_running(state: TaskState, command: Command) -> None:
    with pytest.raises(InvalidTransition) as info:
        transition(state, command)
    assert not isinstance(info.value, NotCancelable)


def test_late_success_after_cancel_is_refused() -> None:
    state = transition(S.RUNNING, C.CANCEL)
    with pytest.raises(InvalidTransition):
        transition(state, C.COMPLETE)
    with pytest.raises(InvalidTransition):
        transition(state, C.FAIL)


def test_reject_only_before_the_task_runs() -> None:
    assert transition(S.PENDING, C.REJECT) is S.REJECTED
    for state in TaskState:
        if state is not S.PENDING:
            with pytest.raises(InvalidTransition):
                transition(state, C.REJECT)


@pytest.mark.parametrize("command", [c for c in Command if c is not C.CANCEL])
@pytest.mark.parametrize("state", TERMINAL)
def test_terminal_states_refuse_every_non_cancel_command(
    state: TaskState, command: Command
) -> None:
    with pytest.raises(InvalidTransition) as info:
        transition(state, command, TASK_ID)
    assert type(info.value) is InvalidTransition
    assert info.value.state == state.value
    assert "already finished" in str(info.value)


def test_every_state_and_command_is_decided() -> None:
    # Total: every pair either moves to a TaskState or raises InvalidTransition
    # (never KeyError or anything else).
    for state in TaskState:
        for command in Command:
            result = outcome(state, command)
            assert isinstance(result, TaskState) or issubclass(result, InvalidTransition)


def test_is_noop_only_for_the_documented_noops() -> None:
    noops = {(s, c) for s in TaskState for c in Command if is_noop(s, c)}
    assert noops == {(S.PAUSED, C.PAUSE), (S.STOPPED, C.STOP), (S.CANCELLED, C.CANCEL)}


def test_refused_command_is_not_a_noop() -> None:
    assert not is_noop(S.RUNNING, C.RESUME)
    assert not is_noop(S.COMPLETED, C.CANCEL)


# --------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", list(Strategy))
@pytest.mark.parametrize("state", WAITING)
def test_request_answers_a_waiting_task(state: TaskState, strategy: Strategy) -> None:
    assert on_request(state, strategy) is RequestAction.ANSWER


@pytest.mark.parametrize("strategy", list(Strategy))
def test_request_starts_a_new_run_of_a_stopped_task(strategy: Strategy) -> None:
    assert on_request(S.STOPPED, strategy) is RequestAction.START


@pytest.mark.parametrize("state", BUSY)
def test_request_to_a_busy_task_with_enqueue_waits(state: TaskState) -> None:
    assert on_request(state, Strategy.ENQUEUE) is RequestAction.QUEUE


@pytest.mark.parametrize("state", BUSY)
def test_request_to_a_busy_task_with_reject_is_rejected(state: TaskState) -> None:
    with pytest.raises(RequestRejected) as info:
        on_request(state, Strategy.REJECT, TASK_ID)
    assert isinstance(info.value, InvalidTransition)
    assert info.value.state == state.value
    assert info.value.task_id == TASK_ID
    assert state.value in str(info.value)


def test_request_to_a_running_task_with_interrupt_interrupts() -> None:
    assert on_request(S.RUNNING, Strategy.INTERRUPT) is RequestAction.INTERRUPT


def test_request_to_a_running_task_with_rollback_rolls_back() -> None:
    assert on_request(S.RUNNING, Strategy.ROLLBACK) is RequestAction.ROLLBACK


@pytest.mark.parametrize("strategy", [Strategy.INTERRUPT, Strategy.ROLLBACK])
def test_request_to_a_paused_task_waits_and_keeps_the_pause(strategy: Strategy) -> None:
    assert on_request(S.PAUSED, strategy) is RequestAction.QUEUE


@pytest.mark.parametrize("strategy", list(Strategy))
@pytest.mark.parametrize("state", TERMINAL)
def test_request_to_a_finished_task_raises_invalid_transition(
    state: TaskState, strategy: Strategy
) -> None:
    with pytest.raises(InvalidTransition) as info:
        on_request(state, strategy, TASK_ID)
    assert type(info.value) is InvalidTransition
    assert info.value.state == state.value
    assert "already finished" in str(info.value)


def enact(state: TaskState, action: RequestAction) -> TaskState:
    """The moves the actor makes for ``action`` (raises if the table refuses one)."""
    if action is RequestAction.ANSWER:
        return transition(state, C.ANSWER)
    if action is RequestAction.START:
        return transition(state, C.START)
    if action is RequestAction.QUEUE:
        return state
    # INTERRUPT / ROLLBACK: STOP the current run, then start a new one.
    return transition(transition(state, C.STOP), C.START)


def test_every_request_action_is_allowed_by_the_table() -> None:
    for state in TaskState:
        for strategy in Strategy:
            try:
                action = on_request(state, strategy)
            except InvalidTransition:
                continue
            after = enact(state, action)
            expected = state if action is RequestAction.QUEUE else S.RUNNING
            assert after is expected


# --------------------------------------------------------------------------
# Sans-IO
# --------------------------------------------------------------------------

#: What the lifecycle may import: the enum module, storage's records, its errors.
ALLOWED_IMPORTS = {"__future__", "enum", "storage", "_errors"}
IO_MODULES = {"trio", "asyncio", "anyio", "socket", "time", "os", "sqlite3", "threading"}


def test_lifecycle_imports_no_trio_and_no_io() -> None:
    assert "trio" not in lifecycle.__dict__
    source = inspect.getsource(lifecycle)
    assert "import trio" not in source
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").partition(".")[0])
    assert imported <= ALLOWED_IMPORTS
    assert not imported & IO_MODULES
    assert not any(
        getattr(value, "__name__", "").partition(".")[0] in IO_MODULES
        for value in vars(lifecycle).values()
        if inspect.ismodule(value)
    )


# --------------------------------------------------------------------------
# Random sequences of commands and Requests
# --------------------------------------------------------------------------


class LifecycleMachine(RuleBasedStateMachine):
    """Drives ``transition`` and ``on_request`` with random moves from any state."""

    def __init__(self) -> None:
        super().__init__()
        self.state = S.PENDING
        #: The terminal state the task reached, if any: it must never change.
        self.finished_as: TaskState | None = None

    @initialize(state=st.sampled_from(TaskState))
    def start_in(self, state: TaskState) -> None:
        self.state = state
        self.finished_as = state if state in TERMINAL_STATES else None

    def move(self, command: Command) -> None:
        before = self.state
        noop = is_noop(before, command)
        try:
            after = transition(before, command, TASK_ID)
        except NotCancelable as exc:
            assert command is C.CANCEL
            assert before in FINISHED
            self.check_refusal(exc, before, command, noop)
            return
        except InvalidTransition as exc:
            assert not isinstance(exc, RequestRejected)
            assert not (command is C.CANCEL and before in FINISHED)
            self.check_refusal(exc, before, command, noop)
            return
        assert isinstance(after, TaskState)
        assert noop == (after is before)
        # Pure: the same move gives the same answer again.
        assert transition(before, command) is after
        if before in TERMINAL_STATES:
            # Terminal states absorb: the only allowed move is the cancel no-op.
            assert (before, command, after) == (S.CANCELLED, C.CANCEL, S.CANCELLED)
        self.state = after
        if after in TERMINAL_STATES and self.finished_as is None:
            self.finished_as = after

    def check_refusal(
        self, exc: InvalidTransition, before: TaskState, command: Command, noop: bool
    ) -> None:
        assert exc.state == before.value
        assert exc.command == command.value
        assert exc.task_id == TASK_ID
        assert before.value in str(exc)
        assert not noop
        # The refusal changed nothing.
        assert self.state is before
        with pytest.raises(type(exc)):
            transition(before, command)

    @rule(command=st.sampled_from(Command))
    def send_command(self, command: Command) -> None:
        self.move(command)

    # Random commands are mostly refused; this rule walks the allowed paths deeper.
    @precondition(lambda self: self.state not in FINISHED)
    @rule(data=st.data())
    def send_allowed_command(self, data: st.DataObject) -> None:
        allowed = [c for c in Command if isinstance(outcome(self.state, c), TaskState)]
        self.move(data.draw(st.sampled_from(allowed)))

    @rule(strategy=st.sampled_from(Strategy))
    def send_request(self, strategy: Strategy) -> None:
        before = self.state
        try:
            action = on_request(before, strategy, TASK_ID)
        except RequestRejected as exc:
            assert before in BUSY
            assert strategy is Strategy.REJECT
            assert exc.state == before.value
        except InvalidTransition as exc:
            assert before in TERMINAL_STATES
            assert exc.state == before.value
        else:
            assert isinstance(action, RequestAction)
            assert before not in TERMINAL_STATES
            assert not (before in BUSY and strategy is Strategy.REJECT)
            # What the Request means is a move the table allows.
            enact(before, action)
        assert self.state is before

    @invariant()
    def state_is_a_task_state(self) -> None:
        assert isinstance(self.state, TaskState)

    @invariant()
    def terminal_state_never_changes(self) -> None:
        if self.finished_as is not None:
            assert self.state is self.finished_as


TestLifecycleMachine = LifecycleMachine.TestCase
TestLifecycleMachine.settings = settings(
    max_examples=200, stateful_step_count=50, deadline=None, database=None
)
