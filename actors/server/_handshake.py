"""Accepting a connection: the server's limits, authentication, and closing.

A connection shows a bearer token in its ``Authorization`` header or in an
``auth`` op as its first frame (within ``auth_timeout``); without a valid
one it gets ``unauthorized`` (when it sent a frame) and is closed with 1008.
See the theory of operation in ``_server.py``.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from ..core._auth import user_for_token
from ..core._wire import POLICY_VIOLATION, ErrorCode
from ._protocol import Auth, ProtocolError, RequestId, error_frame, parse_frame, reply_frame


@attrs.frozen
class ServerLimits:
    """Bounds of every connection of a server."""

    #: Largest request frame in bytes; a larger one gets a ``too_large`` error
    #: reply, and one over twice this size closes the connection with 1009.
    max_frame: int = 1 << 20
    #: Open subscriptions per connection.
    max_subscriptions: int = 64
    #: Events per connection waiting to be sent.
    max_pending: int = 1024
    #: Live events a subscription may fall behind (its watch) before it lags.
    subscription_buffer: int = 1024
    #: Seconds a connection without an Authorization header has to send ``auth``.
    auth_timeout: float = 10.0
    #: Seconds the server waits for a client to finish a close handshake.
    close_timeout: float = 5.0

    def __attrs_post_init__(self) -> None:
        for name in ("max_frame", "max_subscriptions", "max_pending", "subscription_buffer"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not (self.auth_timeout > 0 and self.close_timeout > 0):
            raise ValueError("timeouts must be > 0")


async def close_websocket(
    ws: WebSocketConnection, code: int, reason: str, limits: ServerLimits
) -> None:
    """Close the websocket, waiting at most ``close_timeout`` for the client (even if
    cancelled: the wait is shielded)."""
    with trio.move_on_after(limits.close_timeout, shield=True):
        await ws.aclose(code, reason)


@attrs.frozen
class User:
    """Who a connection acts for: a user id, or None for the single local user."""

    user_id: str | None


async def authenticate(
    ws: WebSocketConnection,
    header_token: str | None,
    tokens: Mapping[str, str] | None,
    limits: ServerLimits,
) -> User | None:
    """The connection's user, or None after closing a connection that has none."""
    if tokens is None:
        return User(None)
    if header_token is not None:
        user_id = user_for_token(tokens, header_token)
        if user_id is None:
            await close_websocket(ws, POLICY_VIOLATION, "invalid bearer token", limits)
            return None
        return User(user_id)
    with trio.move_on_after(limits.auth_timeout):
        try:
            message = await ws.get_message()
        except ConnectionClosed:
            return None
        request_id: RequestId = None
        try:
            frame = parse_frame(message, max_frame=limits.max_frame)
        except ProtocolError as exc:
            request_id, op = exc.request_id, None
        else:
            request_id, op = frame.id, frame.op
        user_id = user_for_token(tokens, op.token) if isinstance(op, Auth) else None
        reason = "invalid token" if isinstance(op, Auth) else "authentication required"
        try:
            if user_id is not None:
                await ws.send_message(reply_frame(request_id, {"user_id": user_id}))
                return User(user_id)
            explanation = f"{reason}: send an Authorization: Bearer header or an auth op first"
            await ws.send_message(error_frame(request_id, ErrorCode.UNAUTHORIZED, explanation))
        except ConnectionClosed:
            return None
        await close_websocket(ws, POLICY_VIOLATION, reason, limits)
        return None
    await close_websocket(ws, POLICY_VIOLATION, "authentication timed out", limits)
    return None
