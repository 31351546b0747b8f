"""``torch.compile`` of a model for training (``run.compile``), with the Inductor options the
engine measured to matter.

One place for them, so that ``mpbn train``, the benchmarks and the GPU suite compile a model the
same way.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mpbn.layers.neuron import MembraneBN

__all__ = ["compile_model", "inductor_options"]


def inductor_options(model: nn.Module, device: torch.device | str) -> dict[str, Any] | None:
    """Inductor options for compiling ``model`` on ``device`` (``None``: Inductor's defaults).

    On CPU, Inductor's layout optimization (channels-last buffers around the convolutions) turns
    element-wise MPBN's per-neuron sums over the batch (MPBN Sec. 5.2) into scalar loops that
    stride across channels-last and NCHW buffers. Without it the compiled ``fastnet`` training
    step (T = 1, batch 256) with element-wise MPBN took 0.76x the time, but 1.04x with
    channel-wise MPBN and 1.22x without MPBN (at T = 2: 0.97x element-wise, 1.11x
    channel-wise; ``python benchmarks/bench_compile_layout.py [--timesteps 2]``,
    docs/PERFORMANCE.md), so it is turned off only for models with element-wise MPBN. CUDA
    keeps the default: its convolutions gain from channels-last, and its neurons run the Triton
    kernels, not Inductor's reductions.
    """
    element_wise = any(isinstance(m, MembraneBN) and m.granularity == "element"
                       for m in model.modules())
    if torch.device(device).type == "cpu" and element_wise:
        return {"layout_optimization": False}
    return None


def compile_model(model: nn.Module, device: torch.device | str, **kwargs: Any) -> nn.Module:
    """``torch.compile(model, options=inductor_options(model, device), **kwargs)``."""
    options = inductor_options(model, device)
    if options is not None and kwargs.get("backend", "inductor") == "inductor":
        kwargs["options"] = {**options, **kwargs.get("options", {})}
    return torch.compile(model, **kwargs)
