"""The one module that touches private internals (trio's and CPython's).

Why this module exists
----------------------
Three performance tricks and one test tool need things their owners do not
promise to keep: trio's "park this task" message, trio's scheduler random
generator, and CPython's C JSON encoder. Each is reached here and nowhere
else (issue #18; ``tests/test_layout.py`` refuses ``trio._...`` anywhere
else), each has a public fallback for when it is gone, and
``tests/test_compat.py`` asserts that every one of them is still there and
still works: a trio or Python upgrade that removes one fails that test
loudly instead of falling back in silence (and slowing down, or losing the
simulation's replays).

This module is a leaf: it imports nothing of ``storage``, and it imports
trio only inside the functions that need it, so that ``storage.model`` (which
never imports trio) may use the JSON encoder from here.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from json.encoder import c_make_encoder as _c_make_encoder  # type: ignore[attr-defined]
from typing import Any

#: CPython's C encoder factory (``_json.make_encoder``), or None on a Python
#: without the ``_json`` accelerator. ``json.JSONEncoder`` builds one per
#: ``encode`` call; ``storage.model._codec`` builds one once, which costs half
#: (issue #5). Called as ``c_make_encoder(markers, default, encoder, indent,
#: key_separator, item_separator, sort_keys, skipkeys, allow_nan)``.
c_make_encoder: Callable[..., Callable[[Any, int], Any]] | None = _c_make_encoder


def park_message(abort_fn: Callable[[Any], Any]) -> object | None:
    """trio's message "park this task until it is rescheduled", or None.

    What ``trio.lowlevel.wait_task_rescheduled(abort_fn)`` yields to trio's
    run loop (``trio._core._traps.WaitTaskRescheduled``). Made once and
    yielded by a task's own awaitable, it saves the coroutine, generator and
    message that the public function makes for every wait (issue #5).

    Returns:
        The message, or None if trio no longer has it (then wait with
        ``trio.lowlevel.wait_task_rescheduled``).
    """
    try:
        from trio._core._traps import WaitTaskRescheduled

        return WaitTaskRescheduled(abort_fn)
    except Exception:  # pragma: no cover - another trio (tests/test_compat.py fails)
        return None


def scheduler_random() -> random.Random | None:
    """The generator trio's scheduler shuffles runnable tasks with, or None.

    ``trio._core._run._r``: ``actors.testing.run_simulation`` seeds it so that
    one seed replays one run, scheduling order included.

    Returns:
        The generator, or None if trio no longer has it (then runs are
        replayable only up to scheduling order).
    """
    try:
        from trio._core import _run

        generator = _run._r
    except Exception:  # pragma: no cover - another trio (tests/test_compat.py fails)
        return None
    return generator if isinstance(generator, random.Random) else None
