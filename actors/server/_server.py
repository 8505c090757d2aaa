"""The websocket server: ``serve_websocket(rt, ...)`` and ``load_tokens(path)``.

Theory of operation
-------------------
``serve_websocket`` runs a trio-websocket server in a nursery of its own.
Each connection is served by one handler task (trio-websocket starts it)
that first authenticates the client, then owns a nursery holding:

- the *reader*: the handler task itself. It takes one frame at a time off
  the socket, parses it (``_protocol.parse_frame``), makes the runtime call
  with the connection's user id, and queues the reply in the connection's
  ``Outbox``. Requests of one connection run one after the other; before it
  reads the next one the reader waits until few replies wait unsent, so a
  client that does not read is paced by its own socket.
- the *writer*: takes frames out of the outbox and sends them. Only it ever
  waits on the client's socket.
- one task per *subscription*: it reads the runtime's event stream (a
  bounded watch per subscription: ``rt.subscribe(buffer=...)`` or
  ``rt.subscribe_all(buffer=...)``) a batch at a time: everything ready,
  as the batches the hub shares between all subscribers. The server's
  ``EventEncoder`` turns each batch into JSON text once for every
  connection; the task offers that text to the outbox, waiting for room
  when ``max_pending`` events wait already. Events that wait together leave
  as one ``events`` frame. If the client falls so far behind that the watch
  overflows, the runtime reports the lag and the task sends ``lagged`` with
  the seq to resume after, and ends.

Nothing a client does can block a task or another client: tasks publish
into watches that never wait, and each connection's memory is bounded by
its outbox and its subscriptions' watches. The reader sees every exception
of a request and turns it into an error reply (``_protocol.error_code``);
only a server bug is logged. Closing the connection (either side) cancels
the nursery: the writer and every subscription end, their watches are
removed. Cancelling ``serve_websocket`` closes every connection with 1001.

Authentication: with ``tokens`` (token -> user id), a connection must show a
valid token in an ``Authorization: Bearer`` header or in an ``auth`` op as
its first frame (within ``auth_timeout``); otherwise it is closed with 1008
(policy violation) and a reason. Every runtime call then passes that user
id, so other users' tasks read as not found. With ``tokens=None`` the server
serves a single local user: no token is needed, and the connection acts
with no user id, which means it sees and touches every task of the store
(the ones it submits have no user id). ``serve_websocket`` logs which mode
it runs in, and ``describe_auth`` gives the same sentence to print.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from functools import partial
from typing import Any, Final, NoReturn

import attrs
import trio
import trio_websocket
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

from ..core._auth import TOKENS_ENV as TOKENS_ENV
from ..core._auth import TokensError as TokensError
from ..core._auth import bearer_token, user_for_token
from ..core._auth import describe_auth as describe_auth
from ..core._auth import load_tokens as load_tokens
from ..core._errors import RuntimeClosedError, SubscriptionLagged
from ..core._wire import GOING_AWAY as GOING_AWAY
from ..core._wire import INTERNAL_ERROR as INTERNAL_ERROR
from ..core._wire import POLICY_VIOLATION as POLICY_VIOLATION
from ..runtime._events import EventBatch
from ..runtime._runtime import Runtime
from ._handshake import ServerLimits as ServerLimits
from ._handshake import User, authenticate, close_websocket
from ._outbox import Outbox
from ._protocol import (
    Auth,
    Cancel,
    ErrorCode,
    EventEncoder,
    Get,
    History,
    ListTasks,
    ProtocolError,
    RequestFrame,
    RequestId,
    Send,
    SignalTask,
    Submit,
    Subscribe,
    Unsubscribe,
    Usage,
    end_frame,
    error_code,
    error_frame,
    events_frame,
    lagged_frame,
    parse_frame,
    reply_frame,
)

log = logging.getLogger("taskactors.server")

#: Events read back from the store per query when an all-tasks subscription replays.
_HISTORY_PAGE: Final = 1000
#: Characters of an ``events`` frame around its events (op, sub id): kept free
#: of events so that frames stay within ``max_frame``.
_FRAME_MARGIN: Final = 256


async def serve_websocket(
    rt: Runtime,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    tokens: Mapping[str, str] | None = None,
    max_frame: int = 1 << 20,
    max_subscriptions: int = 64,
    max_pending: int = 1024,
    subscription_buffer: int = 1024,
    auth_timeout: float = 10.0,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve the websocket API of ``rt`` until cancelled.

    Use ``port = await nursery.start(serve_websocket, rt, port=0)``: the
    server reports the port it listens on once it accepts connections (with
    ``port=0`` the system picks one; if ``host`` resolves to several
    addresses, the first listener's port is reported).

    Args:
        rt: the runtime whose tasks the server exposes.
        host: the interface to listen on.
        port: the TCP port (0: any free port).
        tokens: bearer token -> user id (see ``load_tokens``); None serves a
            single local user that sees every task.
        max_frame: largest request frame in bytes (see ``ServerLimits``).
        max_subscriptions: open subscriptions per connection.
        max_pending: events per connection waiting to be sent.
        subscription_buffer: live events a subscription may fall behind before it lags.
        auth_timeout: seconds a client has to authenticate.

    Cancellation: every connection is closed with 1001 (going away), its
    subscriptions end; the runtime is left as it is (close it afterwards).

    Raises:
        OSError: the address cannot be bound.
        ValueError: a limit is out of range, or a token or user id is empty.
    """
    limits = ServerLimits(
        max_frame=max_frame,
        max_subscriptions=max_subscriptions,
        max_pending=max_pending,
        subscription_buffer=subscription_buffer,
        auth_timeout=auth_timeout,
    )
    known = dict(tokens) if tokens is not None else None
    if known is not None and not all(token and user_id for token, user_id in known.items()):
        raise ValueError("every token and user id must be a non-empty string")
    if known is not None and not known:
        log.warning("the tokens mapping is empty: every connection will be refused")
    if known is None and host not in ("127.0.0.1", "::1", "localhost"):
        log.warning("no tokens and host %s: anyone who reaches it acts as the local user", host)
    encoder = EventEncoder(max_size=max(1, limits.max_frame - _FRAME_MARGIN))
    handler = partial(_serve_connection, rt, known, limits, encoder)
    async with trio.open_nursery() as nursery:
        server: trio_websocket.WebSocketServer = await nursery.start(
            partial(
                trio_websocket.serve_websocket,
                handler,
                host,
                port,
                None,
                # Frames up to twice max_frame are read and refused with an error
                # reply (the connection stays usable); larger ones close it (1009).
                max_message_size=2 * limits.max_frame,
            )
        )
        bound = [listener for listener in server.listeners if not isinstance(listener, str)]
        bound_port = bound[0].port if bound else port
        log.info(
            "taskactors websocket API on %s; %s",
            ", ".join(endpoint.url for endpoint in bound) or f"{host}:{port}",
            describe_auth(known),
        )
        task_status.started(bound_port)
        await trio.sleep_forever()
    raise AssertionError("unreachable")  # pragma: no cover


