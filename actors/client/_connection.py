"""One websocket connection of the client: its requests, its reader, its subscriptions.

See the theory of operation in ``_client.py``: the reader loop here never
blocks; a reply resolves its caller's slot, an event frame goes to its
subscription's buffer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import trio
import trio_websocket

from ..core._wire import EVENT_FRAME_KINDS, FrameKind, Op
from ._errors import ClientConnectionError, ClientError, Lagged, closed_error, error_from_reply
from ._subscriptions import ClientSubscription, Json

log = logging.getLogger("taskactors.client")


def _parse_url(url: str) -> tuple[str, int, str, bool]:
    """(host, port, resource, use_ssl) of a ws:// or wss:// URL.

    Raises:
        ClientConnectionError: the URL is not a websocket URL.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ClientConnectionError(f"bad server URL {url!r}: {exc}") from None
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ClientConnectionError(f"bad server URL {url!r}: expected ws://host:port")
    use_ssl = parts.scheme == "wss"
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.hostname, port or (443 if use_ssl else 80), resource, use_ssl


# -- one connection --------------------------------------------------------------------------
class Reply:
    """A one-shot answer slot: the connection's reader resolves it, the caller
    waits on it; if the connection fails first, the caller gets its error."""

    __slots__ = ("_done", "_error", "_value")

    def __init__(self) -> None:
        self._done = trio.Event()
        self._value: Any = None
        self._error: BaseException | None = None

    def resolve(self, value: Any = None) -> None:
        if not self._done.is_set():
            self._value = value
            self._done.set()

    def fail(self, error: BaseException) -> None:
        if not self._done.is_set():
            self._error = error
            self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    async def wait(self) -> Any:
        await self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value


class _Slot(Reply):
    """Where a reply lands for the caller waiting on it (a one-shot Reply)."""

    __slots__ = ("subscription",)

    def __init__(self, subscription: ClientSubscription | None = None) -> None:
        super().__init__()
        #: For a subscribe request: registered by the reader when the reply comes.
        self.subscription = subscription


