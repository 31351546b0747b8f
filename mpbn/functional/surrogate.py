"""Surrogate spike functions: the exact Heaviside step forward, a smooth stand-in backward.

Every surrogate is written in terms of the distance to the threshold, ``x = v - V_th``, where
``v`` is the potential that is compared with the threshold (the raw ``u_pre`` of MPBN Eq. 2, or
the normalized ``MPBN(u_pre)`` of Eq. 8). Forward is always ``o = 1[x > 0]``; backward is
``grad * g(x)``, where ``g`` is the derivative of the surrogate's *primitive* ``P(x)``, a smooth
step. Each primitive is kept here as a plain function so tests can check ``g`` against
``autograd(P)``.

Surrogates (``alpha`` is each one's sharpness/height parameter; ``None`` picks the default):

- ``"rectangle"`` (MPBN Eq. 12, the STE box): ``g = 1/alpha`` where ``|x| <= alpha/2``, else 0;
  default width ``alpha = 1``. Eq. 12 reads "1 if 0 <= u <= 1": with the paper's V_th = 0.5 the
  window ``[V_th - 0.5, V_th + 0.5]`` is exactly ``0 <= u <= 1``, i.e. ``u`` in Eq. 12 is the
  potential itself, centred on the threshold. Both boundaries are inside the window.
- ``"tanh"`` (the authors' public code): ``P = (tanh(k (clamp(s, 0, 1) - 0.5)) + tanh(k/2)) /
  (2 tanh(k/2))`` with ``s = v / (2 V_th) = x / (2 V_th) + 1/2``, ``k = alpha = 3``. Our reading:
  the potential is divided by the threshold scale ``2 V_th`` so the support ``[0, 2 V_th]`` is
  centred on the threshold; at the paper's V_th = 0.5 this is ``s = v``, the same window as
  Eq. 12. ``g = dP/dv`` includes the chain factor ``1 / (2 V_th)``.
- ``"linear"`` (BNTT, triangle): ``g = alpha * max(0, 1 - |x| / V_th)``, damping ``alpha = 0.3``.
- ``"sigmoid"``: ``P = sigmoid(alpha x)``, ``alpha = 4`` (SpikingJelly's default).
- ``"atan"``: ``P = atan(pi/2 alpha x) / pi + 1/2``, ``alpha = 2`` (SpikingJelly's default).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "SURROGATES",
    "DEFAULT_ALPHA",
    "spike",
    "surrogate_grad",
    "surrogate_primitive",
    "check_surrogate",
]

DEFAULT_ALPHA: dict[str, float] = {
    "rectangle": 1.0,
    "tanh": 3.0,
    "linear": 0.3,
    "sigmoid": 4.0,
    "atan": 2.0,
}
SURROGATES: tuple[str, ...] = tuple(DEFAULT_ALPHA)


def check_surrogate(name: str) -> str:
    """Return ``name`` if it is a known surrogate, else raise a ValueError listing them."""
    if name not in DEFAULT_ALPHA:
        raise ValueError(f"unknown surrogate {name!r}; valid: {', '.join(SURROGATES)}")
    return name


def surrogate_grad(name: str, x: Tensor, scale: Tensor | float, alpha: float) -> Tensor:
    """The surrogate derivative ``g(x) = dP/dx`` at distance ``x = v - V_th``.

    Args:
        name: One of :data:`SURROGATES`.
        x: Distance of the compared potential to the threshold.
        scale: The threshold ``V_th`` (used by ``tanh`` and ``linear``), broadcastable to ``x``.
        alpha: The surrogate's parameter (see the module docstring).
    """
    if name == "rectangle":
        return (x.abs() <= alpha / 2).to(x.dtype) / alpha
    if name == "tanh":
        s = x / (2 * scale) + 0.5
        inside = (s >= 0) & (s <= 1)
        sech2 = 1 - torch.tanh(alpha * (s - 0.5)) ** 2
        return inside.to(x.dtype) * sech2 * alpha / (2 * math.tanh(alpha / 2)) / (2 * scale)
    if name == "linear":
        return alpha * torch.clamp(1 - x.abs() / scale, min=0)
    if name == "sigmoid":
        sig = torch.sigmoid(alpha * x)
        return alpha * sig * (1 - sig)
    if name == "atan":
        return (alpha / 2) / (1 + (math.pi / 2 * alpha * x) ** 2)
    raise ValueError(f"unknown surrogate {name!r}; valid: {', '.join(SURROGATES)}")


def surrogate_primitive(name: str, x: Tensor, scale: Tensor | float, alpha: float) -> Tensor:
    """The smooth step ``P(x)`` whose derivative is :func:`surrogate_grad` (for tests/plots)."""
    if name == "rectangle":
        return torch.clamp(x / alpha + 0.5, 0, 1)
    if name == "tanh":
        s = torch.clamp(x / (2 * scale) + 0.5, 0, 1)
        t = math.tanh(alpha / 2)
        return (torch.tanh(alpha * (s - 0.5)) + t) / (2 * t)
    if name == "linear":
        r = torch.clamp(x / scale, -1, 1)
        # integral of alpha * max(0, 1 - |x|/V_th): piecewise quadratic, continuous at 0
        return alpha * scale * torch.where(r < 0, (1 + r) ** 2 / 2, 1 - (1 - r) ** 2 / 2)
    if name == "sigmoid":
        return torch.sigmoid(alpha * x)
    if name == "atan":
        return torch.atan(math.pi / 2 * alpha * x) / math.pi + 0.5
    raise ValueError(f"unknown surrogate {name!r}; valid: {', '.join(SURROGATES)}")


class SpikeFunction(torch.autograd.Function):
    """Heaviside forward, surrogate backward. Gradient flows to ``x`` (and so to v and V_th)."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor | float, name: str, alpha: float) -> Tensor:
        ctx.save_for_backward(x, scale if isinstance(scale, Tensor) else None)
        ctx.scale = scale if not isinstance(scale, Tensor) else None
        ctx.name, ctx.alpha = name, alpha
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, scale_t = ctx.saved_tensors
        scale = scale_t if scale_t is not None else ctx.scale
        return grad_out * surrogate_grad(ctx.name, x, scale, ctx.alpha), None, None, None


SpikeFn = Callable[[Tensor, "Tensor | float", str, float], Tensor]


def spike(x: Tensor, scale: Tensor | float = 0.5, name: str = "rectangle",
          alpha: float | None = None) -> Tensor:
    """Fire where ``x = v - V_th > 0`` (MPBN Eq. 2/8); surrogate gradient in backward.

    Args:
        x: Distance of the compared potential to the threshold.
        scale: The threshold ``V_th``; sets the width of ``tanh`` and ``linear``.
        name: Surrogate name, one of :data:`SURROGATES`.
        alpha: Surrogate parameter; ``None`` takes :data:`DEFAULT_ALPHA`.
    """
    check_surrogate(name)
    return SpikeFunction.apply(x, scale, name, DEFAULT_ALPHA[name] if alpha is None else alpha)
