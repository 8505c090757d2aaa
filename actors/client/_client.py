"""A websocket client of a taskactors server: ``open_client(url)``.

Theory of operation
-------------------
A ``Client`` talks to a server over one websocket connection at a time (the
protocol of DESIGN.md, "Websocket API"). A connection task in the client's
nursery owns the websocket; its reader loop takes every frame off it and
dispatches it without ever blocking: a reply (a frame with an ``id``)
resolves the slot its caller waits on, and an event frame (``event``,
``events``, ``end``, ``lagged``) goes to its subscription's buffer. Requests
are multiplexed: each gets a fresh id, registers its slot, sends its frame and
waits, so any number of tasks may share one client.

The reply to ``subscribe`` registers the subscription inside the reader, before
the reader looks at the next frame, so no event of a new subscription can
slip past it. A subscription's buffer is bounded: a consumer that falls that
far behind is treated like a lagged one (the server is told to drop it).

When the connection drops, every waiting request fails with
``ClientConnectionError`` and every subscription ends with it once its buffered
events are consumed. The next request opens a new connection; requests are
never re-sent, since the client cannot know whether the server applied them.

``Client.watch`` builds "exactly once" on top: it remembers the seq of the last
event it yielded and, after ``lagged`` or a dropped connection, subscribes
again with ``after`` = that seq, skipping anything at or below it. So a
watcher yields after+1, after+2, ... up to the terminal event, with no gap
and no duplicate, whatever happens to the connection in between.
"""

from __future__ import annotations

import builtins
import enum
import itertools
import math
import ssl
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any, NoReturn

import trio
import trio_websocket

from ..core._wire import Op
from ._connection import _Connection, _parse_url
from ._errors import (
    AuthenticationError,
    BadRequestError,
    ClientConflictError,
    ClientConnectionError,
    ClientError,
    ConflictError,
    InvalidTransitionError,
    Lagged,
    NotFoundError,
    UnavailableError,
    connect_error,
    error_from_reply,
)
from ._subscriptions import ClientSubscription, Json, Subscription, Watcher, is_terminal

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ClientConflictError",
    "ClientConnectionError",
    "ClientError",
    "ClientSubscription",
    "ConflictError",
    "InvalidTransitionError",
    "Json",
    "Lagged",
    "NotFoundError",
    "Subscription",
    "UnavailableError",
    "Watcher",
    "error_from_reply",
    "is_terminal",
    "open_client",
]


