"""The package's dependencies point down and have no cycle (docs/ARCHITECTURE.md).

Every ``import`` of an ``mpbn`` module anywhere in a file counts, at module level or inside a
function (a lazy import is still a dependency), and importing ``mpbn.a.b`` also imports the
package ``mpbn.a``. The test names each offending import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mpbn

PACKAGE = Path(mpbn.__file__).parent

#: Each top-level part of the package and its layer: a module may import its own part and any
#: part of a *lower* layer, nothing else (parts on one layer do not know each other).
LAYERS: dict[str, int] = {
    "recipes": 0,
    "version": 0,
    "functional": 1,
    "layers": 2,
    "data": 2,
    "models": 3,
    "engine": 4,
    "export": 4,
    "analysis": 5,
    "cli": 6,
    "__main__": 7,
    "": 7,  # mpbn/__init__.py, the curated API
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str) -> str:
    """The module file a dotted name lives in (``mpbn.layers.LIF`` -> ``mpbn.layers``)."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _with_parents(name: str, importer: str) -> set[str]:
    """``name`` and the packages above it that importing it runs: not the root ``mpbn``, and
    not a package the importer is inside of (its ``__init__`` is already running)."""
    parts = name.split(".")
    parents = {".".join(parts[:i]) for i in range(2, len(parts))}
    return {name} | {p for p in parents if not importer.startswith(p + ".")}


def imports_of(path: Path, importer: str = "") -> dict[str, int]:
    """The ``mpbn`` modules ``path`` (module ``importer``) imports, each with the line of its
    first import."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name == "mpbn" or name.startswith("mpbn."):
                for target in _with_parents(_resolve(name), importer):
                    found.setdefault(target, node.lineno)
    return found


GRAPH = {name: imports_of(path, name) for name, path in MODULES.items()}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_part_has_a_layer():
    assert {_part(m) for m in MODULES} <= set(LAYERS)


def test_dependencies_point_down():
    wrong = []
    for module, targets in GRAPH.items():
        for target, line in targets.items():
            mine, theirs = _part(module), _part(target)
            if mine != theirs and LAYERS[theirs] >= LAYERS[mine]:
                wrong.append(f"{MODULES[module].relative_to(PACKAGE.parent)}:{line} imports "
                             f"{target} ({theirs or 'mpbn'} is not below {mine})")
    assert not wrong, "upward or sideways imports:\n" + "\n".join(wrong)


def test_no_import_cycle():
    """Tarjan's strongly connected components of the module graph (package inits included)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in GRAPH:
        if node not in index:
            visit(node)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_check_catches_an_upward_import(tmp_path):
    """The walker sees a lazy import inside a function (the kind that hid the old cycle)."""
    path = tmp_path / "probe.py"
    path.write_text("def f():\n    from mpbn.engine.distributed import setup_distributed\n")
    assert "mpbn.engine.distributed" in imports_of(path)
    assert "mpbn.engine" in imports_of(path)
