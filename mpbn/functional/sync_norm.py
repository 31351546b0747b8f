"""Synchronized batch statistics: BN whose batch is the union of every rank's batch.

torch's own ``SyncBatchNorm`` kernels (``torch.batch_norm_stats`` and friends) exist only for
CUDA, and ``nn.SyncBatchNorm.convert_sync_batchnorm`` would swap our ``[T, B, C, ...]`` norms
for layers that normalize the wrong axis. So the statistics are reduced here with plain
``all_reduce`` calls, which run on any backend (gloo on CPU, nccl on GPU), inside a custom
autograd Function whose backward is the standard SyncBN backward: the two per-feature gradient
sums are all-reduced too, so every rank gets the gradient of the *global* batch.

BN (Ioffe & Szegedy Eq. 4-5) over the global batch of ``N = sum_r N_r`` values per feature::

    mean = (1/N) sum_r sum_i x_ri        var = (1/N) sum_r sum_i (x_ri - mean)^2
    y    = weight * (x - mean) / sqrt(var + eps) + bias

Without an initialized process group every reduction is a no-op and this is plain BN. The
layers that use it are :mod:`mpbn.layers.sync` (built by ``convert_sync_norms``).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "SyncBatchNormFunction",
    "all_reduce_max",
    "all_reduce_sum",
    "sync_batch_norm",
    "sync_normalize_with_batch_stats",
]


def all_reduce_sum(t: Tensor, group: object | None = None) -> Tensor:
    """Sum ``t`` over the group in place (a no-op without a process group); returns ``t``."""
    return _all_reduce(t, dist.ReduceOp.SUM, group)


def all_reduce_max(t: Tensor, group: object | None = None) -> Tensor:
    """Maximum of ``t`` over the group in place (a no-op without a process group)."""
    return _all_reduce(t, dist.ReduceOp.MAX, group)


def _all_reduce(t: Tensor, op: object, group: object | None) -> Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1:
        dist.all_reduce(t, op=op, group=group)
    return t


def _feature_sum(t: Tensor) -> Tensor:
    """Sum ``[N, F, ...]`` over every dim but ``F``."""
    dims = [0, *range(2, t.dim())]
    return t.sum(dims)


def _feature_view(v: Tensor, x: Tensor) -> Tensor:
    return v.view(1, -1, *([1] * (x.dim() - 2)))


class SyncBatchNormFunction(torch.autograd.Function):
    """BN over dim 1 with statistics of the batch of all ranks in ``group``.

    Forward returns ``(y, mean, biased_var, count)`` of which only ``y`` is differentiable.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float,
                group: object) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        # Statistics in float32 at least: under bf16 autocast the sums would lose the mean.
        stat_dtype = torch.promote_types(x.dtype, torch.float32)
        xs = x.to(stat_dtype)
        features = x.shape[1]
        local_count = x.numel() // max(features, 1)
        # Two reductions (mean first, then centered squares) rather than sum and sum of
        # squares in one: the centered form keeps the variance exact when |mean| >> std.
        packed = torch.cat([_feature_sum(xs),
                            torch.full((1,), float(local_count), dtype=stat_dtype,
                                       device=x.device)])
        all_reduce_sum(packed, group)
        count = packed[-1]
        mean = packed[:-1] / count
        centered = xs - _feature_view(mean, xs)
        var = all_reduce_sum(_feature_sum(centered * centered), group) / count
        invstd = torch.rsqrt(var + eps)
        x_hat = centered * _feature_view(invstd, xs)
        y = x_hat
        if weight is not None:
            y = y * _feature_view(weight.to(stat_dtype), xs)
        if bias is not None:
            y = y + _feature_view(bias.to(stat_dtype), xs)
        ctx.save_for_backward(x_hat, invstd, weight, count)
        ctx.has_weight, ctx.has_bias = weight is not None, bias is not None
        ctx.group = group
        ctx.x_dtype = x.dtype
        ctx.mark_non_differentiable(mean, var, count)
        return y.to(x.dtype), mean, var, count

    @staticmethod
    def backward(ctx, grad_y: Tensor, *_unused: Tensor):
        x_hat, invstd, weight, count = ctx.saved_tensors
        grad_y = grad_y.to(x_hat.dtype)
        grad_weight = _feature_sum(grad_y * x_hat) if ctx.has_weight else None
        grad_bias = _feature_sum(grad_y) if ctx.has_bias else None
        grad_x_hat = grad_y * _feature_view(weight.to(x_hat.dtype), x_hat) \
            if ctx.has_weight else grad_y
        # The standard BN backward, with its two per-feature sums taken over the global batch:
        # dx = invstd * (dx_hat - mean(dx_hat) - x_hat * mean(dx_hat * x_hat)).
        sums = torch.cat([_feature_sum(grad_x_hat), _feature_sum(grad_x_hat * x_hat)])
        all_reduce_sum(sums, ctx.group)
        mean_dy, mean_dy_xhat = (sums / count).chunk(2)
        grad_x = (grad_x_hat - _feature_view(mean_dy, x_hat)
                  - x_hat * _feature_view(mean_dy_xhat, x_hat)) * _feature_view(invstd, x_hat)
        # Weight and bias gradients stay local: DDP averages them like any other parameter.
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        if grad_bias is not None:
            grad_bias = grad_bias.to(weight.dtype if weight is not None else grad_bias.dtype)
        return grad_x.to(ctx.x_dtype), grad_weight, grad_bias, None, None


