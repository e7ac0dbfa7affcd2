"""Package structure (issue 18): an acyclic import graph, and modules and functions of readable size.

Import graph: every ``import``/``from … import`` of a ``keyboard_fl`` module, at
module level *and* inside functions, is an edge. Function-level imports do not
fail at import time, but a cycle through them is still a circle a reader has
to follow (the old ``export`` → ``onnx_export`` → ``models_registry`` →
``export`` circle ran through function-level imports), so the test forbids
both. ``from pkg import name`` is an edge to ``pkg.name`` when that is a module,
else to ``pkg``; the implicit import of parent packages is not an edge (every
module would otherwise form a cycle with a package ``__init__`` that
re-exports it).
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "keyboard_fl"
MAX_FILE_LINES = 450
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """``{module: {keyboard_fl modules it imports}}``, function-level imports included."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    pkg = pkg[: len(pkg) - (node.level - 1)]
                    base = ".".join(pkg + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            for t in targets:
                r = _resolve(t, mods) if t.split(".")[0] == "keyboard_fl" else None
                if r and r != mod:
                    graph[mod].add(r)
    return graph


def test_import_graph_is_acyclic():
    graph = import_graph()
    assert len(graph) > 50 and graph["keyboard_fl.cli"]  # the walk found the package and its edges
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as e:
        raise AssertionError("import cycle: " + " -> ".join(e.args[1])) from None


def test_the_cycle_check_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError:
        return
    raise AssertionError("graphlib missed a cycle")


def _long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            n = node.end_lineno - start + 1
            if n > MAX_FUNCTION_LINES:
                out.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}() is {n} lines")
    return out


def test_no_module_over_450_lines_and_no_function_over_80():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        n = len(path.read_text().splitlines())
        if n > MAX_FILE_LINES:
            offenders.append(f"{path.relative_to(ROOT)} is {n} lines")
        offenders += _long_functions(path)
    assert offenders == [], f"over {MAX_FILE_LINES} lines a file or {MAX_FUNCTION_LINES} a function:\n" + "\n".join(
        offenders
    )
