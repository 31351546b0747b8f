"""What a benchmark's header says about the host: the CPU allocator and its settings.

Shared by the scripts in this folder (each run as ``python benchmarks/<script>.py``, which puts
this folder on ``sys.path``). The allocator moves large-tensor CPU timings by 2-9x
(docs/PERFORMANCE.md, "Large tensors and the allocator"), so every table names it. The one
definition is the engine's (:func:`mpbn.engine.metrics.allocator`), which also records it with
every seed's train time.
"""

from __future__ import annotations

from mpbn.engine.metrics import allocator

__all__ = ["allocator"]
