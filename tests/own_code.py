"""A fixture for tests that import code of one's own: the registries as they were afterwards.

Imported by tests as ``from own_code import restored_registries`` (``tests`` is on pytest's
``pythonpath``; not collected: the name does not start with ``test_``).
"""

from __future__ import annotations

import sys

import pytest


@pytest.fixture
def restored_registries():
    """Undo what importing user code registers: models, datasets, modules, import records."""
    from mpbn.data import registry as data_registry
    from mpbn.engine import loading
    from mpbn.models import _registry as model_registry

    saved = [(table, dict(table)) for table in (
        model_registry._MODELS, data_registry._BUILDERS, loading._ENTRY_OF_MODULE,
        loading._ENTRY_OF_DATASET, loading._IMPORTED_FILES)]
    def user_modules() -> set[str]:
        return set(loading._IMPORTED_FILES.values()) | set(loading._ENTRY_OF_MODULE)

    before_modules, path = user_modules(), list(sys.path)
    yield
    # Only the modules user code brought in (a C extension imported meanwhile cannot be
    # imported twice, so nothing else is dropped).
    for name in user_modules() - before_modules:
        sys.modules.pop(name, None)
    for table, before in saved:
        table.clear()
        table.update(before)
    data_registry._NO_HOLDOUT.intersection_update(data_registry._BUILDERS)
    sys.path[:] = path
