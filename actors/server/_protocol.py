"""The websocket protocol, sans-IO: request frames in, reply and event frames out.

Theory of operation
-------------------
Nothing here does I/O or imports trio: ``parse_frame`` turns one websocket
message into a ``RequestFrame`` (the echoed ``id`` and one typed operation)
or raises ``ProtocolError`` with a stable ``ErrorCode``; the ``*_frame``
functions build the JSON text of everything the server sends. The server
(``_server.py``) owns the sockets and the runtime calls.

Validation is strict, so a client bug shows up as an error reply rather
than as a surprise: a frame is a JSON object (at most ``MAX_DEPTH`` levels
deep, no NaN or Infinity) with a string ``op`` naming one of ``OPERATIONS``
and an optional ``id`` (a string or an integer, echoed in the reply). The
other keys are the operation's fields, structured by a strict derivative of
THE converter (``storage.converter``): a string is never coerced from a
number, a bool is not an int, a list is not a string, and an unknown field
is an error. Every string (and object key) must be text the store can keep,
and every seq fit in 64 bits (``storage.model.storable_json``, issue #17):
a lone surrogate such as ``"\\ud800"`` is refused here, naming its field,
rather than failing in the store.

The frames out (replies, errors, events) are built in ``_frames.py``, and
re-exported here. The protocol's names (error codes, ops, frame kinds) are
``actors.core._wire``'s, shared with the client.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import attrs
import cattrs
from cattrs.v import format_exception

import storage
from storage import InvalidValueError, StorageError, TaskState
from storage.model import MAX_INT, storable_json

from ..core._errors import (
    ActorsError,
    ActorStoppedError,
    InvalidTransition,
    NotCancelable,
    RequestRejected,
    RuntimeClosedError,
    TaskExists,
    TaskNotFound,
    TaskOwnedElsewhere,
    UnknownTaskName,
)
from ..core._lifecycle import Strategy
from ..core._messages import Signal
from ..core._wire import ErrorCode as ErrorCode
from ..core._wire import Op
from ._frames import EncodedEvents as EncodedEvents
from ._frames import EventEncoder as EventEncoder
from ._frames import RequestId as RequestId
from ._frames import encode_event as encode_event
from ._frames import encode_stored as encode_stored
from ._frames import end_frame as end_frame
from ._frames import error_frame as error_frame
from ._frames import events_frame as events_frame
from ._frames import lagged_frame as lagged_frame
from ._frames import reply_frame as reply_frame
from ._frames import to_wire as to_wire

if TYPE_CHECKING:
    pass

#: Deepest nesting of arrays and objects a request frame may have.
MAX_DEPTH: Final = 64
#: Most entries in the ``after`` object of an all-tasks ``subscribe``.
MAX_AFTER_TASKS: Final = 1024
#: Largest ``limit`` of ``list`` and ``history``.
MAX_LIMIT: Final = 10_000


class ProtocolError(ActorsError):
    """A request the server refuses before (or instead of) running it."""

    def __init__(self, code: ErrorCode, message: str, request_id: RequestId = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        #: The request's id, when it could be read.
        self.request_id = request_id


# -- operations ---------------------------------------------------------------------
class _Invalid(ValueError):
    """A field has the wrong JSON type or is out of range (message: what was expected)."""


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and not 1 <= value <= MAX_LIMIT:
        raise _Invalid(f"{attribute.name}: expected 1 to {MAX_LIMIT}")


def _not_negative(instance: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if value < 0:
        raise _Invalid(f"{attribute.name}: expected a seq >= 0")
    if value > MAX_INT:
        raise _Invalid(f"{attribute.name}: expected a seq <= {MAX_INT}")


def _after_bounds(instance: Any, attribute: attrs.Attribute[Any], value: After) -> None:
    if isinstance(value, int):
        _not_negative(instance, attribute, value)
        return
    if value is not None:
        if len(value) > MAX_AFTER_TASKS:
            raise _Invalid(f"after: expected at most {MAX_AFTER_TASKS} tasks")
        if any(seq < 0 for seq in value.values()):
            raise _Invalid("after: expected seqs >= 0")
        if any(seq > MAX_INT for seq in value.values()):
            raise _Invalid(f"after: expected seqs <= {MAX_INT}")


#: ``after`` of ``subscribe``: a seq (one task), or task id -> seq (all tasks).
After: TypeAlias = int | dict[str, int] | None


@attrs.frozen
class Auth:
    """``auth``: authenticate the connection (the first frame, unless a header did)."""

    token: str


@attrs.frozen
class Submit:
    """``submit``: start a task; a ``task_id`` makes it idempotent."""

    name: str
    input: Any
    task_id: str | None = None
    thread_id: str | None = None
    metadata: dict[str, Any] | None = None
    #: The multitask strategy for this task (default: the handler's).
    strategy: Strategy | None = None


@attrs.frozen
class Send:
    """``send``: a Request (new input) into a task's mailbox."""

    task_id: str
    input: Any