def _sync_stats(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float,
                process_group: object) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    if x.dim() < 2:
        raise ValueError(f"batch norm expects [N, C, ...], got shape {tuple(x.shape)}")
    return SyncBatchNormFunction.apply(x, weight, bias, eps, process_group)


def _unbiased(var: Tensor, count: Tensor) -> Tensor:
    return var * (count / (count - 1).clamp(min=1))


def sync_batch_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None, running_mean: Tensor,
                    running_var: Tensor, eps: float, momentum: float | None,
                    process_group: object) -> Tensor:
    """Training-mode BN over dim 1 of ``x`` with statistics reduced over ``process_group``.

    The synchronized twin of ``F.batch_norm(x, running_mean, running_var, weight, bias, True,
    momentum, eps)``: same output and gradients as one process holding the whole global batch,
    and the running statistics updated (in place) with the global mean and unbiased variance.

    Args:
        x: ``[N, C, ...]`` local part of the batch.
        weight: ``[C]`` scale or ``None``.
        bias: ``[C]`` shift or ``None``.
        running_mean: ``[C]`` buffer, updated in place.
        running_var: ``[C]`` buffer, updated in place.
        eps: Added to the variance.
        momentum: Weight of the new statistics (``None``: cumulative average is not
            supported by the synchronized path; 0.1 is used, as BN's default).
        process_group: Group to reduce over (``None`` is the default group).

    Returns:
        The normalized tensor, shaped like ``x``.
    """
    y, mean, var, count = _sync_stats(x, weight, bias, eps, process_group)
    with torch.no_grad():
        m = 0.1 if momentum is None else momentum
        if running_mean is not None:
            running_mean.lerp_(mean.to(running_mean.dtype), m)
        if running_var is not None:
            running_var.lerp_(_unbiased(var, count).to(running_var.dtype), m)
    return y


def sync_normalize_with_batch_stats(x: Tensor, weight: Tensor | None, bias: Tensor | None,
                                    eps: float, process_group: object
                                    ) -> tuple[Tensor, Tensor, Tensor]:
    """Synchronized :func:`mpbn.functional.norm.normalize_with_batch_stats`.

    Returns:
        ``(y, mean, var)``: the normalized ``x`` and the global per-feature mean and *unbiased*
        variance, detached, which :class:`~mpbn.layers.neuron.MembraneBN` folds into its running
        statistics once per forward pass.
    """
    y, mean, var, count = _sync_stats(x, weight, bias, eps, process_group)
    return y, mean.detach().to(x.dtype), _unbiased(var, count).detach().to(x.dtype)