# -- the client ------------------------------------------------------------------------------
class Client:
    """A connection to a taskactors server: one async method per protocol op.

    Task infos and events are the server's JSON objects (dicts). Every method
    raises a ``ClientError`` subclass for an error reply (``NotFoundError``,
    ``InvalidTransitionError``, ``BadRequestError``, ``AuthenticationError``)
    and ``ClientConnectionError`` if the server cannot be reached or the
    connection drops while it waits (the next call reconnects). Cancelling a
    call abandons its reply. Made by ``open_client``.
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        url: str,
        *,
        token: str | None,
        connect_timeout: float,
        max_message_size: int,
        subscription_buffer: int,
    ) -> None:
        self.url = url
        self._nursery = nursery
        self._token = token
        self._connect_timeout = connect_timeout
        self._max_message_size = max_message_size
        self._subscription_buffer = subscription_buffer
        self._ids = itertools.count(1)
        self._connection: _Connection | None = None
        self._connect_lock = trio.Lock()
        self._closed = False
        #: How many websocket connections this client opened.
        self.connections = 0

    # -- connections ---------------------------------------------------------------------
    async def _connect(self) -> _Connection:
        if self._closed:
            raise ClientConnectionError("the client is closed")
        async with self._connect_lock:
            connection = self._connection
            if connection is None or connection.failure is not None:
                connection = await self._nursery.start(self._serve_connection)
                self._connection = connection
                self.connections += 1
            return connection

    async def _serve_connection(
        self, *, task_status: trio.TaskStatus[_Connection] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Own one websocket: open it, report it, read it until it closes.

        The TCP stream is opened here, not by trio-websocket, so that it is
        closed whatever happens: trio-websocket 0.12 leaves a client's stream
        open when the server rejects the handshake or closes first.
        """
        host, port, resource, use_ssl = _parse_url(self.url)
        try:
            with trio.fail_after(self._connect_timeout):
                stream: trio.abc.Stream
                if use_ssl:
                    context = ssl.create_default_context()
                    stream = await trio.open_ssl_over_tcp_stream(
                        host, port, ssl_context=context, https_compatible=True
                    )
                else:
                    stream = await trio.open_tcp_stream(host, port)
        except trio.TooSlowError:
            raise ClientConnectionError(f"timed out connecting to {self.url}") from None
        except OSError as exc:
            raise connect_error(self.url, exc) from exc
        headers = [(b"Authorization", f"Bearer {self._token}".encode())] if self._token else None
        host_header = host if port in (80, 443) else f"{host}:{port}"
        async with stream:
            try:
                async with trio.open_nursery() as nursery:
                    with trio.fail_after(self._connect_timeout):
                        ws = await trio_websocket.wrap_client_stream(
                            nursery,
                            stream,
                            host_header,
                            resource,
                            extra_headers=headers,
                            max_message_size=self._max_message_size,
                        )
                    connection = _Connection(self.url, self._spawn, self._ids, ws)
                    task_status.started(connection)
                    await connection.read_loop()
                    # Let trio-websocket's reader finish the closing handshake
                    # (and see the server close TCP), but not forever.
                    nursery.cancel_scope.deadline = trio.current_time() + self._connect_timeout
            except* trio_websocket.ConnectionRejected as group:
                raise connect_error(self.url, group.exceptions[0]) from None
            except* trio.TooSlowError:
                raise ClientConnectionError(f"timed out connecting to {self.url}") from None

    def _spawn(self, fn: Any, *args: Any) -> None:
        if not self._closed:
            self._nursery.start_soon(fn, *args)

    async def aclose(self) -> None:
        """Close the connection; waiting requests and subscriptions fail."""
        self._closed = True
        connection = self._connection
        if connection is not None and connection.failure is None:
            connection.fail(ClientConnectionError("the client is closed"))
            with trio.move_on_after(self._connect_timeout) as scope:
                scope.shield = True
                await connection.ws.aclose()

    # -- ops ------------------------------------------------------------------------------
    async def request(self, op: str, **fields: Any) -> Any:
        """Send one request and return its result (fields that are None are left out).

        Raises:
            ClientError: the server's error reply, typed by its code.
            ClientConnectionError: the server is unreachable or the connection dropped.
            TypeError: a field is not JSON-serializable.
        """
        return await self._request(op, {k: v for k, v in fields.items() if v is not None})

    async def _request(self, op: str, fields: Json) -> Any:
        connection = await self._connect()
        return await connection.request(next(self._ids), op, fields)

    async def auth(self, token: str) -> Json:
        """Authenticate this connection (and later ones) with a bearer token: {user_id}."""
        self._token = token
        result: Json = await self.request(Op.AUTH, token=token)
        return result

    async def submit(
        self,
        name: str,
        input: Any = None,
        *,
        task_id: str | None = None,
        thread_id: str | None = None,
        metadata: Json | None = None,
        strategy: str | enum.Enum | None = None,
    ) -> Json:
        """Submit a task; its info. A known ``task_id`` returns the existing task.

        ``strategy`` (enqueue, reject, interrupt, rollback) overrides the handler's.
        """
        if isinstance(strategy, enum.Enum):
            strategy = strategy.value
        options = {
            "task_id": task_id,
            "thread_id": thread_id,
            "metadata": metadata,
            "strategy": strategy,
        }
        fields = {k: v for k, v in options.items() if v is not None}
        # input goes out even when it is None: null is a valid task input.
        result: Json = await self._request(Op.SUBMIT, {"name": name, "input": input, **fields})
        return result

    async def send(self, task_id: str, input: Any) -> Json:
        """Send a Request (new input) to a task; its info."""
        result: Json = await self._request(Op.SEND, {"task_id": task_id, "input": input})
        return result

    async def cancel(self, task_id: str, *, reason: str | None = None) -> Json:
        """Cancel a task and its children; its info."""
        result: Json = await self.request(Op.CANCEL, task_id=task_id, reason=reason)
        return result

    async def signal(self, task_id: str, signal: str | enum.Enum) -> Json:
        """Send "stop", "pause" or "resume" (or an ``actors.Signal``) to a task; its info."""
        value = signal.value if isinstance(signal, enum.Enum) else signal
        result: Json = await self.request(Op.SIGNAL, task_id=task_id, signal=value)
        return result

    async def get(self, task_id: str) -> Json:
        """A task's info."""
        result: Json = await self.request(Op.GET, task_id=task_id)
        return result

    async def list(
        self,
        *,
        thread_id: str | None = None,
        states: Iterable[str] | None = None,
        limit: int | None = None,
    ) -> builtins.list[Json]:
        """The user's tasks matching every given filter, oldest first."""
        result: builtins.list[Json] = await self.request(
            Op.LIST,
            thread_id=thread_id,
            states=builtins.list(states) if states is not None else None,
            limit=limit,
        )
        return result

    async def history(
        self, task_id: str, *, after: int = 0, limit: int | None = None
    ) -> builtins.list[Json]:
        """A task's committed events with seq > after, in order (at most ``limit``)."""
        result: builtins.list[Json] = await self.request(
            Op.HISTORY, task_id=task_id, after=after, limit=limit
        )
        return result

    async def usage(self, thread_id: str, *, include_active: bool = False) -> Json:
        """Token usage of a thread: totals, by_model, by_caller (of finished
        tasks, unless ``include_active``)."""
        result: Json = await self.request(
            Op.USAGE, thread_id=thread_id, include_active=include_active or None
        )
        return result

    async def unsubscribe(self, sub: str) -> None:
        """Drop a subscription by its server id (``ClientSubscription.close`` does it for you)."""
        await self.request(Op.UNSUBSCRIBE, sub=sub)

    async def _open_subscription(
        self, task_id: str | None, after: int | dict[str, int]
    ) -> ClientSubscription:
        connection = await self._connect()
        subscription = ClientSubscription(connection, task_id, self._subscription_buffer)
        if isinstance(after, int):
            subscription.last_seq = after
        fields: Json = {"after": after} if task_id is None else {"task_id": task_id, "after": after}
        await connection.request(next(self._ids), Op.SUBSCRIBE, fields, subscription=subscription)
        return subscription

    @asynccontextmanager
    async def subscribe(
        self, task_id: str | None = None, *, after: int | dict[str, int] = 0
    ) -> AsyncIterator[ClientSubscription]:
        """Receive events: of one task (history after ``after``, then live; it
        ends after the terminal event) or, without a task id, the live events of
        all the user's tasks (``after``: an object task id -> seq replays those
        tasks' events after that seq first). Leaving the block drops the subscription.

        Raises:
            NotFoundError: no such task.
            SubscriptionLagged: (while iterating) the subscriber fell behind.
            ClientConnectionError: (while iterating) the connection dropped.
        """
        subscription = await self._open_subscription(task_id, after)
        try:
            yield subscription
        finally:
            subscription.close()

    @asynccontextmanager
    async def watch(
        self, task_id: str, *, after: int = 0, reconnect_timeout: float = 30.0
    ) -> AsyncIterator[Watcher]:
        """Receive a task's events after ``after``, each exactly once, to its
        terminal event, subscribing again (on a new connection if need be)
        after a lag or a drop.

        Args:
            reconnect_timeout: how long to keep trying to reach the server after a drop.

        Raises:
            NotFoundError: no such task.
            ClientConnectionError: (while iterating) the server stayed unreachable.
        """
        watcher = Watcher(
            self._open_subscription, task_id, after, reconnect_timeout=reconnect_timeout
        )
        try:
            yield watcher
        finally:
            watcher.close()


