"""Batch statistics for the SNN normalization family and for MPBN.

MPBN (Eq. 7) normalizes the membrane potential ``u_pre[t]`` inside the time loop. In training,
step ``t`` uses the batch statistics of ``u_pre[t]`` alone (the step depends on the previous
step's spikes, so statistics cannot be pooled over time); in evaluation one set of running
statistics serves every step (MPBN Eq. 9, the form that folds into the threshold).

Running statistics are updated once per forward call with the average over steps of the
per-step batch mean and of the per-step unbiased batch variance. This is what calling an
``nn.BatchNorm`` once per step converges to (the running estimate of a mean of per-step
statistics), without making the update speed depend on ``T``; it is also what a distributed
run synchronizes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["normalize_with_batch_stats", "normalize_with_running_stats", "update_running_stats"]


def normalize_with_batch_stats(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Batch-normalize ``x`` ``[N, F, ...]`` over all dims but ``F`` (BN Eq. 4-5).

    Returns:
        ``(y, mean, var)``: ``y = weight * (x - mean) / sqrt(var_b + eps) + bias`` with the
        biased batch variance ``var_b`` (as BN normalizes), and the batch ``mean`` and the
        *unbiased* variance ``var`` (as BN's running statistics track), both ``[F]`` and
        detached.
    """
    features = x.shape[1]
    # momentum=1 makes F.batch_norm write the batch statistics themselves into these buffers,
    # which spares a second pass over x to compute them for the running-statistics update.
    mean = torch.zeros(features, dtype=x.dtype, device=x.device)
    var = torch.zeros(features, dtype=x.dtype, device=x.device)
    y = F.batch_norm(x, mean, var, weight, bias, True, 1.0, eps)
    return y, mean, var


def normalize_with_running_stats(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, running_mean: Tensor,
    running_var: Tensor, eps: float,
) -> Tensor:
    """``weight * (x - running_mean) / sqrt(running_var + eps) + bias`` over dim 1 of ``x``."""
    return F.batch_norm(x, running_mean, running_var, weight, bias, False, 0.0, eps)


@torch.no_grad()
def update_running_stats(
    running_mean: Tensor, running_var: Tensor, means: Tensor, variances: Tensor, momentum: float
) -> None:
    """Exponential moving average with the step-averaged statistics ``means``/``variances``.

    Args:
        running_mean: ``[F]`` buffer, updated in place.
        running_var: ``[F]`` buffer, updated in place.
        means: ``[T, F]`` per-step batch means.
        variances: ``[T, F]`` per-step unbiased batch variances.
        momentum: Weight of the new statistics, as in ``nn.BatchNorm``.
    """
    running_mean.lerp_(means.mean(0).to(running_mean.dtype), momentum)
    running_var.lerp_(variances.mean(0).to(running_var.dtype), momentum)
