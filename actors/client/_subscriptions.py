"""Subscriptions of the websocket client: raw ones, and exactly-once watches.

A ``ClientSubscription`` is fed by the client's reader loop (``_push``, ``_end``,
``_fail``, never blocking) and drained by its consumer. A ``Watcher`` chains
subscriptions of one task: after a lag or a drop it subscribes again after
the last seq it yielded (see the theory of operation in ``_client.py``).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

import trio

from ..core._errors import SubscriptionLagged
from ._errors import ClientConnectionError, ClientError, Lagged

log = logging.getLogger("taskactors.client")

#: A task info or an event, as the server sends it (a JSON object).
Json = dict[str, Any]
#: Terminal task states (``TaskState.terminal``), as the protocol spells them.
TERMINAL_STATES = frozenset({"completed", "failed", "cancelled", "rejected"})


def is_terminal(event: Json) -> bool:
    """Whether an event moved its task into a terminal state."""
    data = event.get("data")
    return (
        event.get("kind") == "state"
        and isinstance(data, dict)
        and data.get("to") in TERMINAL_STATES
    )


class _Router(Protocol):
    """What a subscription needs of its connection (``_connection._Connection``)."""

    def forget(self, subscription: ClientSubscription, *, unsubscribe: bool) -> None: ...


#: How a watch subscribes again: ``(task_id, after) -> subscription``.
OpenSubscription = Callable[[str, int], Awaitable["ClientSubscription"]]


class ClientSubscription:
    """The events of one subscription, as dicts, in order.

    (Not ``storage.Subscription``, the messages of a store's publish/subscribe
    channel; the old name of this one, ``actors.client.Subscription``, stays
    importable as an alias: issue #18.)

    Iterate with ``async for``. Iteration ends after ``end`` (the terminal
    event of a one-task subscription); it raises ``SubscriptionLagged`` (with
    ``resume_after``) after a ``lagged`` notice and ``ClientConnectionError``
    after a dropped connection, once the events received before are consumed.
    Made by ``Client.subscribe``, which closes it.
    """

    def __init__(self, connection: _Router, task_id: str | None, capacity: int) -> None:
        #: The server's id of the subscription (set when the server replies).
        self.sub: str | None = None
        self.task_id = task_id
        #: Seq of the last event received for a one-task subscription.
        self.last_seq = 0
        self._connection = connection
        self._capacity = capacity
        self._buffer: collections.deque[Json] = collections.deque()
        self._wakeup = trio.Event()
        self._ended = False
        self._finishing = False
        self._error: BaseException | None = None
        self._closed = False

    # Called by the reader loop, never blocking.
    def _push(self, events: Iterable[Any]) -> None:
        if self._ended or self._error is not None:
            return
        for event in events:
            if not isinstance(event, dict):
                continue
            if len(self._buffer) >= self._capacity:
                # The consumer is too slow: drop the subscription like a lagged one.
                self._fail(Lagged(self.task_id, self.last_seq))
                self._connection.forget(self, unsubscribe=True)
                return
            self._buffer.append(event)
            seq = event.get("seq")
            if self.task_id is not None and isinstance(seq, int):
                self.last_seq = seq
                # The server ends a one-task subscription after this event by itself.
                self._finishing = self._finishing or is_terminal(event)
        self._wakeup.set()

    def _end(self) -> None:
        self._ended = True
        self._wakeup.set()

    def _fail(self, error: BaseException) -> None:
        if self._error is None and not self._ended:
            self._error = error
        self._wakeup.set()

    def close(self) -> None:
        """Stop receiving: the server is told to drop the subscription (in the background)."""
        if self._closed:
            return
        self._closed = True
        self._buffer.clear()
        live = not (self._ended or self._finishing) and self._error is None
        self._connection.forget(self, unsubscribe=live)
        self._wakeup.set()

    def __aiter__(self) -> ClientSubscription:
        return self

    async def __anext__(self) -> Json:
        while True:
            if self._buffer:
                return self._buffer.popleft()
            if self._closed or self._ended:
                raise StopAsyncIteration
            if self._error is not None:
                raise self._error
            await self._wakeup.wait()
            self._wakeup = trio.Event()


#: The former name of ``ClientSubscription``, kept importable.
Subscription = ClientSubscription


class Watcher:
    """One task's events, each exactly once, across lags and reconnections.

    Iterate with ``async for``; iteration ends after the task's terminal
    event. Made by ``Client.watch``.
    """

    def __init__(
        self,
        open_subscription: OpenSubscription,
        task_id: str,
        after: int,
        *,
        reconnect_timeout: float,
    ) -> None:
        self.task_id = task_id
        #: Seq of the last event yielded.
        self.last_seq = after
        #: How many times the watch subscribed again (after a lag or a drop).
        self.resubscribed = 0
        self._open_subscription = open_subscription
        self._reconnect_timeout = reconnect_timeout
        self._subscription: ClientSubscription | None = None
        self._done = False

    def close(self) -> None:
        self._done = True
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None

    def __aiter__(self) -> Watcher:
        return self

    async def __anext__(self) -> Json:
        while True:
            if self._done:
                raise StopAsyncIteration
            if self._subscription is None:
                self._subscription = await self._subscribe()
            try:
                event = await self._subscription.__anext__()
            except StopAsyncIteration:
                self.close()
                raise
            except (SubscriptionLagged, ClientConnectionError) as exc:
                log.debug("watch of task %s: %s; subscribing again", self.task_id, exc)
                self._subscription.close()
                self._subscription = None
                self.resubscribed += 1
                continue
            seq = event.get("seq")
            if not isinstance(seq, int) or seq <= self.last_seq:
                continue
            if seq != self.last_seq + 1:
                self.close()
                raise ClientError(
                    "protocol_error",
                    f"task {self.task_id}: event {seq} came after {self.last_seq}",
                )
            self.last_seq = seq
            if is_terminal(event):
                self.close()
            return event

    async def _subscribe(self) -> ClientSubscription:
        """Subscribe after the last seq, retrying while the server is unreachable."""
        deadline = trio.current_time() + self._reconnect_timeout
        delay = 0.05
        while True:
            try:
                return await self._open_subscription(self.task_id, self.last_seq)
            except ClientConnectionError:
                if trio.current_time() + delay > deadline:
                    raise
            await trio.sleep(delay)
            delay = min(delay * 2, 1.0)