@attrs.frozen
class Cancel:
    """``cancel``: cancel a task and its children."""

    task_id: str
    reason: str | None = None


@attrs.frozen
class SignalTask:
    """``signal``: STOP, PAUSE or RESUME a task."""

    task_id: str
    signal: Signal


@attrs.frozen
class Get:
    """``get``: a task's info."""

    task_id: str


@attrs.frozen
class ListTasks:
    """``list``: the user's tasks, oldest first, filtered."""

    thread_id: str | None = None
    states: tuple[TaskState, ...] | None = None
    limit: int | None = attrs.field(default=None, validator=_positive)


@attrs.frozen
class History:
    """``history``: a task's committed events with seq > after."""

    task_id: str
    after: int = attrs.field(default=0, validator=_not_negative)
    limit: int | None = attrs.field(default=None, validator=_positive)


@attrs.frozen
class Subscribe:
    """``subscribe``: one task's events after ``after`` (history, then live, then
    ``end``), or with no task id the live events of all the user's tasks (after
    replaying, for each task named in an ``after`` object, its events after that seq).
    """

    task_id: str | None = None
    after: After = attrs.field(default=None, validator=_after_bounds)

    def __attrs_post_init__(self) -> None:
        if self.task_id is not None and isinstance(self.after, dict):
            raise _Invalid("after: expected a seq (an integer) when subscribing to one task")
        if self.task_id is None and isinstance(self.after, int) and self.after != 0:
            raise _Invalid("after: expected an object {task_id: seq} (or 0) for all tasks")


@attrs.frozen
class Unsubscribe:
    """``unsubscribe``: close a subscription of this connection."""

    sub: str


@attrs.frozen
class Usage:
    """``usage``: token usage of a thread."""

    thread_id: str
    #: Also count tasks that are not finished.
    include_active: bool = False


Operation: TypeAlias = (
    Auth
    | Submit
    | Send
    | Cancel
    | SignalTask
    | Get
    | ListTasks
    | History
    | Subscribe
    | Unsubscribe
    | Usage
)

#: Operation classes by their ``op`` name.
OPERATIONS: Final[Mapping[str, type[Operation]]] = {
    Op.AUTH: Auth,
    Op.SUBMIT: Submit,
    Op.SEND: Send,
    Op.CANCEL: Cancel,
    Op.SIGNAL: SignalTask,
    Op.GET: Get,
    Op.LIST: ListTasks,
    Op.HISTORY: History,
    Op.SUBSCRIBE: Subscribe,
    Op.UNSUBSCRIBE: Unsubscribe,
    Op.USAGE: Usage,
}


@attrs.frozen
class RequestFrame:
    """One parsed request: its ``id`` and its operation."""

    id: RequestId
    op: Operation


# -- parsing ------------------------------------------------------------------------
def _strict(expected: type, label: str) -> Callable[[Any, Any], Any]:
    def structure(value: Any, _: Any) -> Any:
        if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
            raise _Invalid(f"expected {label}")
        return value

    return structure


