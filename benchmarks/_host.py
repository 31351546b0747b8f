"""What a benchmark's header says about the host: the CPU allocator and its settings.

Shared by the scripts in this folder (each run as ``python benchmarks/<script>.py``, which puts
this folder on ``sys.path``). The allocator moves large-tensor CPU timings by 2-9x
(docs/PERFORMANCE.md, "Large tensors and the allocator"), so every table names it.
"""

from __future__ import annotations

import os

__all__ = ["allocator"]


def allocator() -> str:
    """The CPU malloc in use (jemalloc/tcmalloc/mimalloc via ``LD_PRELOAD``) and its settings."""
    preload = os.environ.get("LD_PRELOAD", "")
    for name in ("jemalloc", "tcmalloc", "mimalloc"):
        if name in preload:
            conf = os.environ.get("MALLOC_CONF", "")
            return f"{name} (LD_PRELOAD={preload}" + (f", MALLOC_CONF={conf})" if conf else ")")
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return "glibc malloc" + (f" (GLIBC_TUNABLES={tunables})" if tunables else "")
