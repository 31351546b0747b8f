"""The LIF neuron as a pure step function, and one helper that runs it over time.

This is the reference: every fast path (compiled, Triton) is tested against :func:`lif_step`
driven by :func:`run_over_time`.

MPBN paper Eq. 1-2 (hard reset) with Eq. 7-8 (optional normalization of the potential that is
compared with the threshold)::

    u_pre[t] = decay * u[t-1] + c[t]                    (Eq. 1)
    v[t]     = MPBN(u_pre[t])  or  u_pre[t]              (Eq. 7; identity without MPBN)
    o[t]     = 1[ sign * (v[t] - V_th) > 0 ]             (Eq. 2 / Eq. 8)
    u[t]     = u_pre[t] * (1 - o[t])                     (hard reset, Eq. 2)
    u[t]     = u_pre[t] - o[t] * reset_amount            (soft reset, BNTT Sec. 3.1)

``sign`` is +1 except in neurons produced by folding an MPBN with a negative scale (see
:mod:`mpbn.functional.fold`); there ``o = 1[v < V~]``. The reset acts on the un-normalized
``u_pre``, as Eq. 2 prescribes. BNTT's LIF is the soft-reset case with leak ``decay = lambda``
and ``V_th = 1``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from mpbn.functional.surrogate import DEFAULT_ALPHA, check_surrogate, spike
from mpbn.recipes import MPBN_NEURON

__all__ = ["LIFParams", "lif_step", "run_over_time", "RESETS"]

RESETS = ("hard", "soft")


@dataclass(frozen=True)
class LIFParams:
    """Parameters of a LIF neuron.

    The one record of a neuron's parameters: :class:`mpbn.LIF` validates it once, at
    construction, and hands it unchanged to every backend (the reference step below, the fused
    and compiled recurrences, the Triton kernels). The defaults are MPBN's neuron
    (:data:`mpbn.recipes.MPBN_NEURON`), the one table of them.

    Attributes:
        decay: Leak factor ``tau`` of Eq. 1 (BNTT's ``lambda``), in ``[0, 1]``.
        v_threshold: ``V_th``: a float, or a tensor broadcastable to one time step
            ``[B, ...]`` (per-channel thresholds are stored as ``(C, 1, 1)`` for images).
        reset: ``"hard"`` (to zero, MPBN Eq. 2) or ``"soft"`` (subtract, BNTT).
        surrogate: Name of the surrogate gradient (:mod:`mpbn.functional.surrogate`).
        alpha: Surrogate parameter; ``None`` takes its default.
        threshold_sign: ``None`` (fire above) or a ±1 tensor like ``v_threshold`` (folded
            neurons with negative MPBN scale fire below their threshold).
        reset_amount: What a soft reset subtracts; ``None`` means ``v_threshold``. Folding keeps
            the original ``V_th`` here, because the reset acts on ``u_pre`` (Eq. 2).
        detach_reset: Stop the gradient through the reset term (off by default, as Eq. 11).
    """

    decay: float = MPBN_NEURON["decay"]
    v_threshold: float | Tensor = MPBN_NEURON["v_threshold"]
    reset: str = MPBN_NEURON["reset"]
    surrogate: str = MPBN_NEURON["surrogate"]
    alpha: float | None = MPBN_NEURON["alpha"]
    threshold_sign: Tensor | None = None
    reset_amount: float | Tensor | None = None
    detach_reset: bool = MPBN_NEURON["detach_reset"]

    def __post_init__(self) -> None:
        if self.reset not in RESETS:
            raise ValueError(f"unknown reset {self.reset!r}; valid: {', '.join(RESETS)}")
        check_surrogate(self.surrogate)
        if not 0.0 <= float(self.decay) <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {self.decay}")

    @property
    def surrogate_alpha(self) -> float:
        """``alpha``, or the surrogate's default where it is ``None``."""
        return DEFAULT_ALPHA[self.surrogate] if self.alpha is None else self.alpha

    @property
    def subtracted(self) -> float | Tensor:
        """What a soft reset subtracts: ``reset_amount``, else ``v_threshold``."""
        return self.v_threshold if self.reset_amount is None else self.reset_amount

    def with_tensors(self, **tensors: float | Tensor | None) -> LIFParams:
        """A copy with ``v_threshold``/``threshold_sign``/``reset_amount`` replaced, unvalidated.

        For a module that validated the record once and reshapes its threshold buffers for
        each call (their device and dtype follow the module, so they cannot be kept here).
        """
        unknown = set(tensors) - {"v_threshold", "threshold_sign", "reset_amount"}
        if unknown:
            raise TypeError(f"with_tensors takes only the threshold tensors, got {sorted(unknown)}")
        new = copy.copy(self)
        for name, value in tensors.items():
            object.__setattr__(new, name, value)
        return new


Normalizer = Callable[[Tensor, int], Tensor]


def lif_step(
    c_t: Tensor,
    u: Tensor | None,
    params: LIFParams,
    normalize: Normalizer | None = None,
    t: int = 0,
) -> tuple[Tensor, Tensor]:
    """One LIF time step (MPBN Eq. 1-2, with Eq. 7-8 when ``normalize`` is given).

    Args:
        c_t: Input current at step ``t``, ``[B, ...]``.
        u: Membrane potential after the previous step's reset, or ``None`` at ``t = 0``
            (zero initial potential).
        params: Neuron parameters.
        normalize: The membrane normalization ``v = MPBN(u_pre, t)``, or ``None``.
        t: The time step index (passed to ``normalize``, which may keep per-step statistics).

    Returns:
        ``(o_t, u_t)``: spikes of ``c_t``'s dtype and the reset membrane potential.
    """
    u_pre = c_t if u is None else params.decay * u + c_t
    v = u_pre if normalize is None else normalize(u_pre, t)
    x = v - params.v_threshold
    if params.threshold_sign is not None:
        x = x * params.threshold_sign
    o = spike(x, params.v_threshold, params.surrogate, params.surrogate_alpha)
    o_reset = o.detach() if params.detach_reset else o
    if params.reset == "hard":
        u_next = u_pre * (1 - o_reset)
    else:
        u_next = u_pre - o_reset * params.subtracted
    return o, u_next


def run_over_time(
    step: Callable[[Tensor, Tensor | None, int], tuple[Tensor, Tensor]], x_seq: Tensor
) -> Tensor:
    """Run ``step(x_t, state, t) -> (out_t, state)`` over the leading time axis of ``x_seq``.

    The state starts as ``None`` for every call: nothing is remembered between calls.
    """
    state = None
    outputs = []
    for t in range(x_seq.shape[0]):
        out, state = step(x_seq[t], state, t)
        outputs.append(out)
    return torch.stack(outputs)