def _one_of(enum_type: type[enum.Enum]) -> Callable[[Any, Any], Any]:
    names = ", ".join(str(member.value) for member in enum_type)

    def structure(value: Any, _: Any) -> Any:
        try:
            return enum_type(value)
        except ValueError:
            raise _Invalid(f"expected one of {names}") from None

    return structure


def _states(value: Any, _: Any) -> tuple[TaskState, ...]:
    if not isinstance(value, list):
        raise _Invalid("expected a list of states")
    state = _one_of(TaskState)
    return tuple(state(item, TaskState) for item in value)


def _after(value: Any, _: Any) -> After:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, dict) and all(
        isinstance(seq, int) and not isinstance(seq, bool) for seq in value.values()
    ):
        return dict(value)
    raise _Invalid("expected a seq (an integer) or an object {task_id: seq}")


def _format(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, _Invalid):
        return str(exc)
    return format_exception(exc, type_)


def _problems(exc: cattrs.BaseValidationError, op: str) -> str:
    """ "submit.name: expected a string; ..." from cattrs' "expected a string @ submit.name"."""
    problems = []
    for line in cattrs.transform_error(exc, path=op, format_exception=_format):
        text, _, path = line.rpartition(" @ ")
        if ": " in text and path == op:
            problems.append(f"{op}.{text}")  # a validator names its field itself
        else:
            problems.append(f"{path}: {text}")
    return "; ".join(problems)


def _make_wire_converter() -> cattrs.Converter:
    """THE converter (``storage.converter``), made strict for untrusted JSON."""
    wire = storage.converter.copy()
    wire.register_structure_hook(str, _strict(str, "a string"))
    wire.register_structure_hook(int, _strict(int, "an integer"))
    wire.register_structure_hook(bool, _strict(bool, "true or false"))
    wire.register_structure_hook_func(lambda t: t == dict[str, Any], _strict(dict, "an object"))
    for enum_type in (Signal, Strategy, TaskState):
        wire.register_structure_hook(enum_type, _one_of(enum_type))
    wire.register_structure_hook_func(lambda t: t == tuple[TaskState, ...], _states)
    wire.register_structure_hook_func(lambda t: t == After, _after)
    return wire


