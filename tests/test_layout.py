"""The package's layout rules: small modules, imports that flow one way, no private imports.

Read from the source with :mod:`ast` (nothing is imported): every ``import`` of a
module of ``n2s_eds``, at module level or inside a function, is an edge of the
import graph, and the graph must have no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "n2s_eds"
MAX_LINES = 600


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    """The absolute module an ``ImportFrom`` names (``from ..x import y`` -> ``n2s_eds.x``)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str) -> list[tuple[str, list[str], int]]:
    """(imported module, imported names, line) of every import in module ``name``."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = resolve(name, node, path.name == "__init__.py")
            found.append((target, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                found.append((alias.name, [], node.lineno))
    return found


def edges() -> dict[str, set[str]]:
    """The import graph between n2s_eds modules (a name that is a submodule counts as one)."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for name in MODULES:
        for target, names, _ in imports_of(name):
            if not target.startswith("n2s_eds"):
                continue
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            graph[name].update(subs)
            if len(subs) < len(names) or not names:
                if target in MODULES and target != name:
                    graph[name].add(target)
    return graph


def test_no_module_is_over_600_lines():
    long = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in MODULES.values()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Cycles of a directed graph found by depth-first search (each as a closed path)."""
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_no_import_cycle():
    cycles = find_cycles(edges())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_cycle_search_finds_cycles():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_no_private_name_is_imported_from_another_module():
    bad = []
    for name in MODULES:
        for target, names, line in imports_of(name):
            if not target.startswith("n2s_eds"):
                continue
            private = [n for n in names if n.startswith("_") and n != "__version__"]
            if private or any(part.startswith("_") for part in target.split(".")[1:]):
                bad.append(f"{name}:{line} from {target} import {', '.join(names)}")
    assert not bad, "private names imported: " + "; ".join(bad)


def test_the_package_names_no_sibling_folder():
    """Only the datasets helper may name ``../shared`` (its default data folder)."""
    offenders = [
        str(p.relative_to(PACKAGE.parent))
        for name, p in MODULES.items()
        if name != "n2s_eds.datasets"
        and ("../shared" in p.read_text() or "QUALITY_NOTES" in p.read_text())
    ]
    assert not offenders, f"modules naming ../shared: {offenders}"
