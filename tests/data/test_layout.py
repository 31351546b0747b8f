"""The shape of mpbn.data: what it may import, and who registers the datasets.

``mpbn.data`` depends on ``mpbn.functional`` at most; the registry imports no dataset module (the
dataset modules import it); the modules of the package import each other without a cycle.
"""

import ast
from pathlib import Path

import mpbn.data
from mpbn.data import registry
from mpbn.data.registry import _BUILDERS

PACKAGE = Path(mpbn.data.__file__).parent
ALLOWED_OUTSIDE = ("mpbn.functional",)


def _imports(path: Path) -> set[str]:
    """Absolute names of the mpbn modules ``path`` imports (top level and inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = "mpbn.data" if node.level == 1 else "mpbn"
                base = f"{base}.{node.module}" if node.module else base
                # ``from . import cifar`` names modules; ``from .cifar import X`` names one.
                found |= {f"{base}.{a.name}" for a in node.names} if not node.module else {base}
            else:
                found.add(node.module)
    return {name for name in found if name == "mpbn" or name.startswith("mpbn.")}


def _graph() -> dict[str, set[str]]:
    modules = {f"mpbn.data.{p.stem}": p for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    return {name: {m for m in _imports(path) if m in modules} for name, path in modules.items()}


def test_data_imports_nothing_above_functional():
    upward = [
        f"{path.name} imports {name}"
        for path in sorted(PACKAGE.glob("*.py"))
        for name in sorted(_imports(path))
        if not name.startswith("mpbn.data")
        and not any(name == a or name.startswith(a + ".") for a in ALLOWED_OUTSIDE)
    ]
    assert not upward, "; ".join(upward)


def test_registry_imports_no_dataset_module():
    assert _graph()["mpbn.data.registry"] <= {"mpbn.data.info"}


def test_no_import_cycle_inside_data():
    graph = _graph()

    def cycle_from(start, node, path):
        for nxt in sorted(graph[node]):
            if nxt == start:
                return [*path, nxt]
            if nxt not in path:
                found = cycle_from(start, nxt, [*path, nxt])
                if found:
                    return found
        return None

    for module in sorted(graph):
        cycle = cycle_from(module, module, [module])
        assert cycle is None, " -> ".join(cycle)


def test_every_dataset_is_registered_by_its_own_module():
    owners = {name: builder.__module__ for name, builder in _BUILDERS.items()}
    assert registry.__name__ not in owners.values(), owners
    assert owners["digits"] == "mpbn.data.digits"
    assert owners["cifar10"] == owners["cifar100"] == "mpbn.data.cifar"
    assert owners["smnist"] == "mpbn.data.mnist"
    assert owners["imagenet"] == owners["tiny-imagenet"] == "mpbn.data.folders"
    assert owners["cifar10-dvs"] == owners["nmnist"] == owners["dvs128-gesture"] \
        == "mpbn.data.events_datasets"
