"""The taskactors command line: serve, the client commands, the demo."""

from ._demo import demo_app as demo_app
from ._main import build_parser as build_parser
from ._main import main as main

__all__ = [
    "build_parser",
    "demo_app",
    "main",
]
