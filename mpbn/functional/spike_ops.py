"""Conv and linear layers on binary spike inputs that keep their input as ``torch.bool`` for
backward.

A conv or linear layer saves its input for the weight gradient ``dL/dW = sum_n g_n x_n^T``. When
the input is the output of a LIF (MPBN Eq. 2: ``o = 1[v - V_th > 0]``), every element is exactly
0 or 1, so one byte (``torch.bool``) holds it without loss where PyTorch keeps the 4 bytes of
float32. These Functions compute the same forward (``F.conv*d`` / ``F.linear``) and the same
gradients as the standard ops (``aten.convolution_backward``, the kernel autograd itself calls
for a convolution; the matrix products of linear's backward), from the bool copy cast back to
the input dtype.

Precondition: ``x`` holds only 0 and 1. It is not checked (that would cost a pass over ``x``);
callers use these ops only where the input is structurally a LIF's output
(:class:`mpbn.models.ConvNorm` with ``spike_input=True``). Signed Poisson spikes ``{-1, 0, 1}``,
average-pooled spikes and analog images would get wrong gradients.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["SpikeConvFunction", "SpikeLinearFunction", "spike_conv", "spike_linear",
           "spike_ops_apply"]

_IntOrTuple = int | Sequence[int]
_CONVS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _unpack(spikes: Tensor, dtype: torch.dtype) -> Tensor:
    # bool -> float is several times slower on CPU than the same bytes read as uint8
    return spikes.view(torch.uint8).to(dtype)


def _as_list(value: _IntOrTuple, dims: int) -> list[int]:
    if isinstance(value, int):
        return [value] * dims
    values = [int(v) for v in value]
    return values * dims if len(values) == 1 else values


class SpikeConvFunction(torch.autograd.Function):
    """``F.conv{1,2,3}d`` whose input is saved for backward as ``torch.bool``."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, stride: _IntOrTuple,
                padding: _IntOrTuple, dilation: _IntOrTuple, groups: int) -> Tensor:
        dims = x.dim() - 2
        out = _CONVS[dims](x, weight, bias, stride, padding, dilation, groups)
        ctx.save_for_backward(x.to(torch.bool), weight)
        ctx.x_dtype = x.dtype
        ctx.has_bias = bias is not None
        ctx.conv_args = (_as_list(stride, dims), _as_list(padding, dims),
                         _as_list(dilation, dims), groups)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        spikes, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv_args
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1],
                ctx.has_bias and ctx.needs_input_grad[2]]
        grad_x, grad_w, grad_b = torch.ops.aten.convolution_backward(
            grad_out, _unpack(spikes, ctx.x_dtype), weight,
            [weight.shape[0]] if ctx.has_bias else None,
            stride, padding, dilation, False, [0] * len(stride), groups, mask,
        )
        return grad_x, grad_w, grad_b, None, None, None, None


class SpikeLinearFunction(torch.autograd.Function):
    """``F.linear`` whose input is saved for backward as ``torch.bool``."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        out = F.linear(x, weight, bias)
        ctx.save_for_backward(x.to(torch.bool), weight)
        ctx.x_dtype = x.dtype
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        spikes, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_out.matmul(weight)
        # The products autograd forms for addmm(b, x, W^T): dW = (x^T g)^T, db = sum_n g_n.
        grad_2d = grad_out.reshape(-1, grad_out.shape[-1])
        if ctx.needs_input_grad[1]:
            x_2d = _unpack(spikes.reshape(-1, spikes.shape[-1]), ctx.x_dtype)
            grad_w = grad_2d.t().mm(x_2d)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_2d.sum(0)
        return grad_x, grad_w, grad_b


def spike_conv(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: _IntOrTuple = 1,
               padding: _IntOrTuple = 0, dilation: _IntOrTuple = 1, groups: int = 1) -> Tensor:
    """``F.conv{1,2,3}d(x, ...)`` for ``x`` in ``{0, 1}``, saving ``x`` as ``torch.bool``.

    Args:
        x: Binary spikes ``[N, C, *spatial]`` (1 to 3 spatial dims), a floating dtype.
        weight: ``[C_out, C / groups, *kernel]``.
        bias: ``[C_out]`` or ``None``.
        stride: As ``F.conv2d`` (ints only; string paddings are not supported).
        padding: As ``F.conv2d``.
        dilation: As ``F.conv2d``.
        groups: As ``F.conv2d``.
    """
    if isinstance(padding, str):
        raise ValueError("spike_conv takes integer padding, not 'same'/'valid'")
    return SpikeConvFunction.apply(x, weight, bias, stride, padding, dilation, groups)


def spike_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(x, weight, bias)`` for ``x`` in ``{0, 1}``, saving ``x`` as ``torch.bool``."""
    return SpikeLinearFunction.apply(x, weight, bias)


def spike_ops_apply(x: Tensor, *tensors: Tensor | None) -> bool:
    """Whether a layer on binary input ``x`` (with parameters ``tensors``) should use these ops.

    Only where the bool copy saves memory and the result is the standard op's: autograd records
    the call (grad mode on, some input requires a gradient), ``x`` is float32/float64 (under
    autocast the plain op's casting rules apply, so it runs as is), and not while
    ``torch.compile`` traces (the compiler plans saved activations itself).
    """
    if not torch.is_grad_enabled() or torch.compiler.is_compiling():
        return False
    if x.dtype not in (torch.float32, torch.float64) or torch.is_autocast_enabled(x.device.type):
        return False
    return x.requires_grad or any(t is not None and t.requires_grad for t in tensors)
