"""Run every benchmark: ``python -m bench [--quick] [scenario ...]``.

``QUICK=1`` in the environment (``make bench QUICK=1``) or ``--quick`` runs
the small version (under a minute). Naming scenarios (``baselines``, ``a``
... ``f``) runs only those; the baselines always run first, since every
figure is compared with a baseline of the same run. A scenario that fails
prints an ``error`` line and the others go on.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

from . import baselines, cancel, events, fanout, memory, recovery, throughput
from ._common import Bench, log, machine, scratch

SCENARIOS: dict[str, tuple[str, Callable[[Bench], None]]] = {
    "a": ("durable throughput", throughput.run),
    "b": ("event-heavy tasks", events.run),
    "c": ("cancel latency", cancel.run),
    "d": ("memory", memory.run),
    "e": ("websocket fan-out", fanout.run),
    "f": ("recovery", recovery.run),
}


def main(argv: list[str]) -> int:
    quick = os.environ.get("QUICK", "") not in ("", "0") or "--quick" in argv
    chosen = [arg for arg in argv if not arg.startswith("-")]
    unknown = [name for name in chosen if name not in SCENARIOS and name != "baselines"]
    if unknown:
        print(f"unknown scenario(s) {unknown}; choose from {sorted(SCENARIOS)}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    with scratch() as folder:
        b = Bench(quick=quick, workdir=folder)
        b.emit("machine", "machine", None, "", quick=quick, **machine())
        log(f"{'quick' if quick else 'full'} run in {folder}")
        baselines.run(b)
        for key, (title, run) in SCENARIOS.items():
            if chosen and key not in chosen:
                continue
            log(f"scenario {key}: {title}")
            try:
                run(b)
            except Exception as exc:  # one scenario's failure must not stop the others
                b.error(key, title, f"{type(exc).__name__}: {exc}")
    b.emit("run", "elapsed", time.perf_counter() - started, "s", quick=quick)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