def _raise(exc: BaseException) -> NoReturn:
    """Re-raise ``exc`` without chaining the exception group it came out of."""
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc, context


@asynccontextmanager
async def open_client(
    url: str,
    *,
    token: str | None = None,
    connect_timeout: float = 10.0,
    max_message_size: int = 16 * 2**20,
    subscription_buffer: int = 10_000,
) -> AsyncIterator[Client]:
    """Connect to a taskactors server for the duration of the block.

    Args:
        url: the server's ``ws://host:port`` (or ``wss://``) URL.
        token: a bearer token, sent in the ``Authorization`` header.
        connect_timeout: seconds to open (and to close) a connection.
        max_message_size: the largest frame accepted from the server.
        subscription_buffer: events a subscription may hold unread before it
            counts as lagged.

    Raises:
        ClientConnectionError: the server cannot be reached.
        AuthenticationError: the server refused the token.

    On leaving the block (normally, by an error or by cancellation), the
    connection is closed; an exception raised in the block comes out as it
    was, not wrapped in a group.
    """
    if not math.isfinite(connect_timeout) or connect_timeout <= 0:
        raise ValueError("connect_timeout must be a positive number of seconds")
    try:
        async with trio.open_nursery() as nursery:
            client = Client(
                nursery,
                url,
                token=token,
                connect_timeout=connect_timeout,
                max_message_size=max_message_size,
                subscription_buffer=subscription_buffer,
            )
            try:
                await client._connect()
                yield client
            finally:
                await client.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The connection tasks never raise once started, so the group holds
        # the block's error (or the connect error), perhaps beside Cancelled:
        # let it out as it was raised, like trio_websocket.open_websocket does.
        real = [e for e in group.exceptions if not isinstance(e, trio.Cancelled)]
        if len(real) == 1:
            _raise(real[0])
        raise
