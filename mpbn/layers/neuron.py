"""Spiking neuron modules over ``[T, B, ...]``: thin wrappers over :mod:`mpbn.functional`."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from mpbn.functional import fused
from mpbn.functional.neuron import LIFParams, lif_step, run_over_time
from mpbn.functional.norm import (
    normalize_with_batch_stats,
    normalize_with_running_stats,
    update_running_stats,
)

__all__ = ["LIF", "MembraneBN", "MEMBRANE_NORMS", "LIF_BACKENDS", "create_neuron",
           "canonical_membrane_norm", "broadcast_per_step"]

#: MPBN granularities (``membrane_norm`` of :class:`LIF`; ``None`` is no MPBN).
MEMBRANE_NORMS = ("channel", "element")
#: ``backend`` values of :class:`LIF`.
LIF_BACKENDS = ("reference", "fused", "auto")
# The one table of neuron defaults (mpbn.recipes.MPBN_NEURON, through LIFParams).
_DEFAULT = LIFParams()


def broadcast_per_step(value: float | Tensor, x_t: Tensor) -> float | Tensor:
    """Shape a scalar, per-channel ``[C]`` or per-element ``(C, ...)`` value for one step."""
    if not isinstance(value, Tensor) or value.dim() == 0:
        return value
    step_shape = tuple(x_t.shape[1:])
    if value.dim() == 1 and len(step_shape) >= 1 and value.shape[0] == step_shape[0]:
        return value.view(-1, *([1] * (len(step_shape) - 1)))
    if tuple(value.shape) == step_shape:
        return value
    raise ValueError(
        f"threshold of shape {tuple(value.shape)} does not fit a time step of shape "
        f"{step_shape}: expected a scalar, [C={step_shape[0]}] or {step_shape}"
    )


class MembraneBN(nn.Module):
    """Membrane Potential Batch Normalization (MPBN Eq. 7), applied inside a :class:`LIF`.

    Normalizes ``u_pre[t]`` with the batch statistics of step ``t`` in training and with shared
    running statistics in evaluation (see :mod:`mpbn.functional.norm`). Parameters and buffers
    carry BN's names (``weight`` = lambda, ``bias`` = beta, ``running_mean``, ``running_var``).

    Args:
        granularity: ``"channel"`` (one set per channel, statistics over batch and space) or
            ``"element"`` (MPBN Sec. 5.2: one set per neuron ``(C, H, W)``, statistics over
            the batch).
        num_features: Channel count (dim 2 of ``[T, B, C, ...]``) for ``"channel"``.
        feature_shape: Per-step shape ``(C, H, W)`` (or ``(C,)``) for ``"element"``.
        eps: Added to the variance, as in BN.
        momentum: Running-statistics momentum, as in BN.

    Note:
        Not a subclass of ``nn.BatchNorm*`` on purpose: ``nn.SyncBatchNorm.convert_sync_batchnorm``
        would replace it with a layer that normalizes the wrong dimension of ``[T, B, C, ...]``.
        Use :func:`mpbn.layers.sync.convert_sync_norms` for distributed runs.
    """

    #: Per-step statistics are reduced over a process group (:mod:`mpbn.layers.sync`); the
    #: fused neuron then does not apply.
    synchronized = False

    def __init__(
        self,
        granularity: str = "channel",
        num_features: int | None = None,
        feature_shape: Sequence[int] | None = None,
        eps: float = 1e-5,
        momentum: float = 0.1,
    ) -> None:
        super().__init__()
        if granularity not in MEMBRANE_NORMS:
            raise ValueError(
                f"unknown membrane_norm {granularity!r}; valid: None, {', '.join(MEMBRANE_NORMS)}"
            )
        if granularity == "channel":
            if not isinstance(num_features, int) or num_features <= 0:
                raise ValueError(
                    f"membrane_norm='channel' needs num_features, a positive channel count; "
                    f"got {num_features!r}"
                )
            shape: tuple[int, ...] = (num_features,)
        else:
            if not feature_shape or any(int(s) <= 0 for s in feature_shape):
                raise ValueError(
                    "membrane_norm='element' needs feature_shape, the per-step shape such as "
                    f"(C, H, W); got {feature_shape!r}"
                )
            shape = tuple(int(s) for s in feature_shape)
        self.granularity = granularity
        self.feature_shape = shape
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape))
        self.register_buffer("running_mean", torch.zeros(shape))
        self.register_buffer("running_var", torch.ones(shape))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    @property
    def num_features(self) -> int:
        return self.feature_shape[0]

    def extra_repr(self) -> str:
        return (f"{self.granularity}, shape={self.feature_shape}, eps={self.eps}, "
                f"momentum={self.momentum}")

    def check_step_shape(self, x_seq: Tensor) -> None:
        """Raise a ValueError unless ``x_seq`` is ``[T, B, ...]`` matching this norm."""
        if self.granularity == "channel":
            ok = x_seq.dim() >= 3 and x_seq.shape[2] == self.feature_shape[0]
            want = f"[T, B, C={self.feature_shape[0]}, ...]"
        else:
            ok = x_seq.dim() >= 3 and tuple(x_seq.shape[2:]) == self.feature_shape
            want = f"[T, B, {', '.join(map(str, self.feature_shape))}]"
        if not ok:
            raise ValueError(
                f"{self.granularity}-wise MembraneBN expects input {want}, got {tuple(x_seq.shape)}"
            )

    def _features(self, u_pre: Tensor) -> Tensor:
        # Element-wise statistics are per neuron: flatten (C, H, W) into BN's feature axis.
        return u_pre if self.granularity == "channel" else u_pre.flatten(1)

    def _flat(self, t: Tensor) -> Tensor:
        return t.reshape(-1)

    def _batch_norm_train(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(y, mean, unbiased var)`` of one step in training (overridden when synchronized)."""
        return normalize_with_batch_stats(x, self._flat(self.weight), self._flat(self.bias),
                                          self.eps)

    def fused_args(self) -> fused.MembraneNormArgs | None:
        """This norm for :func:`mpbn.functional.fused.lif_fused`, or ``None`` where the fused
        path cannot run it (synchronized statistics)."""
        if self.synchronized:
            return None
        return fused.MembraneNormArgs(self.granularity, self.weight, self.bias,
                                      self.running_mean, self.running_var, self.eps,
                                      self.momentum, self.training)

    @contextmanager
    def through_time(self) -> Iterator[Callable[[Tensor, int], Tensor]]:
        """Yield ``normalize(u_pre, t)`` for one forward pass over time.

        In training, per-step batch statistics are collected and, when the pass ends, folded
        into the running statistics once (:func:`mpbn.functional.norm.update_running_stats`).
        """
        means: list[Tensor] = []
        variances: list[Tensor] = []
        training = self.training

        def normalize(u_pre: Tensor, t: int) -> Tensor:
            x = self._features(u_pre)
            if training:
                y, mean, var = self._batch_norm_train(x)
                means.append(mean)
                variances.append(var)
            else:
                y = normalize_with_running_stats(
                    x, self._flat(self.weight), self._flat(self.bias),
                    self._flat(self.running_mean), self._flat(self.running_var), self.eps,
                )
            return y.view_as(u_pre)

        yield normalize
        if training and means:
            update_running_stats(
                self._flat(self.running_mean), self._flat(self.running_var),
                torch.stack(means), torch.stack(variances), self.momentum,
            )
            self.num_batches_tracked.add_(1)


