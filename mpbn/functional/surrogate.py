"""Surrogate spike functions: the exact Heaviside step forward, a smooth stand-in backward.

Every surrogate is written in terms of the distance to the threshold, ``x = v - V_th``, where
``v`` is the potential that is compared with the threshold (the raw ``u_pre`` of MPBN Eq. 2, or
the normalized ``MPBN(u_pre)`` of Eq. 8). Forward is always ``o = 1[x > 0]``; backward is
``grad * g(x)``, where ``g`` is the derivative of the surrogate's *primitive* ``P(x)``, a smooth
step. Each primitive is kept here as a plain function so tests can check ``g`` against
``autograd(P)``.

:data:`REGISTRY` is the one table of surrogates: the reference spike function and the fused
recurrence take their derivative from it (the eager CPU recurrence has float-mask forms of
``rectangle`` and ``tanh`` that are tested against it), and the Triton kernels support exactly
its names (``tests/functional/test_surrogate.py`` fails naming a backend that lacks one).

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
from dataclasses import dataclass

import torch
from torch import Tensor

from mpbn.recipes import MPBN_NEURON

__all__ = [
    "REGISTRY",
    "SURROGATES",
    "DEFAULT_ALPHA",
    "Surrogate",
    "spike",
    "surrogate_grad",
    "surrogate_primitive",
    "check_surrogate",
]

#: ``g(x, v_threshold, alpha)`` or ``P(x, v_threshold, alpha)``.
SurrogateFn = Callable[[Tensor, "Tensor | float", float], Tensor]


@dataclass(frozen=True)
class Surrogate:
    """One surrogate: its default parameter, derivative ``g = dP/dx`` and primitive ``P``.

    Both functions take the distance ``x = v - V_th``, the threshold ``V_th`` (used by ``tanh``
    and ``linear``, broadcastable to ``x``) and ``alpha``.
    """

    name: str
    default_alpha: float
    grad: SurrogateFn
    primitive: SurrogateFn


def _rectangle_grad(x: Tensor, v_threshold: Tensor | float, alpha: float) -> Tensor:
    return (x.abs() <= alpha / 2).to(x.dtype) / alpha  # Eq. 12


def _rectangle_primitive(x: Tensor, v_threshold: Tensor | float, alpha: float) -> Tensor:
    return torch.clamp(x / alpha + 0.5, 0, 1)


def _tanh_grad(x: Tensor, v_threshold: Tensor | float, alpha: float) -> Tensor:
    s = x / (2 * v_threshold) + 0.5
    inside = (s >= 0) & (s <= 1)
    sech2 = 1 - torch.tanh(alpha * (s - 0.5)) ** 2
    return inside.to(x.dtype) * sech2 * alpha / (2 * math.tanh(alpha / 2)) / (2 * v_threshold)


def _tanh_primitive(x: Tensor, v_threshold: Tensor | float, alpha: float) -> Tensor:
    s = torch.clamp(x / (2 * v_threshold) + 0.5, 0, 1)
    t = math.tanh(alpha / 2)
    return (torch.tanh(alpha * (s - 0.5)) + t) / (2 * t)


def _linear_grad(x: Tensor, v_threshold: Tensor | float, alpha: float) -> Tensor:
    return alpha * torch.clamp(1 - x.abs() / v_threshold, min=0)


def _linear_primitive(x: Tensor, v_threshold: Tensor | float, alpha: float) -> Tensor:
    r = torch.clamp(x / v_threshold, -1, 1)
    # integral of alpha * max(0, 1 - |x|/V_th): piecewise quadratic, continuous at 0
    return alpha * v_threshold * torch.where(r < 0, (1 + r) ** 2 / 2, 1 - (1 - r) ** 2 / 2)


def _sigmoid_grad(x: Tensor, v_threshold: Tensor | float, alpha: float) -> Tensor:
    sig = torch.sigmoid(alpha * x)
    return alpha * sig * (1 - sig)


def _sigmoid_primitive(x: Tensor, v_threshold: Tensor | float, alpha: float) -> Tensor:
    return torch.sigmoid(alpha * x)


def _atan_grad(x: Tensor, v_threshold: Tensor | float, alpha: float) -> Tensor:
    return (alpha / 2) / (1 + (math.pi / 2 * alpha * x) ** 2)


def _atan_primitive(x: Tensor, v_threshold: Tensor | float, alpha: float) -> Tensor:
    return torch.atan(math.pi / 2 * alpha * x) / math.pi + 0.5


#: Every surrogate, by name (the module docstring gives each one's formula and source).
REGISTRY: dict[str, Surrogate] = {
    s.name: s for s in (
        Surrogate("rectangle", 1.0, _rectangle_grad, _rectangle_primitive),
        Surrogate("tanh", 3.0, _tanh_grad, _tanh_primitive),
        Surrogate("linear", 0.3, _linear_grad, _linear_primitive),
        Surrogate("sigmoid", 4.0, _sigmoid_grad, _sigmoid_primitive),
        Surrogate("atan", 2.0, _atan_grad, _atan_primitive),
    )
}
DEFAULT_ALPHA: dict[str, float] = {name: s.default_alpha for name, s in REGISTRY.items()}
SURROGATES: tuple[str, ...] = tuple(REGISTRY)


def check_surrogate(name: str) -> str:
    """Return ``name`` if it is a known surrogate, else raise a ValueError listing them."""
    if name not in REGISTRY:
        raise ValueError(f"unknown surrogate {name!r}; valid: {', '.join(SURROGATES)}")
    return name


def surrogate_grad(name: str, x: Tensor, v_threshold: Tensor | float, alpha: float) -> Tensor:
    """The surrogate derivative ``g(x) = dP/dx`` at distance ``x = v - V_th``.

    Args:
        name: One of :data:`SURROGATES`.
        x: Distance of the compared potential to the threshold.
        v_threshold: The threshold ``V_th`` (used by ``tanh`` and ``linear``), broadcastable
            to ``x``.
        alpha: The surrogate's parameter (see the module docstring).
    """
    return REGISTRY[check_surrogate(name)].grad(x, v_threshold, alpha)


def surrogate_primitive(name: str, x: Tensor, v_threshold: Tensor | float,
                        alpha: float) -> Tensor:
    """The smooth step ``P(x)`` whose derivative is :func:`surrogate_grad` (for tests/plots)."""
    return REGISTRY[check_surrogate(name)].primitive(x, v_threshold, alpha)


class SpikeFunction(torch.autograd.Function):
    """Heaviside forward, surrogate backward. Gradient flows to ``x`` (and so to v and V_th)."""

    @staticmethod
    def forward(ctx, x: Tensor, v_threshold: Tensor | float, name: str, alpha: float) -> Tensor:
        ctx.save_for_backward(x, v_threshold if isinstance(v_threshold, Tensor) else None)
        ctx.v_threshold = v_threshold if not isinstance(v_threshold, Tensor) else None
        ctx.name, ctx.alpha = name, alpha
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, v_threshold_t = ctx.saved_tensors
        v_threshold = v_threshold_t if v_threshold_t is not None else ctx.v_threshold
        return grad_out * surrogate_grad(ctx.name, x, v_threshold, ctx.alpha), None, None, None


SpikeFn = Callable[[Tensor, "Tensor | float", str, float], Tensor]


def spike(x: Tensor, v_threshold: Tensor | float = MPBN_NEURON["v_threshold"],
          name: str = MPBN_NEURON["surrogate"], alpha: float | None = None) -> Tensor:
    """Fire where ``x = v - V_th > 0`` (MPBN Eq. 2/8); surrogate gradient in backward.

    Args:
        x: Distance of the compared potential to the threshold.
        v_threshold: The threshold ``V_th``; sets the width of ``tanh`` and ``linear``.
        name: Surrogate name, one of :data:`SURROGATES`.
        alpha: Surrogate parameter; ``None`` takes :data:`DEFAULT_ALPHA`.
    """
    check_surrogate(name)
    alpha = DEFAULT_ALPHA[name] if alpha is None else alpha
    return SpikeFunction.apply(x, v_threshold, name, alpha)
