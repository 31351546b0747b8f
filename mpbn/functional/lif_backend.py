"""Which implementation of the fused LIF runs: the process-wide switches and failure flags.

Three implementations compute the same function (:mod:`mpbn.functional.fused`): the eager
recurrence of :mod:`mpbn.functional.lif_recurrence`, the same Python code through
``torch.compile``, and the Triton kernels of :mod:`mpbn.functional.triton_lif` on CUDA.
``backend="auto"`` picks Triton where it applies, else compiled if :func:`compile_enabled`,
else eager.

Compile and Triton are optimizations only. If one fails (no C++ compiler, an Inductor
limitation, a Triton version or GPU the kernels do not support), it warns once, the torch code
runs, and :data:`STATE` remembers the failure for the rest of the process, so a training run
never breaks and never warns per step.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "BACKENDS",
    "STATE",
    "compile_enabled",
    "note_triton_failure",
    "resolve_backend",
    "run_maybe_compiled",
    "set_compile",
    "triton_usable",
]

#: ``backend`` values of :func:`mpbn.functional.fused.lif_fused`.
BACKENDS = ("auto", "eager", "compiled", "triton")


@dataclass
class BackendState:
    """Process-wide switches and sticky failure flags.

    Attributes:
        compile: ``backend="auto"`` compiles on CPU. Opt-in: the first call per shape costs
            ~10-20 s of gcc, which a test suite or a short run does not want to pay by
            surprise. ``MPBN_COMPILE=1`` (or :func:`set_compile`) turns it on.
        compile_failed: A compile failed once; the eager code runs from then on.
        triton_failed: A Triton kernel failed once; the torch code runs from then on.
    """

    compile: bool = os.environ.get("MPBN_COMPILE", "0") not in ("", "0", "false", "False")
    compile_failed: bool = False
    triton_failed: bool = False


STATE = BackendState()


def set_compile(enabled: bool) -> None:
    """Use ``torch.compile`` d loops for CPU tensors under ``backend="auto"``."""
    STATE.compile = bool(enabled)


def compile_enabled() -> bool:
    """Whether ``backend="auto"`` compiles on CPU (``MPBN_COMPILE=1`` or :func:`set_compile`)."""
    return STATE.compile


def triton_usable(x_seq: Tensor) -> bool:
    """CUDA, Triton importable, no earlier failure, and a dtype the kernels compute exactly
    (they run in float32: float64 never takes them)."""
    if not x_seq.is_cuda or STATE.triton_failed or x_seq.dtype == torch.float64:
        return False
    from mpbn.functional import triton_lif

    return triton_lif.available()


def resolve_backend(requested: str, x_seq: Tensor) -> str:
    """The implementation that runs for ``requested``: ``"triton"``, ``"compiled"`` or ``"eager"``.

    ``"triton"`` where it cannot run (no CUDA, float64, an earlier failure) means eager.
    """
    if requested not in BACKENDS:
        raise ValueError(f"unknown backend {requested!r}; valid: {', '.join(BACKENDS)}")
    if requested in ("auto", "triton") and triton_usable(x_seq):
        return "triton"
    if requested == "auto":
        return "compiled" if compile_enabled() else "eager"
    return "eager" if requested == "triton" else requested


def note_triton_failure(error: Exception) -> None:
    """Remember that a Triton kernel failed and warn once; the caller runs the torch code."""
    STATE.triton_failed = True
    warnings.warn(f"the Triton LIF kernel failed ({type(error).__name__}: {error}); using the "
                  "eager fused path", RuntimeWarning, stacklevel=3)


_compiled: dict[Callable[..., Any], Callable[..., Any]] = {}
# One compiled function serves every layer, each (shape, configuration) its own specialization
# (dynamic=False). Dynamo's default of 8 per function is fewer than a ResNet's layer shapes x
# train/eval modes x MPBN variants: it raised, and the fallback then ran every layer eagerly.
RECOMPILE_LIMIT = 256


def run_maybe_compiled(fn: Callable[..., Any], compiled: bool, *args: Any) -> Any:
    """``fn(*args)``, through ``torch.compile(fn)`` when ``compiled`` and no compile failed."""
    if compiled and not STATE.compile_failed:
        if fn not in _compiled:
            _compiled[fn] = torch.compile(fn, dynamic=False, fullgraph=True)
        dynamo_config = torch._dynamo.config
        # torch < 2.6 names it cache_size_limit
        key = "recompile_limit" if hasattr(dynamo_config, "recompile_limit") else "cache_size_limit"
        limit = getattr(dynamo_config, key)
        try:
            # Raised for this call only (two setattrs: cheaper per call than config.patch).
            setattr(dynamo_config, key, max(limit, RECOMPILE_LIMIT))
            return _compiled[fn](*args)
        except Exception as error:  # noqa: BLE001 - any compile failure means "run eagerly"
            STATE.compile_failed = True
            warnings.warn(f"torch.compile of the fused LIF failed ({type(error).__name__}: "
                          f"{error}); using the eager fused path", RuntimeWarning, stacklevel=2)
        finally:
            setattr(dynamo_config, key, limit)
    return fn(*args)