class LIF(nn.Module):
    """Multi-step leaky integrate-and-fire neuron over ``[T, B, ...]`` (MPBN Eq. 1-2).

    With ``membrane_norm`` it is the MPBN neuron (Eq. 7-8): the potential compared with the
    threshold is ``MPBN(u_pre)``, and the reset acts on the un-normalized ``u_pre``. The state
    starts at zero in every call; nothing is remembered between calls.

    The neuron's parameters are one :class:`~mpbn.functional.neuron.LIFParams`, validated here
    once and handed to the backend that runs (``params_for``); the defaults are MPBN's neuron
    (:data:`mpbn.recipes.MPBN_NEURON`). Tensor thresholds are buffers, so they follow the
    module's device and dtype and live in the state dict.

    Args:
        decay: Leak ``tau`` of Eq. 1 (0.25 in MPBN Sec. 5; BNTT's ``lambda``).
        v_threshold: ``V_th``: a float, a per-channel ``[C]`` tensor or a per-element
            ``(C, H, W)`` tensor (folded neurons).
        reset: ``"hard"`` (MPBN) or ``"soft"`` (BNTT: subtract the threshold).
        surrogate: Surrogate gradient name (``rectangle``, ``tanh``, ``linear``, ``sigmoid``,
            ``atan``; see :mod:`mpbn.functional.surrogate`).
        alpha: Surrogate parameter; ``None`` takes the surrogate's default.
        membrane_norm: ``None``, ``"channel"`` or ``"element"`` (MPBN).
        num_features: Channel count for ``membrane_norm="channel"``.
        feature_shape: Per-step shape ``(C, H, W)`` for ``membrane_norm="element"``.
        threshold_sign: Optional ±1 tensor like ``v_threshold``: where -1 the neuron fires
            below its threshold (set by :func:`mpbn.fold` for negative MPBN scales).
        reset_amount: What a soft reset subtracts; defaults to ``v_threshold``.
        detach_reset: Stop gradients through the reset.
        eps: MPBN epsilon.
        momentum: MPBN running-statistics momentum.
        backend: ``"reference"`` (the step function over time), ``"fused"`` (one autograd
            Function with a hand-written BPTT, :mod:`mpbn.functional.fused`; an error where it
            does not apply) or ``"auto"`` (fused where it applies, else the reference).
    """

    def __init__(
        self,
        *,
        decay: float = _DEFAULT.decay,
        v_threshold: float | Tensor = _DEFAULT.v_threshold,
        reset: str = _DEFAULT.reset,
        surrogate: str = _DEFAULT.surrogate,
        alpha: float | None = _DEFAULT.alpha,
        membrane_norm: str | None = None,
        num_features: int | None = None,
        feature_shape: Sequence[int] | None = None,
        threshold_sign: Tensor | None = None,
        reset_amount: float | Tensor | None = None,
        detach_reset: bool = _DEFAULT.detach_reset,
        eps: float = 1e-5,
        momentum: float = 0.1,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if backend not in LIF_BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(LIF_BACKENDS)}")
        self.backend = backend
        if not isinstance(v_threshold, Tensor) and not math.isfinite(v_threshold):
            raise ValueError(f"v_threshold must be finite, got {v_threshold}")
        # The one validation of the neuron's parameters (one-line errors).
        self._params = LIFParams(decay=float(decay), reset=reset, surrogate=surrogate,
                                 alpha=alpha, detach_reset=bool(detach_reset))
        self._set_tensor_or_float("v_threshold", v_threshold)
        self._set_tensor_or_float("reset_amount", reset_amount)
        self._set_tensor_or_float("threshold_sign", threshold_sign)
        self.membrane_norm: MembraneBN | None = None
        if membrane_norm is not None:
            self.membrane_norm = MembraneBN(
                membrane_norm, num_features=num_features, feature_shape=feature_shape,
                eps=eps, momentum=momentum,
            )

    # The scalar parameters read through to the validated record.
    decay = property(lambda self: self._params.decay)
    reset = property(lambda self: self._params.reset)
    surrogate = property(lambda self: self._params.surrogate)
    alpha = property(lambda self: self._params.alpha)
    detach_reset = property(lambda self: self._params.detach_reset)

    def _set_tensor_or_float(self, name: str, value: float | Tensor | None) -> None:
        if isinstance(value, Tensor):
            self.register_buffer(name, value.detach().clone().float()
                                 if not value.is_floating_point() else value.detach().clone())
        else:
            setattr(self, name, None if value is None else float(value))

    def params_for(self, x_t: Tensor) -> LIFParams:
        """This neuron's :class:`LIFParams`, thresholds shaped to broadcast over one step."""
        sign, amount = self.threshold_sign, self.reset_amount
        return self._params.with_tensors(
            v_threshold=broadcast_per_step(self.v_threshold, x_t),
            threshold_sign=None if sign is None else broadcast_per_step(sign, x_t),
            reset_amount=None if amount is None else broadcast_per_step(amount, x_t),
        )

    def forward(self, x_seq: Tensor) -> Tensor:
        """Spikes ``[T, B, ...]`` (the input's dtype) for input currents ``x_seq [T, B, ...]``."""
        if x_seq.dim() < 2:
            raise ValueError(f"LIF expects a sequence [T, B, ...], got shape {tuple(x_seq.shape)}")
        out_dtype = x_seq.dtype
        if self.membrane_norm is not None and x_seq.dtype != self.membrane_norm.weight.dtype:
            # Under autocast the currents arrive in bf16/fp16 while MPBN's parameters and
            # statistics stay float32: run the membrane in float32 (batch statistics need it);
            # spikes are exactly 0/1 in any dtype, so returning them in the input's is lossless.
            x_seq = x_seq.to(self.membrane_norm.weight.dtype)
        return self._forward(x_seq).to(out_dtype)

    def _forward(self, x_seq: Tensor) -> Tensor:
        params = self.params_for(x_seq[0])
        mbn = self.membrane_norm
        if mbn is not None:
            mbn.check_step_shape(x_seq)
        if self.backend != "reference":
            norm = None if mbn is None else mbn.fused_args()
            reason = fused.unfusable_reason(x_seq, params, norm)
            if reason is None and mbn is not None and norm is None:
                reason = "synchronized (distributed) MPBN"
            if reason is None:
                spikes = fused.apply_fused(x_seq, params, norm)
                if mbn is not None and mbn.training:
                    mbn.num_batches_tracked.add_(1)
                return spikes
            if self.backend == "fused":
                raise ValueError(f"backend='fused' does not support {reason}; use "
                                 "backend='auto' (falls back to the reference) or 'reference'")
        if mbn is None:
            return run_over_time(lambda c, u, t: lif_step(c, u, params), x_seq)
        with mbn.through_time() as normalize:
            return run_over_time(lambda c, u, t: lif_step(c, u, params, normalize, t), x_seq)

    def extra_repr(self) -> str:
        th = self.v_threshold
        th_text = f"{th}" if not isinstance(th, Tensor) else f"tensor{tuple(th.shape)}"
        return (f"decay={self.decay}, v_threshold={th_text}, reset={self.reset}, "
                f"surrogate={self.surrogate}")