class _Connection:
    """One websocket and the requests and subscriptions that live on it."""

    #: Event frames kept for a subscription whose subscribe reply has not come yet.
    EARLY_FRAMES = 1024

    def __init__(
        self,
        url: str,
        spawn: Callable[..., None],
        ids: Iterator[int],
        ws: trio_websocket.WebSocketConnection,
    ) -> None:
        #: The server's URL, for error messages.
        self.url = url
        #: Starts a background task in the client's nursery (a no-op once closed).
        self._spawn = spawn
        #: The client's request ids, shared by its connections.
        self._ids = ids
        self.ws = ws
        self.pending: dict[int, _Slot] = {}
        self.subscriptions: dict[str, ClientSubscription] = {}
        #: Ids of subscribe requests whose caller gave up before the reply.
        self.abandoned: set[int] = set()
        self.early: list[Json] = []
        #: Why the connection is unusable, once it is.
        self.failure: ClientError | None = None

    # -- requests -------------------------------------------------------------------------
    async def request(
        self, request_id: int, op: str, fields: Json, subscription: ClientSubscription | None = None
    ) -> Any:
        if self.failure is not None:
            raise self.failure
        try:
            text = json.dumps({"id": request_id, "op": op, **fields})
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{op}: the request is not JSON-serializable: {exc}") from None
        slot = _Slot(subscription)
        self.pending[request_id] = slot
        try:
            try:
                await self.ws.send_message(text)
            except trio_websocket.ConnectionClosed as exc:
                self.fail(closed_error(self.url, exc.reason))
            return await slot.wait()
        finally:
            self.pending.pop(request_id, None)
            if not slot.done and op == Op.SUBSCRIBE:
                self.abandoned.add(request_id)

    def forget(self, subscription: ClientSubscription, *, unsubscribe: bool) -> None:
        """Stop routing a subscription's frames; tell the server to drop it if asked."""
        sub = subscription.sub
        if sub is None or self.subscriptions.get(sub) is not subscription:
            return
        del self.subscriptions[sub]
        if unsubscribe and self.failure is None:
            self._spawn(self._unsubscribe_quietly, sub)

    async def _unsubscribe_quietly(self, sub: str) -> None:
        try:
            await self.request(next(self._ids), Op.UNSUBSCRIBE, {"sub": sub})
        except ClientError as exc:
            log.debug("unsubscribe %s: %s", sub, exc)

    # -- the reader ---------------------------------------------------------------------------
    async def read_loop(self) -> None:
        """Dispatch every frame until the connection closes. Never raises."""
        try:
            while True:
                message = await self.ws.get_message()
                self.dispatch(message)
        except trio_websocket.ConnectionClosed as exc:
            self.fail(closed_error(self.url, exc.reason))

    def dispatch(self, message: str | bytes) -> None:
        try:
            frame = json.loads(message)
        except (ValueError, RecursionError):  # (nested deeper than json parses)
            log.warning("ignored a frame that is not JSON: %.80r", message)
            return
        if not isinstance(frame, dict):
            log.warning("ignored a frame that is not a JSON object: %.80r", message)
            return
        if frame.get("op") in EVENT_FRAME_KINDS:
            self._on_event_frame(frame)
        elif "ok" in frame:
            self._on_reply(frame)
        else:
            log.warning("ignored an unknown frame: %.80r", message)

    def _on_reply(self, frame: Json) -> None:
        request_id = frame.get("id")
        slot = self.pending.get(request_id) if isinstance(request_id, int) else None
        ok = frame.get("ok") is True
        result = frame.get("result")
        if slot is None:
            if request_id in self.abandoned:
                self.abandoned.discard(request_id)
                if ok and isinstance(result, dict) and result.get("sub") is not None:
                    self._spawn(self._unsubscribe_quietly, str(result["sub"]))
            elif not ok:
                # The caller gave up (was cancelled) before its answer came.
                log.debug("error reply to no waiting request: %s", frame.get("error"))
            return
        if not ok:
            slot.fail(error_from_reply(frame.get("error")))
            return
        subscription = slot.subscription
        if subscription is not None:
            if not isinstance(result, dict) or result.get("sub") is None:
                slot.fail(ClientError("protocol_error", f"subscribe replied {result!r}"))
                return
            subscription.sub = str(result["sub"])
            self.subscriptions[subscription.sub] = subscription
            early, self.early = self.early, []
            for waiting in early:
                self._on_event_frame(waiting)
        slot.resolve(result)

    def _on_event_frame(self, frame: Json) -> None:
        sub = frame.get("sub")
        subscription = self.subscriptions.get(str(sub)) if sub is not None else None
        if subscription is None:
            # A subscription whose reply is still to come (or one we dropped).
            subscribing = any(s.subscription is not None for s in self.pending.values())
            if subscribing and len(self.early) < self.EARLY_FRAMES:
                self.early.append(frame)
            return
        op = frame["op"]
        if op == FrameKind.EVENT:
            subscription._push([frame.get("event")])
        elif op == FrameKind.EVENTS:
            events = frame.get("events")
            subscription._push(events if isinstance(events, list) else [])
        elif op == FrameKind.END:
            subscription._end()
            self.forget(subscription, unsubscribe=False)
        else:  # FrameKind.LAGGED
            after = frame.get("resume_after")
            if not isinstance(after, int | dict):
                after = subscription.last_seq
            subscription._fail(Lagged(subscription.task_id, after))
            self.forget(subscription, unsubscribe=False)

    def fail(self, error: ClientError) -> None:
        """Mark the connection dead: fail every waiting request and subscription."""
        if self.failure is None:
            self.failure = error
        for slot in self.pending.values():
            slot.fail(self.failure)
        for subscription in self.subscriptions.values():
            subscription._fail(self.failure)
        self.subscriptions.clear()
