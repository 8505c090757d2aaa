"""Errors of the websocket client, by the protocol's error codes.

::

    ClientError (ActorsError)       an error reply (.code, .message), or a transport failure
    ├── NotFoundError               not_found, unknown_name
    ├── InvalidTransitionError      invalid_transition, not_cancelable, rejected
    ├── ClientConflictError         conflict (also importable as ConflictError)
    ├── BadRequestError             bad_json, bad_request, unknown_op, too_large, ...
    ├── AuthenticationError         unauthorized (or a 1008 close, an HTTP 401/403)
    ├── UnavailableError            unavailable
    └── ClientConnectionError       no server, or the connection dropped
    Lagged (SubscriptionLagged)     a subscription fell behind; resubscribe with .after
"""

from __future__ import annotations

from typing import Any

import trio_websocket

from ..core._errors import ActorsError, SubscriptionLagged
from ..core._wire import POLICY_VIOLATION, ErrorCode


class ClientError(ActorsError):
    """An error reply from the server, or a failure to talk to it.

    ``code`` is the protocol's stable error code (``not_found``,
    ``invalid_transition``, ...); ``message`` is the server's text.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class NotFoundError(ClientError, LookupError):
    """No such task (or another user's: ``not_found``), or no handler of that name
    (``unknown_name``)."""


class InvalidTransitionError(ClientError):
    """The task's lifecycle refused the request (``invalid_transition``,
    ``not_cancelable``, ``rejected``): e.g. resume a completed task."""


class ClientConflictError(ClientError):
    """The task id belongs to another user's task (``conflict``).

    Not ``storage.ConflictError`` (a compare-and-set on a task's state that
    found another state, inside the store); the old name of this one,
    ``actors.client.ConflictError``, stays importable as an alias (issue #18).
    """


#: The former name of ``ClientConflictError``, kept importable.
ConflictError = ClientConflictError


class BadRequestError(ClientError):
    """The server found the request malformed or over one of its limits."""


class AuthenticationError(ClientError):
    """The server refused the token, or wants one."""


class UnavailableError(ClientError):
    """The server cannot do it now (closing, store unreachable...): try again later."""


class ClientConnectionError(ClientError):
    """The server could not be reached, or the connection dropped."""

    def __init__(self, message: str, code: str = "connection") -> None:
        super().__init__(code, message)


#: The protocol's error codes (``actors.core._wire.ErrorCode``) and their error types.
ERRORS_BY_CODE: dict[str, type[ClientError]] = {
    ErrorCode.NOT_FOUND: NotFoundError,
    ErrorCode.UNKNOWN_NAME: NotFoundError,
    ErrorCode.INVALID_TRANSITION: InvalidTransitionError,
    ErrorCode.NOT_CANCELABLE: InvalidTransitionError,
    ErrorCode.REJECTED: InvalidTransitionError,
    ErrorCode.CONFLICT: ClientConflictError,
    ErrorCode.UNAUTHORIZED: AuthenticationError,
    ErrorCode.BAD_JSON: BadRequestError,
    ErrorCode.BAD_REQUEST: BadRequestError,
    ErrorCode.UNKNOWN_OP: BadRequestError,
    ErrorCode.TOO_LARGE: BadRequestError,
    ErrorCode.TOO_MANY_SUBSCRIPTIONS: BadRequestError,
    ErrorCode.UNKNOWN_SUBSCRIPTION: BadRequestError,
    ErrorCode.UNAVAILABLE: UnavailableError,
    ErrorCode.INTERNAL: ClientError,
}


class Lagged(SubscriptionLagged):
    """A subscription fell behind and was closed; subscribe again with ``after``.

    ``after`` is a seq for a one-task subscription (also ``resume_after``), or
    task id -> seq for an all-tasks one.
    """

    def __init__(self, task_id: str | None, after: int | dict[str, int]) -> None:
        super().__init__(task_id, after if isinstance(after, int) else 0)
        self.after = after


def error_from_reply(error: Any) -> ClientError:
    """The typed error for the ``error`` object of a reply (unknown codes: ClientError)."""
    if not isinstance(error, dict):
        return ClientError("error", str(error))
    code = str(error.get("code") or "error")
    message = str(error.get("message") or code)
    return ERRORS_BY_CODE.get(code, ClientError)(code, message)


def _find(exc: BaseException | None, kind: type[BaseException]) -> BaseException | None:
    """The first ``kind`` in exc, its groups and its causes."""
    seen = 0
    while exc is not None and seen < 16:
        if isinstance(exc, kind):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                found = _find(inner, kind)
                if found is not None:
                    return found
        exc = exc.__cause__
        seen += 1
    return None


def connect_error(url: str, exc: BaseException) -> ClientError:
    """Translate a failure to open the websocket into a one-line client error."""
    if isinstance(exc, trio_websocket.ConnectionRejected):
        if exc.status_code in (401, 403):
            body = (exc.body or b"").decode("utf-8", "replace").strip()
            return AuthenticationError(ErrorCode.UNAUTHORIZED, body or f"{url} refused the token")
        return ClientConnectionError(f"{url} refused the connection (HTTP {exc.status_code})")
    if _find(exc, ConnectionRefusedError) is not None:
        return ClientConnectionError(f"cannot connect to {url}: connection refused")
    if isinstance(exc, OSError):
        text = exc.strerror or str(exc) or type(exc).__name__
        return ClientConnectionError(f"cannot connect to {url}: {text}")
    return ClientConnectionError(f"cannot connect to {url}: {exc or type(exc).__name__}")


def closed_error(url: str, reason: trio_websocket.CloseReason | None) -> ClientError:
    """The error for a connection that closed under us."""
    if reason is None:
        return ClientConnectionError(f"the connection to {url} closed")
    text = f": {reason.reason}" if reason.reason else ""
    if reason.code == POLICY_VIOLATION:
        return AuthenticationError(ErrorCode.UNAUTHORIZED, f"{url} closed the connection{text}")
    return ClientConnectionError(
        f"the connection to {url} closed ({reason.code} {reason.name}){text}"
    )