# -- connections ------------------------------------------------------------------
async def _serve_connection(
    rt: Runtime,
    tokens: Mapping[str, str] | None,
    limits: ServerLimits,
    encoder: EventEncoder,
    request: WebSocketRequest,
) -> None:
    """Serve one websocket connection until either side closes it.

    Never raises but Cancelled: a server bug closes this connection with
    1011 and is logged; cancellation closes it with 1001.
    """
    header_token = bearer_token(request.headers)
    try:
        ws = await request.accept()
    except ConnectionClosed:
        return  # the client left during the handshake
    code, reason = GOING_AWAY, "server shutting down"
    try:
        user = await authenticate(ws, header_token, tokens, limits)
        if user is not None:
            await _Connection(rt, ws, user, tokens, limits, encoder).serve()
    except Exception:
        log.exception("connection from %s failed", ws.remote)
        code, reason = INTERNAL_ERROR, "internal server error"
    finally:
        if ws.closed is None:
            await close_websocket(ws, code, reason, limits)


@attrs.define(eq=False)
class _Subscription:
    """One open subscription of a connection."""

    id: str
    #: The task watched, or None for all the user's tasks.
    task_id: str | None
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    #: Set once the subscribe reply is queued (errors then end it with ``lagged``).
    started: bool = False
    #: Set once ``end``, ``lagged`` or ``unsubscribe`` closed it.
    closed: bool = False
    #: task id -> seq of the last event queued for the client.
    last: dict[str, int] = attrs.field(factory=dict)

    def resume_after(self) -> int | dict[str, int]:
        """The ``after`` that resumes this subscription with nothing lost."""
        if self.task_id is not None:
            return self.last.get(self.task_id, 0)
        return dict(self.last)


