"""Supervisor: what a task actor needs of the runtime that runs it.

The actor depends on this interface, not on ``Runtime`` (which implements
it and depends on the actor): the runtime makes and starts actors, and an
actor calls back only through the names below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from storage import Store

    from ..core._info import TaskInfo
    from ..core._lifecycle import Strategy
    from ._events import EventHub
    from ._faults import StepObserver
    from ._slots import RunSlots


class Supervisor(Protocol):
    """The runtime as its task actors see it (``Runtime`` is one)."""

    @property
    def store(self) -> Store: ...

    @property
    def hub(self) -> EventHub: ...

    @property
    def node_id(self) -> str: ...

    @property
    def run_slots(self) -> RunSlots | None:
        """The bound of max_running (None: unbounded)."""

    @property
    def step_observers(self) -> tuple[StepObserver, ...]:
        """Awaited at the step points (see ``actors.runtime._faults``); empty
        unless something observes the steps."""

    async def submit_child(
        self,
        name: str,
        input: Any,
        *,
        task_id: str,
        user_id: str | None,
        thread_id: str | None,
        metadata: dict[str, Any] | None,
        strategy: str | Strategy | None,
        parent_id: str,
        root_id: str,
    ) -> TaskInfo:
        """Submit a child task (ctx.spawn), listed under its parent."""

    async def wait(self, task_id: str) -> TaskInfo:
        """Wait until a task is finished."""

    async def cancel_children(self, task_id: str) -> None:
        """Cancel every child of a task that is still in flight."""

    def forget(self, task_id: str, actor: object) -> None:
        """The actor stopped: take it out of the table (if it is still there)."""

    def actor_crashed(self, task_id: str) -> None:
        """The actor of a task crashed: let go of the task."""
