"""Run the fused LIF through the Triton kernels on any device (CPU tensors under
``TRITON_INTERPRET=1``): the test-only way past :func:`mpbn.functional.lif_backend.triton_usable`,
which sends CPU tensors to the torch code.

Not collected by pytest (no ``test_`` prefix); imported by the interpreter checks in
``test_fused.py``, which run in a subprocess.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mpbn.functional import fused
from mpbn.functional.neuron import LIFParams


def run_triton(x_seq: Tensor, grad_out: Tensor | None, norm: fused.MembraneNormArgs | None,
               wrt: list[Tensor], params: LIFParams) -> tuple[Tensor, tuple[Tensor, ...] | None]:
    """``(spikes, grads)`` through the Triton kernels; ``grads`` w.r.t. ``x_seq`` and ``wrt``.

    With ``grad_out=None`` the forward alone runs under ``torch.no_grad()`` and ``grads`` is
    ``None``.
    """
    cfg = fused.step_config(x_seq, params, norm)
    weight = norm.weight if norm is not None else None
    bias = norm.bias if norm is not None else None
    with torch.set_grad_enabled(grad_out is not None):
        out = fused.FusedLIF.apply(x_seq.contiguous(), weight, bias, params, norm, cfg, "triton")
    if grad_out is None:
        return out, None
    grads = torch.autograd.grad(out, [x_seq, *wrt], grad_out)
    return out.detach(), grads
