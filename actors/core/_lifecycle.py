"""The task lifecycle as a pure state machine (no trio, no I/O, no clock).

Theory of operation
-------------------
A task is in one ``TaskState``. Everything that may move it is a ``Command``
(what the actor or a caller wants) and ``transition(state, command)`` says
where it goes, or raises a typed error and leaves the state as it was (the
state is a value: nothing is mutated). The task actor is the only driver of
this table at run time; every transition it decides is then written to the
store as a compare-and-set on the state, so two nodes can never both move a
task.

Requests (a new input for the task) are not transitions by themselves:
``on_request(state, strategy)`` tells the actor what a Request means in a
state (answer a pending ``ctx.ask``, start a new run, wait in the inbox,
interrupt or roll back the current run, or be refused).

No-ops are explicit: PAUSE of a paused task, STOP of a stopped task and
CANCEL of a cancelled task return the same state (the caller may skip the
write). Terminal states absorb: nothing leaves them.
"""

from __future__ import annotations

import enum

from storage import TERMINAL_STATES, TaskState

from ._errors import InvalidTransition, NotCancelable, RequestRejected


class Command(enum.Enum):
    """What can move a task."""

    # Identity hash, as TaskState's: the transition table is keyed by both.
    __hash__ = object.__hash__

    #: The actor starts the handler: a pending task's first run, or a new run
    #: of a stopped task.
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    STOP = "stop"
    CANCEL = "cancel"
    #: The handler awaits ``ctx.ask(...)`` and no input is waiting.
    ASK_INPUT = "ask_input"
    #: The handler awaits ``ctx.ask(..., auth=True)`` and no input is waiting.
    ASK_AUTH = "ask_auth"
    #: A Request answers the pending ask.
    ANSWER = "answer"
    #: The handler returned.
    COMPLETE = "complete"
    #: The handler raised for the last time, or timed out.
    FAIL = "fail"
    #: The task is refused before it runs.
    REJECT = "reject"


class Strategy(enum.StrEnum):
    """What a Request does to a busy task (pending, running or paused)."""

    # Hashed as its value, which it equals (Enum hashes the member's name).
    __hash__ = str.__hash__

    #: Wait in the inbox: answer the next ``ctx.ask``, or start the next run after a STOP.
    ENQUEUE = "enqueue"
    #: Refuse it with RequestRejected.
    REJECT = "reject"
    #: STOP the current run and start a new one with the new input (steps replay).
    INTERRUPT = "interrupt"
    #: STOP the current run, discard the steps it recorded, start a new one.
    ROLLBACK = "rollback"


class RequestAction(enum.Enum):
    """What the actor does with a Request."""

    #: Answer the handler's pending ask (input_required / auth_required).
    ANSWER = "answer"
    #: Start a new run with this input (stopped task).
    START = "start"
    #: Keep it in the inbox for the next ask or run.
    QUEUE = "queue"
    INTERRUPT = "interrupt"
    ROLLBACK = "rollback"


S = TaskState
C = Command

#: (state, command) -> new state, for every allowed move.
TRANSITIONS: dict[tuple[TaskState, Command], TaskState] = {
    (S.PENDING, C.START): S.RUNNING,
    (S.PENDING, C.PAUSE): S.PAUSED,
    (S.PENDING, C.STOP): S.STOPPED,
    (S.PENDING, C.CANCEL): S.CANCELLED,
    (S.PENDING, C.REJECT): S.REJECTED,
    (S.RUNNING, C.PAUSE): S.PAUSED,
    (S.RUNNING, C.STOP): S.STOPPED,
    (S.RUNNING, C.CANCEL): S.CANCELLED,
    (S.RUNNING, C.ASK_INPUT): S.INPUT_REQUIRED,
    (S.RUNNING, C.ASK_AUTH): S.AUTH_REQUIRED,
    (S.RUNNING, C.COMPLETE): S.COMPLETED,
    (S.RUNNING, C.FAIL): S.FAILED,
    (S.PAUSED, C.PAUSE): S.PAUSED,
    (S.PAUSED, C.RESUME): S.RUNNING,
    (S.PAUSED, C.STOP): S.STOPPED,
    (S.PAUSED, C.CANCEL): S.CANCELLED,
    (S.INPUT_REQUIRED, C.ANSWER): S.RUNNING,
    (S.INPUT_REQUIRED, C.STOP): S.STOPPED,
    (S.INPUT_REQUIRED, C.CANCEL): S.CANCELLED,
    (S.AUTH_REQUIRED, C.ANSWER): S.RUNNING,
    (S.AUTH_REQUIRED, C.STOP): S.STOPPED,
    (S.AUTH_REQUIRED, C.CANCEL): S.CANCELLED,
    (S.STOPPED, C.START): S.RUNNING,
    (S.STOPPED, C.STOP): S.STOPPED,
    (S.STOPPED, C.CANCEL): S.CANCELLED,
    (S.CANCELLED, C.CANCEL): S.CANCELLED,
}

#: Why a refused move is refused, where a reason helps the caller.
_WHY: dict[tuple[TaskState, Command], str] = {
    (S.RUNNING, C.RESUME): "it is not paused",
    (S.PENDING, C.RESUME): "it is not paused",
    (S.INPUT_REQUIRED, C.PAUSE): "it is waiting for input; send it a Request or stop it",
    (S.AUTH_REQUIRED, C.PAUSE): "it is waiting for authorization; send it a Request or stop it",
    (S.STOPPED, C.PAUSE): "it is stopped; send it a Request to run it again",
    (S.STOPPED, C.RESUME): "it is stopped; send it a Request to run it again",
}


def transition(state: TaskState, command: Command, task_id: str | None = None) -> TaskState:
    """The state ``command`` moves ``state`` to.

    Raises:
        NotCancelable: CANCEL of a completed, failed or rejected task.
        InvalidTransition: any other move the lifecycle does not allow.
    """
    try:
        return TRANSITIONS[state, command]
    except KeyError:
        pass
    if command is C.CANCEL and state in TERMINAL_STATES:
        raise NotCancelable("cancel", state.value, task_id, "it already finished")
    why = _WHY.get((state, command))
    if why is None and state in TERMINAL_STATES:
        why = "it already finished"
    raise InvalidTransition(command.value, state.value, task_id, why or "")


def is_noop(state: TaskState, command: Command) -> bool:
    """Whether ``command`` leaves ``state`` as it is (and so needs no write)."""
    return TRANSITIONS.get((state, command)) is state


def on_request(state: TaskState, strategy: Strategy, task_id: str | None = None) -> RequestAction:
    """What a Request means for a task in ``state`` with ``strategy``.

    Raises:
        RequestRejected: the task is busy and its strategy is REJECT.
        InvalidTransition: the task is finished.
    """
    if state in (S.INPUT_REQUIRED, S.AUTH_REQUIRED):
        return RequestAction.ANSWER
    if state is S.STOPPED:
        return RequestAction.START
    if state in TERMINAL_STATES:
        raise InvalidTransition("send to", state.value, task_id, "it already finished")
    # pending, running or paused: busy
    if strategy is Strategy.REJECT:
        raise RequestRejected(
            "send to", state.value, task_id, "it is busy and its strategy is reject"
        )
    if state is S.PAUSED or strategy is Strategy.ENQUEUE:
        # A paused task keeps its pause: interrupt and rollback wait like enqueue.
        return RequestAction.QUEUE
    if strategy is Strategy.INTERRUPT:
        return RequestAction.INTERRUPT
    return RequestAction.ROLLBACK