def canonical_membrane_norm(value: str | None | bool) -> str | None:
    """The MPBN granularity a factory argument names: ``None`` for no MPBN, else one of
    :data:`MEMBRANE_NORMS`.

    The one place where the model-level spelling ``"none"`` (and ``False``) becomes ``None``
    (``mpbn.models.create(..., mpbn="none")``, :func:`create_neuron`); :class:`LIF` and
    :class:`MembraneBN` take ``None`` only.
    """
    if value is None or value is False or value == "none":
        return None
    if value not in MEMBRANE_NORMS:
        raise ValueError(f"unknown mpbn {value!r}; valid: none, {', '.join(MEMBRANE_NORMS)}")
    return value


def create_neuron(
    num_features: int | None = None,
    *,
    feature_shape: Sequence[int] | None = None,
    membrane_norm: str | None = None,
    **neuron_kwargs: object,
) -> LIF:
    """Build a :class:`LIF`, giving MPBN the size it needs (the factory models call).

    Args:
        num_features: Channel count of the layer the neuron follows.
        feature_shape: Per-step shape; needed for element-wise MPBN.
        membrane_norm: ``None``/``"none"``, ``"channel"`` or ``"element"``.
        **neuron_kwargs: Passed to :class:`LIF` (decay, v_threshold, reset, surrogate, ...).
    """
    membrane_norm = canonical_membrane_norm(membrane_norm)
    if membrane_norm == "element" and feature_shape is None:
        raise ValueError(
            "element-wise MPBN needs the per-step feature shape (C, H, W) of the layer; "
            "it is unknown here (give feature_shape, or use mpbn='channel')"
        )
    return LIF(membrane_norm=membrane_norm, num_features=num_features,
               feature_shape=feature_shape, **neuron_kwargs)  # type: ignore[arg-type]
