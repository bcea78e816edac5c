"""The library's shape: stages are layers, no import circles, our own imports at the top of modules."""

from __future__ import annotations

import ast
from pathlib import Path

import swelab

LIB = Path(swelab.__file__).resolve().parent
STAGES = ("select", "generate", "evaluate", "analyze")  # in flow order: each may import those before it
TOP = ("cli", "service", "client")  # the entry points above every stage


def _modules() -> dict[str, Path]:
    modules = {}
    for path in LIB.rglob("*.py"):
        if "minibench/repos" in path.as_posix():
            continue
        parts = ("swelab", *path.relative_to(LIB).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _imports(modules: dict[str, Path]) -> list[tuple[str, str, bool, int]]:
    """(importer, imported module, inside a function, line) for every import of our own modules."""
    found = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for scope, nested in [(tree, False)] + [(f, True) for f in ast.walk(tree)
                                                 if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            body = ast.walk(scope) if nested else ast.iter_child_nodes(scope)
            for node in body:
                targets = []
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("swelab"):
                    targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                               for a in node.names]
                elif isinstance(node, ast.Import):
                    targets = [a.name for a in node.names if a.name.startswith("swelab")]
                found += [(name, target, nested, node.lineno) for target in targets]
    return found


def _floor(module: str) -> int:
    """0 the ground floor, 1..4 the stages, 5 the entry points."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in STAGES:
        return 1 + STAGES.index(parts[1])
    return 5 if len(parts) > 1 and parts[1] in TOP else 0


def test_no_module_imports_a_later_stage_or_the_ground_floor_a_stage() -> None:
    modules = _modules()
    upward = sorted({(a, b) for a, b, _, _ in _imports(modules) if _floor(b) > _floor(a)})
    assert upward == [], f"imports that point up the flow: {upward}"


def test_no_import_circles() -> None:
    modules = _modules()
    edges: dict[str, set[str]] = {}
    for a, b, _, _ in _imports(modules):
        if a != b and not a.startswith(b + "."):  # a module's own package is not an arrow
            edges.setdefault(a, set()).add(b)
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for module in sorted(modules):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_our_own_modules_are_imported_at_the_top() -> None:
    """An import inside a function hides an arrow; ours are never optional, so none may hide there."""
    inner = [(a, b, line) for a, b, nested, line in _imports(_modules()) if nested]
    assert inner == []
