"""The websocket server: the sans-IO protocol, the outbox, and serve_websocket."""

from ._server import ServerLimits as ServerLimits
from ._server import serve_websocket as serve_websocket

__all__ = [
    "ServerLimits",
    "serve_websocket",
]