_wire = _make_wire_converter()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _depth(value: Any) -> int:
    """Nesting depth of a JSON value (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            depth += 1
            deepest = max(deepest, depth)
            if depth > MAX_DEPTH:
                break
            stack.extend((child, depth) for child in item)
    return deepest


_TOO_DEEP: Final = f"nested deeper than {MAX_DEPTH} levels"

#: A ``\u`` escape of a surrogate (D800 to DFFF), or a surrogate itself.
_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]|[\ud800-\udfff]")


def _may_hold_surrogates(message: str) -> bool:
    """Whether a frame's text may parse into a string the store cannot keep.

    A lone surrogate (no UTF-8 form) can only come from a ``\\uD800``-style
    escape (a websocket text frame is valid UTF-8), so one regex over the
    frame spares walking every field of the frames that have none (issue #17).
    It may say yes for nothing (an escaped backslash, a valid pair): the walk
    then decides.
    """
    return _SURROGATE.search(message) is not None


def frame_size(message: str | bytes) -> int:
    """Size of a message in bytes (text as UTF-8)."""
    if isinstance(message, bytes):
        return len(message)
    if message.isascii():
        return len(message)
    return len(message.encode("utf-8", "surrogatepass"))


def parse_frame(message: str | bytes, *, max_frame: int | None = None) -> RequestFrame:
    """Parse one websocket message into a request.

    Args:
        message: the message as the websocket library delivers it.
        max_frame: the largest accepted message in bytes (None: no limit here).

    Raises:
        ProtocolError: TOO_LARGE, BAD_JSON, BAD_REQUEST or UNKNOWN_OP, with the
            request's id when it could be read.
    """
    if max_frame is not None and frame_size(message) > max_frame:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"frame larger than {max_frame} bytes")
    if isinstance(message, bytes):
        raise ProtocolError(ErrorCode.BAD_JSON, "binary frames are not accepted: send JSON text")
    try:
        raw = json.loads(message, parse_constant=_reject_constant)
    except RecursionError:
        # Nested deeper than json's parser recurses (about 1,000 levels): too
        # deep, like anything over MAX_DEPTH, whatever else may be wrong with it.
        raise ProtocolError(ErrorCode.BAD_REQUEST, _TOO_DEEP) from None
    except ValueError as exc:
        raise ProtocolError(ErrorCode.BAD_JSON, f"malformed JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "a request is a JSON object")
    request_id = raw.get("id")
    if not (request_id is None or isinstance(request_id, str | int)) or isinstance(
        request_id, bool
    ):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "id: expected a string or an integer")
    if _depth(raw) > MAX_DEPTH:
        raise ProtocolError(ErrorCode.BAD_REQUEST, _TOO_DEEP, request_id)
    name = raw.get("op")
    if name is None:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "op: required field missing", request_id)
    if not isinstance(name, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "op: expected a string", request_id)
    op_type = OPERATIONS.get(name)
    if op_type is None:
        known = ", ".join(OPERATIONS)
        raise ProtocolError(
            ErrorCode.UNKNOWN_OP, f"unknown op {name!r}; the ops are {known}", request_id
        )
    fields = {key: value for key, value in raw.items() if key not in ("id", "op")}
    try:
        op = _wire.structure(fields, op_type)
    except cattrs.BaseValidationError as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, _problems(exc, name), request_id) from None
    if _may_hold_surrogates(message):
        try:
            for key, value in fields.items():
                storable_json(f"{name}.{key}", value, max_depth=MAX_DEPTH)
        except InvalidValueError as exc:
            raise ProtocolError(ErrorCode.BAD_REQUEST, str(exc), request_id) from None
    return RequestFrame(request_id, op)


# -- errors of the runtime ------------------------------------------------------------
#: Runtime errors and their codes, most specific first (the first match wins).
ERROR_CODES: Final[Sequence[tuple[type[BaseException], ErrorCode]]] = (
    (TaskNotFound, ErrorCode.NOT_FOUND),
    (UnknownTaskName, ErrorCode.UNKNOWN_NAME),
    (TaskExists, ErrorCode.CONFLICT),
    (NotCancelable, ErrorCode.NOT_CANCELABLE),
    (RequestRejected, ErrorCode.REJECTED),
    (InvalidTransition, ErrorCode.INVALID_TRANSITION),
    (TaskOwnedElsewhere, ErrorCode.UNAVAILABLE),
    (RuntimeClosedError, ErrorCode.UNAVAILABLE),
    (ActorStoppedError, ErrorCode.UNAVAILABLE),
    (storage.BackendUnavailableError, ErrorCode.UNAVAILABLE),
    (storage.StorageClosedError, ErrorCode.UNAVAILABLE),
    # Text or a number the store cannot keep (a runtime or store edge refused it).
    (InvalidValueError, ErrorCode.BAD_REQUEST),
    # Raised by the runtime for an input or metadata that has no JSON form.
    (TypeError, ErrorCode.BAD_REQUEST),
)


def error_code(exc: BaseException) -> tuple[ErrorCode, str]:
    """The code and message of an error reply for an exception a runtime call raised.

    An exception with no entry in ``ERROR_CODES`` (a bug, or a store failure)
    is ``internal``, and its text is not shown: the server logs it.
    """
    if isinstance(exc, ProtocolError):
        return exc.code, exc.message
    for error_type, code in ERROR_CODES:
        if isinstance(exc, error_type):
            return code, str(exc)
    if isinstance(exc, StorageError):
        return ErrorCode.INTERNAL, "the store failed; see the server log"
    return ErrorCode.INTERNAL, "internal server error; see the server log"
