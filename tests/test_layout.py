"""The layout's rules that import-linter cannot state (README, "Architecture").

`make lint` runs these next to `lint-imports`: ``import actors`` stays
light, no module import cycle, no private trio import outside the one
quarantined module, and no module over 600 lines without a reason.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import grimp

ROOT = Path(__file__).parents[1]
PACKAGES = ("actors", "storage")

#: The one module allowed to touch trio's private internals (issue #18).
TRIO_COMPAT = "storage._compat"
#: A module over MAX_LINES says why in the first lines of its docstring.
MAX_LINES = 600
LONG_MARKER = "Why this module is long:"
MARKER_WITHIN = 20


def modules() -> Iterator[tuple[str, Path]]:
    """Every module of actors and storage, by dotted name."""
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(parts), path


def test_import_actors_loads_no_websocket_stack() -> None:
    code = (
        "import actors, sys; "
        "print(sorted(m for m in ('trio_websocket', 'wsproto') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "[]"


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative: no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
    return components


def shortest_cycle(graph: dict[str, set[str]], members: list[str]) -> list[str]:
    """A shortest cycle through the first member, inside its component."""
    inside = set(members)
    start = members[0]
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in sorted(graph[node] & inside):
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if nxt not in came_from:
                came_from[nxt] = node
                queue.append(nxt)
    raise AssertionError(f"no cycle through {start}")  # a component of 2+ has one


def test_no_import_cycle_between_modules() -> None:
    # grimp counts every import statement: those under TYPE_CHECKING and
    # those inside functions too, relative ones resolved.
    built = grimp.build_graph(*PACKAGES, cache_dir=None)
    graph = {
        module: set(built.find_modules_directly_imported_by(module)) for module in built.modules
    }
    cycles = [
        f"{' -> '.join(shortest_cycle(graph, members))} (all of {', '.join(members)})"
        for members in strongly_connected(graph)
        if len(members) > 1
    ]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def private_trio_uses(tree: ast.Module) -> Iterator[int]:
    """Lines that import or reach ``trio._core`` (or any other private trio module)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "trio"
        ):
            names = [f"trio.{node.attr}"]
        else:
            continue
        if any(name.startswith("trio._") for name in names):
            yield node.lineno


def test_no_private_trio_outside_the_compat_module() -> None:
    found = [
        f"{module}:{line}"
        for module, path in modules()
        if module != TRIO_COMPAT
        for line in private_trio_uses(ast.parse(path.read_text(), str(path)))
    ]
    assert not found, f"trio internals used outside {TRIO_COMPAT}: {found}"


def test_no_long_module_without_a_reason() -> None:
    unexplained = []
    for module, path in modules():
        source = path.read_text()
        lines = source.count("\n")
        if lines <= MAX_LINES:
            continue
        docstring = ast.get_docstring(ast.parse(source, str(path))) or ""
        if LONG_MARKER not in "\n".join(docstring.splitlines()[:MARKER_WITHIN]):
            unexplained.append(f"{module} ({lines} lines)")
    assert not unexplained, (
        f"modules over {MAX_LINES} lines whose docstring does not open with "
        f"{LONG_MARKER!r}: {unexplained}"
    )
