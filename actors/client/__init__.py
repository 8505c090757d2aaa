"""The websocket client of a taskactors server (DESIGN.md, "Websocket API").

``async with actors.client.open_client("ws://127.0.0.1:8765", token=...) as client``
gives a ``Client`` with one async method per protocol op, ``subscribe`` for
raw event subscriptions and ``watch`` for exactly-once watching across lags
and reconnections. Error replies raise the ``ClientError`` subclass of their
code.

``ConflictError`` and ``Subscription`` are the former names of
``ClientConflictError`` and ``ClientSubscription``, kept as aliases: the new
names do not clash with ``storage.ConflictError`` and ``storage.Subscription``
(issue #18).
"""

from ._client import AuthenticationError as AuthenticationError
from ._client import BadRequestError as BadRequestError
from ._client import Client as Client
from ._client import ClientConflictError as ClientConflictError
from ._client import ClientConnectionError as ClientConnectionError
from ._client import ClientError as ClientError
from ._client import ClientSubscription as ClientSubscription
from ._client import ConflictError as ConflictError
from ._client import InvalidTransitionError as InvalidTransitionError
from ._client import Lagged as Lagged
from ._client import NotFoundError as NotFoundError
from ._client import Subscription as Subscription
from ._client import UnavailableError as UnavailableError
from ._client import Watcher as Watcher
from ._client import error_from_reply as error_from_reply
from ._client import is_terminal as is_terminal
from ._client import open_client as open_client

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
    "Lagged",
    "NotFoundError",
    "Subscription",
    "UnavailableError",
    "Watcher",
    "error_from_reply",
    "is_terminal",
    "open_client",
]
