"""Terminal output of the command line: event lines, progress bars, tables.

On a terminal, ``Display`` keeps one progress row per task at the bottom of
the screen and redraws them in place (plain ANSI: cursor up, erase down)
while event lines scroll above them. Anywhere else (a pipe, a file, a test)
it writes plain lines only: nothing is ever redrawn, so the output reads
well in a log.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

#: ANSI colours of the states worth a glance.
_STATE_COLOURS = {
    "completed": "32",  # green
    "failed": "31",  # red
    "cancelled": "33",  # yellow
    "rejected": "33",
    "paused": "36",  # cyan
    "stopped": "35",  # magenta
    "input_required": "1;34",  # bold blue
    "auth_required": "1;34",
}


def short_id(task_id: str) -> str:
    """A task id cut to 8 characters for people: its end. Generated ids are
    UUIDv7, whose first digits are the creation time, the same for tasks made
    together; their last digits are random (a child's id ends in its index)."""
    return task_id[-8:]


def clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters (with an ellipsis when cut)."""
    if width <= 1 or len(text) <= width:
        return text
    return text[: width - 1] + "…"


def compact(value: Any, width: int = 60) -> str:
    """A short one-line JSON rendering of a value."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return clip(text.replace("\n", " "), width)


def bar(done: float, total: float | None, width: int = 20, *, fancy: bool = False) -> str:
    """``[######------] 3/8`` (or ``3 done`` when the total is unknown)."""
    filled_char, empty_char = ("█", "░") if fancy else ("#", "-")
    if not total or total <= 0 or not math.isfinite(done):
        return f"{_number(done)} done"
    fraction = min(max(done / total, 0.0), 1.0)
    filled = round(fraction * width)
    return (
        f"[{filled_char * filled}{empty_char * (width - filled)}] {_number(done)}/{_number(total)}"
    )


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def clock(at: Any) -> str:
    """``HH:MM:SS.mmm`` (local time) of an event's ``at``."""
    if not isinstance(at, int | float):
        return "--:--:--.---"
    seconds = time.strftime("%H:%M:%S", time.localtime(at))
    return f"{seconds}.{int((at % 1) * 1000):03d}"


def describe(event: Mapping[str, Any]) -> str:
    """What an event says, in a few words (by kind)."""
    kind = event.get("kind")
    data = event.get("data")
    if not isinstance(data, dict):
        return compact(data)
    if kind == "state":
        text = (
            f"{data['from']} -> {data.get('to', '?')}" if data.get("from") else str(data.get("to"))
        )
        for key in ("reason", "error"):
            if data.get(key):
                text += f"  ({data[key]})"
        if "question" in data:
            text += f"  asks: {compact(data['question'])}"
        return text
    if kind == "progress":
        return bar(data.get("done", 0), data.get("total"), 10)
    if kind in ("step_started", "step_completed", "step_failed"):
        text = str(data.get("name", "?"))
        return text + (f"  ({data['error']})" if data.get("error") else "")
    if kind == "usage":
        caller = f" by {data['caller']}" if data.get("caller") else ""
        return (
            f"{data.get('model')}: {data.get('input_tokens', 0)} in,"
            f" {data.get('output_tokens', 0)} out{caller}"
        )
    if kind == "retry":
        return f"attempt {data.get('attempt')} in {data.get('delay')} s after {data.get('error')}"
    return compact(data)


def event_line(event: Mapping[str, Any], prefix: str = "") -> str:
    """One line for an event: time, seq, kind, what it says."""
    seq = f"#{event.get('seq', '?')}"
    kind = str(event.get("kind", "?"))
    return f"{prefix}{clock(event.get('at'))}  {seq:>5}  {kind:<16} {describe(event)}"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain text table: a header line, then one line per row, columns aligned."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


def age(seconds: float) -> str:
    """``12 s``, ``4 min``, ``3 h``, ``2 d``."""
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


class Display:
    """Scrolling lines above live rows (on a terminal), or plain lines.

    Args:
        out: where to write.
        live: redraw rows in place (default: whether ``out`` is a terminal).
        colour: colour state names (default: live and ``NO_COLOR`` unset).
    """

    def __init__(
        self, out: TextIO, *, live: bool | None = None, colour: bool | None = None
    ) -> None:
        self.out = out
        isatty = getattr(out, "isatty", None)
        self.live = bool(isatty and isatty()) if live is None else live
        self.colour = self.live and "NO_COLOR" not in os.environ if colour is None else colour
        encoding = (getattr(out, "encoding", None) or "").lower().replace("-", "")
        #: Whether block characters can be drawn.
        self.fancy = self.live and encoding == "utf8"
        self._rows: dict[str, str] = {}
        self._drawn = 0

    @property
    def width(self) -> int:
        return shutil.get_terminal_size((100, 24)).columns if self.live else 10_000

    def paint(self, text: str) -> str:
        """Colour the state names in ``text`` (when colour is on)."""
        if not self.colour:
            return text
        for state, code in _STATE_COLOURS.items():
            text = text.replace(f" {state}", f" \x1b[{code}m{state}\x1b[0m")
        return text

    def line(self, text: str) -> None:
        """Write a line above the live rows."""
        self._erase()
        self.out.write(self.paint(clip(text, self.width - 1)) + "\n")
        self._draw()
        self.out.flush()

    def row(self, key: str, text: str, *, redraw: bool = True) -> None:
        """Set the live row ``key`` (shown on a terminal only); without
        ``redraw`` it shows at the next ``line`` or ``row``."""
        self._rows[key] = text
        if self.live and redraw:
            self._erase()
            self._draw()
            self.out.flush()

    def close(self) -> None:
        """Leave the rows on screen as they are; later output goes below them."""
        self._drawn = 0
        self._rows.clear()
        self.out.flush()

    def _erase(self) -> None:
        if self.live and self._drawn:
            self.out.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def _draw(self) -> None:
        if not self.live:
            return
        width = self.width - 1
        for text in self._rows.values():
            self.out.write(self.paint(clip(text, width)) + "\n")
        self._drawn = len(self._rows)
