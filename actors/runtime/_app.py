"""App: the registry of task handlers an application declares."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from ..core._errors import UnknownTaskName
from ..core._lifecycle import Strategy

if TYPE_CHECKING:
    from ..core._messages import Request
    from ._context import TaskContext

Handler = Callable[["TaskContext", "Request"], Awaitable[Any]]
H = TypeVar("H", bound=Handler)


@attrs.frozen
class TaskSpec:
    """A registered handler and its options."""

    name: str
    handler: Handler
    #: Extra attempts of a run whose handler raised.
    retries: int = 0
    #: Seconds a run may take before the task fails with TaskTimeoutError (None: no limit).
    timeout: float | None = None
    strategy: Strategy = Strategy.ENQUEUE
    #: Seconds without a heartbeat (or step) after which a run counts as stuck.
    heartbeat_timeout: float | None = None
    #: First retry delay; doubles each attempt up to max_backoff.
    backoff: float = 1.0
    max_backoff: float = 60.0

    def delay(self, attempt: int) -> float:
        """Backoff before retry number ``attempt`` (1-based)."""
        return float(min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))


class App:
    """Handlers by name. Declare them with ``@app.task(name, ...)``."""

    def __init__(self) -> None:
        self._specs: dict[str, TaskSpec] = {}

    def task(
        self,
        name: str | None = None,
        *,
        retries: int = 0,
        timeout: float | None = None,
        strategy: str | Strategy = Strategy.ENQUEUE,
        heartbeat_timeout: float | None = None,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
    ) -> Callable[[H], H]:
        """Register ``async def handler(ctx, request)`` under ``name`` (default: its name).

        Raises:
            ValueError: the name is taken, or an option is out of range.
        """
        if retries < 0:
            raise ValueError("retries must be >= 0")
        for option, value in (("timeout", timeout), ("heartbeat_timeout", heartbeat_timeout)):
            if value is not None and value <= 0:
                raise ValueError(f"{option} must be > 0")
        strategy = Strategy(strategy)

        def register(handler: H) -> H:
            task_name = name or getattr(handler, "__name__", None)
            if not task_name:
                raise ValueError("the handler has no name; pass one")
            if task_name in self._specs:
                raise ValueError(f"a task named {task_name!r} is already registered")
            self._specs[task_name] = TaskSpec(
                task_name,
                handler,
                retries,
                timeout,
                strategy,
                heartbeat_timeout,
                backoff,
                max_backoff,
            )
            return handler

        return register

    def spec(self, name: str) -> TaskSpec:
        """The handler registered as ``name``.

        Raises:
            UnknownTaskName: nothing is registered under that name.
        """
        try:
            return self._specs[name]
        except KeyError:
            raise UnknownTaskName(name) from None

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    @property
    def names(self) -> list[str]:
        return sorted(self._specs)