#: What an op handler returns when it queued its reply itself.
_REPLIED: Final = object()


class _Connection:
    """One authenticated connection: its reader, writer and subscriptions."""

    def __init__(
        self,
        rt: Runtime,
        ws: WebSocketConnection,
        user: User,
        tokens: Mapping[str, str] | None,
        limits: ServerLimits,
        encoder: EventEncoder,
    ) -> None:
        self.rt = rt
        self._encoder = encoder
        self.ws = ws
        self.user_id = user.user_id
        self.limits = limits
        self._tokens = tokens
        self.outbox = Outbox(
            events_frame,
            max_pending=limits.max_pending,
            max_batch_size=max(1, limits.max_frame - _FRAME_MARGIN),
        )
        self._subscriptions: dict[str, _Subscription] = {}
        self._sub_ids = itertools.count(1)
        self._nursery: trio.Nursery | None = None

    async def serve(self) -> None:
        """Read and answer requests until the connection closes.

        On return (the client closed, or the socket broke) and on
        cancellation, the writer and every subscription are cancelled and
        whatever waited to be sent is dropped.
        """
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._write_loop)
                await self._read_loop()
                nursery.cancel_scope.cancel()
        finally:
            self.outbox.close()

    async def _read_loop(self) -> None:
        while True:
            await self.outbox.wait_control_room()
            try:
                message = await self.ws.get_message()
            except ConnectionClosed:
                return
            await self._handle(message)

    async def _write_loop(self) -> None:
        assert self._nursery is not None
        try:
            while True:
                frame = await self.outbox.get()
                await self.ws.send_message(frame)
        except (ConnectionClosed, trio.ClosedResourceError):
            self._nursery.cancel_scope.cancel()

    async def _handle(self, message: str | bytes) -> None:
        """Answer one request frame: its reply or error reply goes to the outbox."""
        try:
            frame = parse_frame(message, max_frame=self.limits.max_frame)
        except ProtocolError as exc:
            self.outbox.put_control(error_frame(exc.request_id, exc.code, exc.message))
            return
        try:
            result = await self._call(frame)
        except Exception as exc:
            code, text = error_code(exc)
            if code is ErrorCode.INTERNAL:
                log.exception("request %r of user %r failed", frame.op, self.user_id)
            self.outbox.put_control(error_frame(frame.id, code, text))
            return
        if result is not _REPLIED:
            self.outbox.put_control(reply_frame(frame.id, result))

    async def _call(self, frame: RequestFrame) -> Any:
        """Run one operation; return its result (or _REPLIED)."""
        rt, user_id, op = self.rt, self.user_id, frame.op
        match op:
            case Auth():
                return self._auth(op)
            case Submit():
                return await rt.submit(
                    op.name,
                    op.input,
                    task_id=op.task_id,
                    user_id=user_id,
                    thread_id=op.thread_id,
                    metadata=op.metadata,
                    strategy=op.strategy,
                )
            case Send():
                return await rt.send(op.task_id, op.input, user_id=user_id)
            case Cancel():
                return await rt.cancel(op.task_id, reason=op.reason, user_id=user_id)
            case SignalTask():
                return await rt.signal(op.task_id, op.signal, user_id=user_id)
            case Get():
                return await rt.get(op.task_id, user_id=user_id)
            case ListTasks():
                return await rt.list(
                    user_id=user_id, thread_id=op.thread_id, states=op.states, limit=op.limit
                )
            case History():
                return await self._history(op)
            case Subscribe():
                return await self._subscribe(frame.id, op)
            case Unsubscribe():
                return self._unsubscribe(op)
            case Usage():
                return await self._usage(op)
        raise AssertionError(f"unhandled operation {op!r}")  # pragma: no cover

    def _auth(self, op: Auth) -> dict[str, str | None]:
        """A connection authenticates once; ``auth`` again only confirms its user."""
        if self._tokens is not None and user_for_token(self._tokens, op.token) != self.user_id:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, "this token is not the connection's user's")
        return {"user_id": self.user_id}

    async def _history(self, op: History) -> Any:
        """A task's events after ``op.after``; ``bad_request`` if that is past its last one."""
        events = await self.rt.history(
            op.task_id, after=op.after, limit=op.limit, user_id=self.user_id
        )
        if not events and op.after > 0:
            # (only an empty page can mean "past the end": the common case reads once)
            await self._check_after(op.task_id, op.after)
        return events

    async def _usage(self, op: Usage) -> Any:
        """Token usage of a thread, counting only this user's tasks."""
        return await self.rt.usage(
            op.thread_id, include_active=op.include_active, user_id=self.user_id
        )

    # -- subscriptions ---------------------------------------------------------------
    async def _subscribe(self, request_id: RequestId, op: Subscribe) -> object:
        if len(self._subscriptions) >= self.limits.max_subscriptions:
            raise ProtocolError(
                ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                f"at most {self.limits.max_subscriptions} subscriptions per connection",
            )
        assert self._nursery is not None
        sub = _Subscription(f"s{next(self._sub_ids)}", op.task_id)
        self._subscriptions[sub.id] = sub
        try:
            await self._nursery.start(self._run_subscription, sub, request_id, op)
        except BaseException:
            self._subscriptions.pop(sub.id, None)
            raise
        return _REPLIED

    def _unsubscribe(self, op: Unsubscribe) -> dict[str, Any]:
        sub = self._subscriptions.pop(op.sub, None)
        if sub is None:
            raise ProtocolError(ErrorCode.UNKNOWN_SUBSCRIPTION, f"no open subscription {op.sub!r}")
        sub.closed = True
        sub.scope.cancel()
        self.outbox.discard(sub.id)
        return {}

    async def _run_subscription(
        self,
        sub: _Subscription,
        request_id: RequestId,
        op: Subscribe,
        *,
        task_status: trio.TaskStatus[None],
    ) -> None:
        """Send a subscription's events until it ends, lags or is cancelled.

        Errors before the subscribe reply propagate to the reader (an error
        reply); after it, the runtime closing or a failure (which is logged)
        ends the subscription with ``lagged`` (resume from there). Cancellation (unsubscribe, closed
        connection) removes its watch; nothing more is sent for it.
        """

        def started() -> None:
            self.outbox.put_control(reply_frame(request_id, {"sub": sub.id}))
            sub.started = True
            task_status.started()

        with sub.scope:
            try:
                if op.task_id is not None:
                    assert not isinstance(op.after, dict)
                    await self._watch_task(sub, op.task_id, op.after or 0, started)
                else:
                    # (the protocol lets an all-tasks subscription say after=0: nothing to replay)
                    after = op.after if isinstance(op.after, dict) else {}
                    await self._watch_all(sub, after, started)
            except RuntimeClosedError:
                if not sub.started:
                    raise
                # The runtime is closing: the client resumes from here elsewhere or later.
                self._finish(sub, lagged_frame(sub.id, sub.resume_after()))
            except Exception:
                if not sub.started:
                    raise
                log.exception("subscription %s of user %r failed", sub.id, self.user_id)
                self._finish(sub, lagged_frame(sub.id, sub.resume_after()))

    async def _check_after(self, task_id: str, after: int) -> None:
        info = await self.rt.get(task_id, user_id=self.user_id)
        if after > info.last_seq:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST,
                f"after {after} is past the last event ({info.last_seq}) of task {task_id}",
            )

    async def _watch_task(self, sub: _Subscription, task_id: str, after: int, started: Any) -> None:
        await self._check_after(task_id, after)
        sub.last[task_id] = after
        async with self.rt.subscribe(
            task_id, after=after, user_id=self.user_id, buffer=self.limits.subscription_buffer
        ) as events:
            started()
            try:
                push = partial(self._push, sub)
                while (batch := await events.next_batch(sink=push)) is not None:
                    await self._deliver(sub, batch)
            except SubscriptionLagged as lag:
                self._finish(sub, lagged_frame(sub.id, lag.resume_after))
                return
        self._finish(sub, end_frame(sub.id))

    async def _watch_all(self, sub: _Subscription, after: dict[str, int], started: Any) -> None:
        for task_id, seq in after.items():
            await self._check_after(task_id, seq)
        sub.last.update(after)
        # The live watch is registered before the histories are read, so an
        # event committed in between is seen twice and sent once (by seq).
        async with self.rt.subscribe_all(
            user_id=self.user_id, buffer=self.limits.subscription_buffer
        ) as events:
            started()
            for task_id in after:
                while True:
                    # Read-allowed: _check_after got each task with this user id.
                    page = await self.rt.store.read_events(
                        task_id, sub.last[task_id], _HISTORY_PAGE
                    )
                    if page:
                        await self._deliver(sub, EventBatch.from_stored(task_id, page))
                    if len(page) < _HISTORY_PAGE:
                        break
            try:
                while True:
                    batch = await events.next_batch()
                    tail = batch.after(sub.last.get(batch.task_id, 0))
                    if tail is not None:
                        await self._deliver(sub, tail)
            except SubscriptionLagged:
                self._finish(sub, lagged_frame(sub.id, sub.resume_after()))

    async def _deliver(self, sub: _Subscription, batch: EventBatch) -> None:
        """Queue a batch of events for the client, waiting while the outbox is full."""
        for part in self._encoder.encode(batch):
            while not sub.closed and not self.outbox.offer_event(
                sub.id, part.text, part.event_count
            ):
                await self.outbox.wait_room(part.event_count)
            if sub.closed:
                await trio.lowlevel.checkpoint()  # unsubscribed: its scope is cancelled
                return
            sub.last[batch.task_id] = part.last_seq

    def _push(self, sub: _Subscription, batch: EventBatch) -> bool:
        """Queue a batch at commit time, if it fits now (the sink of ``next_batch``).

        The subscription's task stays asleep: live events of a subscriber
        that keeps up cost no task switch but the writer's. A batch that
        does not fit (or needs several frames) is left to the task.
        """
        if sub.closed:
            return True  # unsubscribed: dropped
        parts = self._encoder.encode(batch)
        if len(parts) != 1:
            return False
        part = parts[0]
        if not self.outbox.offer_event(sub.id, part.text, part.event_count):
            return False
        sub.last[batch.task_id] = part.last_seq
        return True

    def _finish(self, sub: _Subscription, frame: str) -> None:
        """Send a subscription's last frame (``end`` or ``lagged``) and forget it."""
        if sub.closed:
            return
        sub.closed = True
        self._subscriptions.pop(sub.id, None)
        self.outbox.put_control(frame, sub.id)
