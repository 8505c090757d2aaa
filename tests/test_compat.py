"""The private internals storage._compat reaches are still there and still work.

A trio upgrade that removes one fails here, loudly, instead of the runtime
falling back in silence (slower waits, simulations that no longer replay).
"""

from __future__ import annotations

import random

import trio
import trio.testing

from storage import _compat


def test_trio_still_has_its_park_message() -> None:
    message = _compat.park_message(lambda _: trio.lowlevel.Abort.FAILED)
    assert message is not None


async def test_a_task_parked_with_the_message_is_woken_by_reschedule() -> None:
    message = _compat.park_message(lambda _: trio.lowlevel.Abort.FAILED)

    class Park:
        def __await__(self):  # type: ignore[no-untyped-def]
            return (yield message)

    woken = []

    async def sleeper() -> None:
        task.append(trio.lowlevel.current_task())
        woken.append(await Park())

    task: list[trio.lowlevel.Task] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sleeper)
        await trio.testing.wait_all_tasks_blocked()
        trio.lowlevel.reschedule(task[0])
    assert len(woken) == 1


def test_trio_still_shuffles_with_a_random_generator() -> None:
    assert isinstance(_compat.scheduler_random(), random.Random)


def test_the_c_json_encoder_is_there() -> None:
    assert _compat.c_make_encoder is not None
