"""What every part of the exporter shares: its error and the optional ``nir`` import."""

from __future__ import annotations

from typing import Any


class NIRExportError(ValueError):
    """The model contains something NIR (or this exporter) cannot express."""


def _nir() -> Any:
    try:
        import nir
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("NIR export needs the `nir` package: pip install 'mpbn[export]'") from err
    return nir
