"""Step points: where instrumentation (and chaos tests) can watch step bodies run.

A runtime awaits its step observers (``Runtime.observe_steps``) at three
points of every step whose body is about to run (a replayed step reaches
none of them):

* ``before_step``: the body is about to run;
* ``after_body``: the body returned, its result is not stored yet;
* ``after_store``: the result is durable.

With no observer registered a step costs one truth test more. A
``CrashPoint`` is such an observer: it stops the runtime (``Runtime.abort``)
at its point, as if the process had been killed there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Literal, Protocol

import attrs
import trio

Point = Literal["before_step", "after_body", "after_store"]
POINTS: tuple[Point, ...] = ("before_step", "after_body", "after_store")

#: Awaited with (point, task_id, step name, journal index) at every step point.
StepObserver = Callable[[Point, str, str, int], Awaitable[None]]


async def notify_steps(
    observers: Sequence[StepObserver], point: Point, task_id: str, step: str, index: int
) -> None:
    """Await every observer at a point, in the order they were registered."""
    for observer in observers:
        await observer(point, task_id, step, index)


class Abortable(Protocol):
    """What a CrashPoint needs of a runtime (``Runtime`` is one)."""

    def observe_steps(self, observer: StepObserver) -> Callable[[], None]: ...

    def abort(self) -> None: ...


@attrs.define(eq=False)
class CrashPoint:
    """Crash a runtime (as if its process was killed) when a step reaches a point.

    Made by ``actors.testing.crash_at``. ``await point.wait()`` returns once the
    runtime has crashed.
    """

    when: Point
    #: Step name to match (None: any step).
    step: str | None = None
    #: Task id to match (None: any task).
    task_id: str | None = None
    #: Whether it fired.
    hit: bool = False
    #: Where it fired: (task_id, step name, index).
    where: tuple[str, str, int] | None = None
    _fired: trio.Event = attrs.field(factory=trio.Event, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.when not in POINTS:
            raise ValueError(f"unknown crash point {self.when!r}; expected one of {POINTS}")

    def matches(self, point: Point, task_id: str, step: str) -> bool:
        return (
            not self.hit
            and point == self.when
            and (self.step is None or self.step == step)
            and (self.task_id is None or self.task_id == task_id)
        )

    def fire(self, task_id: str, step: str, index: int) -> None:
        self.hit = True
        self.where = (task_id, step, index)
        self._fired.set()

    def arm(self, runtime: Abortable) -> CrashPoint:
        """Watch ``runtime``'s steps; at the first match, abort it (once).

        The step that matched never goes on: it waits until the abort
        cancels it. Returns the crash point itself.
        """

        async def observe(point: Point, task_id: str, step: str, index: int) -> None:
            if self.matches(point, task_id, step):
                remove()
                self.fire(task_id, step, index)
                runtime.abort()
                await trio.sleep_forever()

        remove = runtime.observe_steps(observe)
        return self

    async def wait(self) -> None:
        """Wait until the crash happened."""
        await self._fired.wait()
