"""The package's shape: no import circle (lazy imports included), and units and direction
arrows defined in one place."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "uqbench"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pkg import sub` imports the submodule; `from mod import name`, mod
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
                           else node.module for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circle_in_the_report_wing():
    graph = _graph()
    wing = {m: {t for t in deps if t.startswith("uqbench.report")}
            for m, deps in graph.items() if m.startswith("uqbench.report")}
    assert _cycle(wing) is None, " -> ".join(_cycle(wing))


def test_no_import_circle_in_uqbench():
    graph = _graph()
    # the package's own __init__ re-exports its front doors: edges into it are lookups of
    # those names, not a structure
    graph = {m: {t for t in deps if t != "uqbench"} for m, deps in graph.items()}
    found = _cycle(graph)
    assert found is None, " -> ".join(found)


def test_units_and_arrows_have_one_home():
    homes = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if '"eV/atom", "forces": "eV/Å"' in text or '"lower": "↓"' in text:
            homes.append(str(path.relative_to(PACKAGE)))
    assert homes == ["metrics/table.py"], homes


def _own_names(tree: ast.AST) -> set[str]:
    """Underscore names a file defines itself (its functions, methods and attributes)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return {n for n in names if n.startswith("_")}


def test_strategies_and_the_example_plugin_use_only_public_names_of_uqbench():
    """What a built-in strategy needs from uqbench, a plugin author can use too."""
    root = PACKAGE.parent
    files = sorted((PACKAGE / "strategies").glob("*.py")) + sorted(
        (root / "examples" / "plugin").rglob("*.py"))
    base = PACKAGE / "strategies" / "base.py"
    found = []
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        own = _own_names(tree) if path != base else set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("uqbench"):
                found += [f"{path.name}: imports {a.name}" for a in node.names
                          if a.name.startswith("_")]
            if (path != base and isinstance(node, ast.Attribute)
                    and node.attr.startswith("_") and not node.attr.startswith("__")
                    and node.attr not in own):
                found.append(f"{path.name}:{node.lineno}: .{node.attr}")
    assert not found, found
