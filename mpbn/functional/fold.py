"""Folding normalizations away after training.

MPBN into the firing threshold (MPBN Sec. 4.2, Eq. 9-10 channel-wise, Eq. 13 element-wise):
the eval-mode neuron fires when ``lambda * (u_pre - mu) / sqrt(var + eps) + beta > V_th``.
For ``lambda > 0`` that is ``u_pre > V~`` with::

    V~ = (V_th - beta) * sqrt(var + eps) / lambda + mu            (Eq. 10 / Eq. 13)

The paper assumes ``lambda > 0``. Here every trained value is exact:

- ``lambda < 0``: dividing by a negative number flips the inequality, so the neuron fires when
  ``u_pre < V~`` (same ``V~``); we return ``sign = -1`` and the neuron tests
  ``sign * (u_pre - V~) > 0``.
- ``lambda == 0``: the normalized potential is the constant ``beta``, so the neuron fires at
  every step if ``beta > V_th`` and never otherwise; we return ``V~ = -inf`` or ``+inf``.

``sqrt(var + eps)`` is used, as the BN computed it (Eq. 9 in the paper drops ``eps``).

A BN whose statistics are shared over time (plain BN, tdBN) folds into the preceding
convolution or linear layer: ``W' = W * s``, ``b' = (b - mu) * s + beta`` with
``s = scale * gamma / sqrt(var + eps)`` per output channel.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["fold_membrane_threshold", "fold_bn_into_weights"]


def fold_membrane_threshold(
    v_threshold: float | Tensor,
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    eps: float,
) -> tuple[Tensor, Tensor]:
    """Fold an eval-mode MPBN into a per-channel or per-element threshold (Eq. 10, 13).

    All tensor arguments share one shape (``[C]`` channel-wise, ``(C, H, W)`` element-wise).

    Returns:
        ``(threshold, sign)``: the neuron fires where ``sign * (u_pre - threshold) > 0``.
    """
    v_th = torch.as_tensor(v_threshold, dtype=running_mean.dtype, device=running_mean.device)
    std = torch.sqrt(running_var + eps)
    lam, beta = weight.detach(), bias.detach()
    safe_lam = torch.where(lam == 0, torch.ones_like(lam), lam)
    threshold = (v_th - beta) * std / safe_lam + running_mean
    constant = torch.where(beta > v_th, -torch.inf, torch.inf).to(threshold.dtype)
    threshold = torch.where(lam == 0, constant, threshold)
    sign = torch.where(lam < 0, -1.0, 1.0).to(threshold.dtype)
    return threshold, sign


def fold_bn_into_weights(
    weight: Tensor,
    bias: Tensor | None,
    running_mean: Tensor,
    running_var: Tensor,
    gamma: Tensor | None,
    beta: Tensor | None,
    eps: float,
    scale: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Fold ``scale * gamma * (y - mu) / sqrt(var + eps) + beta`` into the layer producing ``y``.

    ``weight`` has the output channels first (conv ``[C_out, ...]`` or linear ``[C_out, C_in]``).
    ``scale`` is tdBN's ``alpha * V_th`` (1 for plain BN).

    Returns:
        ``(weight', bias')`` with the same shapes as the layer's own.
    """
    s = scale / torch.sqrt(running_var + eps)
    if gamma is not None:
        s = s * gamma
    b = torch.zeros_like(running_mean) if bias is None else bias
    new_bias = (b - running_mean) * s + (0 if beta is None else beta)
    new_weight = weight * s.reshape(-1, *([1] * (weight.dim() - 1)))
    return new_weight.detach(), new_bias.detach()
