"""Fault points: where tests can crash a runtime or watch step bodies run.

The runtime calls ``Runtime._fault_point`` at three points of every step whose
body is about to run (a replayed step reaches none of them):

* ``before_step``: the body is about to run;
* ``after_body``: the body returned, its result is not stored yet;
* ``after_store``: the result is durable.

With nothing armed the call costs one truth test.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal

import attrs
import trio

Point = Literal["before_step", "after_body", "after_store"]
POINTS: tuple[Point, ...] = ("before_step", "after_body", "after_store")

#: Called with (point, task_id, step name, journal index) at every fault point.
Observer = Callable[[Point, str, str, int], Awaitable[None]]


@attrs.define(eq=False)
class CrashPoint:
    """Crash the runtime (as if its process was killed) when a step reaches a point.

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

    async def wait(self) -> None:
        """Wait until the crash happened."""
        await self._fired.wait()
