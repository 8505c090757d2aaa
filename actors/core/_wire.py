"""The websocket protocol's names, written once: error codes, op names, frame kinds.

The server (``actors.server``) and the client (``actors.client``) both
spell the protocol with these; neither owns it. Pure constants: no trio, no
websocket library.
"""

from __future__ import annotations

import enum
from typing import Final


class ErrorCode(enum.StrEnum):
    """Stable codes of error replies (``{"ok": false, "error": {"code", "message"}}``)."""

    #: The frame is not JSON text (binary, malformed, NaN or Infinity).
    BAD_JSON = "bad_json"
    #: The frame is JSON but not a valid request: not an object, a field missing,
    #: mistyped, out of range or unknown, text that cannot be stored, nested too
    #: deep (at any depth), ``after`` past the task's last event, or a non-JSON input.
    BAD_REQUEST = "bad_request"
    #: ``op`` names no operation.
    UNKNOWN_OP = "unknown_op"
    #: No valid token (the connection is then closed with 1008), or a second
    #: ``auth`` naming another user.
    UNAUTHORIZED = "unauthorized"
    #: No such task, or a task of another user (the two read the same).
    NOT_FOUND = "not_found"
    #: ``submit`` names a handler that is not registered (or a task's handler is unknown here).
    UNKNOWN_NAME = "unknown_name"
    #: ``submit`` with a ``task_id`` that another user's task has taken.
    #: (``usage`` of a thread shared with another user counts only the
    #: caller's tasks: no error.)
    CONFLICT = "conflict"
    #: The task's lifecycle refuses the request in its state (e.g. resume a completed task).
    INVALID_TRANSITION = "invalid_transition"
    #: ``cancel`` of a completed, failed or rejected task.
    NOT_CANCELABLE = "not_cancelable"
    #: ``send`` to a busy task whose strategy is ``reject``.
    REJECTED = "rejected"
    #: The frame is larger than the server's ``max_frame``.
    TOO_LARGE = "too_large"
    #: The connection already has ``max_subscriptions`` open subscriptions.
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    #: ``unsubscribe`` names no open subscription of this connection.
    UNKNOWN_SUBSCRIPTION = "unknown_subscription"
    #: The runtime is closing, another node runs the task, or the store is
    #: unreachable: try again later.
    UNAVAILABLE = "unavailable"
    #: A server bug; the message says nothing more (the server logs it).
    INTERNAL = "internal"


class Op(enum.StrEnum):
    """The ``op`` of a request frame."""

    AUTH = "auth"
    SUBMIT = "submit"
    SEND = "send"
    CANCEL = "cancel"
    SIGNAL = "signal"
    GET = "get"
    LIST = "list"
    HISTORY = "history"
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    USAGE = "usage"


class FrameKind(enum.StrEnum):
    """The ``op`` of a frame the server sends for a subscription (not a reply)."""

    #: ``{"op": "event", "sub", "event"}``: one event.
    EVENT = "event"
    #: ``{"op": "events", "sub", "events": [...]}``: events ready together.
    EVENTS = "events"
    #: ``{"op": "end", "sub"}``: a one-task subscription sent its terminal event.
    END = "end"
    #: ``{"op": "lagged", "sub", "resume_after"}``: closed; resubscribe after that.
    LAGGED = "lagged"


#: Frame kinds that carry a subscription's events rather than a reply.
EVENT_FRAME_KINDS: Final = frozenset(kind.value for kind in FrameKind)

#: The websocket close code of a missing or refused token (RFC 6455 "policy violation").
POLICY_VIOLATION: Final = 1008
#: The close code of a server that is shutting down ("going away").
GOING_AWAY: Final = 1001
#: The close code after a server bug ("internal error").
INTERNAL_ERROR: Final = 1011
