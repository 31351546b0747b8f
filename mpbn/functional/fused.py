"""A fused multi-step LIF (optionally MPBN-LIF) with a hand-written BPTT backward.

The reference (:func:`mpbn.functional.neuron.lif_step` under
:func:`~mpbn.functional.neuron.run_over_time`) builds an autograd graph of several small
elementwise ops per time step. This module computes the same function as one custom autograd
Function over the whole sequence ``[T, B, ...]``: forward walks ``t = 0 .. T-1`` and saves only
the pre-reset potentials ``u_pre`` (plus, with MPBN, the per-step statistics ``[T, F]`` and the
spikes it returns anyway); backward walks ``t = T-1 .. 0`` through the recurrence.

Forward (MPBN Eq. 1-2, 7-8)::

    u_pre[t] = decay * u[t-1] + c[t]                     (Eq. 1, u[-1] = 0)
    v[t]     = scale[t] * u_pre[t] + shift[t]            (Eq. 7 as a per-feature affine map)
    o[t]     = 1[v[t] - V_th > 0]                        (Eq. 2 / 8)
    u[t]     = u_pre[t] * (1 - o[t])   or   u_pre[t] - o[t] * reset_amount

with ``scale = lambda / sqrt(var_t + eps)`` and ``shift = beta - mu_t * scale``: the batch
statistics of ``u_pre[t]`` in training (biased variance, as BN normalizes), the running ones in
evaluation, and ``scale = 1, shift = 0`` without MPBN.

Backward (BPTT; ``g_u[t]`` is dL/du[t] coming from step ``t + 1``, zero at ``t = T-1``)::

    g_o      = dL/do[t] + g_u[t] * du[t]/do[t]           (-u_pre hard, -reset_amount soft;
                                                          0 with detach_reset, as Eq. 11)
    g_v      = g_o * surrogate'(v - V_th)                (Eq. 12 for "rectangle")
    g_pre    = g_u[t] * du[t]/du_pre[t] + BN'(g_v)       ((1 - o) hard, 1 soft)
    dL/dc[t] = g_pre,   g_u[t-1] = decay * g_pre          (Eq. 1)

where ``BN'`` is batch-norm's input gradient with the statistics of step ``t`` (training) or
``scale * g_v`` (evaluation), and ``dL/dlambda``, ``dL/dbeta`` are summed over steps.

Where the pieces live: this module holds the autograd Function and the entry points; the
recurrence itself (forward and backward over time, written once) is
:mod:`mpbn.functional.lif_recurrence`; which implementation runs is
:mod:`mpbn.functional.lif_backend`. Two CPU variants run the same Python code: eager
(vectorized tensor ops, no compile latency) and ``torch.compile`` d (Inductor fuses a step, or
the whole LIF sequence, into one C++ loop). On CUDA (float32/16, bfloat16) the Triton kernels
of :mod:`mpbn.functional.triton_lif` run: plain LIF and eval-mode MPBN walk ``T`` inside one
launch; training-mode MPBN takes one launch per step boundary (its batch statistics are a
reduction between every two steps).

Every backend receives the neuron's one parameter record, :class:`~mpbn.functional.neuron.LIFParams`
(thresholds already shaped for one step), under the same field names.

Deviations from the reference are rounding only: ``v`` is computed as ``scale * u_pre + shift``
rather than ``F.batch_norm``'s expression, so a potential within a few ulps of ``V_th`` may fire
differently (never seen in float64 tests). Folded neurons (``threshold_sign``), thresholds that
require gradients and synchronized (distributed) MPBN are not fused: :func:`unfusable_reason`
says why and the module runs the reference.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from mpbn.functional import lif_backend
from mpbn.functional.lif_backend import BACKENDS, compile_enabled, set_compile
from mpbn.functional.lif_recurrence import (
    StepConfig,
    backward_steps,
    forward_steps,
    per_step,
)
from mpbn.functional.neuron import LIFParams
from mpbn.functional.norm import update_running_stats

__all__ = [
    "BACKENDS",
    "FusedLIF",
    "MembraneNormArgs",
    "apply_fused",
    "compile_enabled",
    "lif_fused",
    "set_compile",
    "step_config",
    "unfusable_reason",
]


@dataclass(frozen=True)
class MembraneNormArgs:
    """The MPBN of an MPBN-LIF, in the layout of :class:`mpbn.layers.MembraneBN`.

    Attributes:
        granularity: ``"channel"`` (statistics over batch and space of dim 1 of a step) or
            ``"element"`` (statistics over the batch, one set per neuron).
        weight: ``lambda``, ``[C]`` or the per-step shape ``(C, ...)``.
        bias: ``beta``, like ``weight``.
        running_mean: Running mean like ``weight``; updated in place in training.
        running_var: Running (unbiased) variance like ``weight``; updated in place in training.
        eps: Added to the variance.
        momentum: Running-statistics momentum (as ``nn.BatchNorm``).
        training: Batch statistics per step (True) or running statistics (False).
    """

    granularity: str
    weight: Tensor
    bias: Tensor
    running_mean: Tensor
    running_var: Tensor
    eps: float = 1e-5
    momentum: float = 0.1
    training: bool = True


def _is_tensor_needing_grad(value: object) -> bool:
    return isinstance(value, Tensor) and value.requires_grad


def unfusable_reason(x_seq: Tensor, params: LIFParams,
                     norm: MembraneNormArgs | None = None) -> str | None:
    """Why :func:`lif_fused` would not compute exactly what the reference computes, or ``None``.

    Not fused: folded neurons (``threshold_sign``), thresholds or reset amounts that require
    gradients (the fused backward returns none for them) or are tensors of another dtype or
    device than the input (the reference promotes the potential to theirs), non-float or empty
    input, and MPBN whose parameters differ in dtype/device from the input (the reference then
    relies on autocast or type promotion inside ``F.batch_norm``).
    """
    if x_seq.dim() < 2 or not x_seq.is_floating_point() or x_seq.shape[0] == 0:
        return f"the input must be a non-empty float sequence [T, B, ...], got {x_seq.dtype} " \
               f"{tuple(x_seq.shape)}"
    if params.threshold_sign is not None:
        return "a folded neuron with threshold_sign"
    if _is_tensor_needing_grad(params.v_threshold) or _is_tensor_needing_grad(
            params.reset_amount):
        return "a threshold or reset amount that requires a gradient"
    for value in (params.v_threshold, params.reset_amount):
        # The reference's v - V_th promotes a bf16 potential to a float32 tensor threshold's
        # dtype (and fires on that); the fused step computes in the input dtype.
        if isinstance(value, Tensor) and (value.dtype != x_seq.dtype
                                          or value.device != x_seq.device):
            return "a threshold or reset amount of another dtype or device than the input"
    if norm is not None:
        if x_seq.dim() < 3:
            return "MPBN needs an input [T, B, C, ...]"
        for tensor in (norm.weight, norm.bias, norm.running_mean, norm.running_var):
            if tensor.dtype != x_seq.dtype or tensor.device != x_seq.device:
                return "MPBN parameters of another dtype or device than the input"
        if norm.training and x_seq[0].numel() // norm.weight.numel() < 2:
            return "one value per MPBN feature in training"  # let the reference raise
    return None


@functools.cache
def _interned(cfg: StepConfig) -> StepConfig:
    """The first :class:`StepConfig` equal to ``cfg``: one object per distinct value (eager
    calls; :func:`step_config` skips it while torch.compile traces)."""
    return cfg


def step_config(x_seq: Tensor, params: LIFParams, norm: MembraneNormArgs | None) -> StepConfig:
    """The static part of a call (:class:`StepConfig`), one object per distinct value.

    Eager calls key the compiled loops by it, so one object per value (:func:`_interned`) keeps
    their torch.compile guards on its identity from recompiling every call. While torch.compile
    traces a whole model, the config is a constant of the traced graph and needs no interning:
    the cache is not traced (Dynamo would warn that it ignores the cache wrapper), and neither
    is a module-level dict, which the first call fills and the graph would guard on being
    empty, compiling twice.
    """
    reduce_dims: tuple[int, ...] = ()
    norm_mode = None
    if norm is not None:
        norm_mode = "train" if norm.training else "eval"
        step_dims = x_seq.dim() - 1
        reduce_dims = (0,) + tuple(range(2, step_dims)) if norm.granularity == "channel" else (0,)
    cfg = StepConfig(
        decay=float(params.decay),
        hard=params.reset == "hard",
        surrogate=params.surrogate,
        alpha=float(params.surrogate_alpha),
        detach_reset=bool(params.detach_reset),
        norm=norm_mode,
        reduce_dims=reduce_dims,
        eps=float(norm.eps) if norm is not None else 0.0,
        channel=norm is None or norm.granularity == "channel",
    )
    return cfg if torch.compiler.is_compiling() else _interned(cfg)


class FusedLIF(torch.autograd.Function):
    """The whole LIF / MPBN-LIF sequence as one autograd node (see the module docstring).

    Saved for backward: ``u_pre [T, B, ...]`` in the input dtype; with MPBN also ``[T, F]``
    statistics and, for a hard reset, the spikes as uint8
    (:func:`~mpbn.functional.lif_recurrence.saves_fired`; the Triton kernels keep instead the
    ``[2, T, F]`` affine maps each step normalized with). The float spikes returned are not
    kept: the next layer saves them as it needs (bool, in the model zoo).
    """

    @staticmethod
    def forward(
        ctx,
        c_seq: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        params: LIFParams,
        norm: MembraneNormArgs | None,
        cfg: StepConfig,
        backend: str,
    ) -> Tensor:
        # Nothing to save when no input needs a gradient (inference, torch.no_grad()).
        save = any(ctx.needs_input_grad[:3])
        v_threshold, reset_amount = params.v_threshold, params.subtracted
        mean_eval = invstd_eval = None
        if cfg.norm == "eval":
            step = c_seq[0]
            mean_eval = per_step(norm.running_mean, norm.granularity, step)
            invstd_eval = torch.rsqrt(per_step(norm.running_var, norm.granularity, step) + cfg.eps)
            weight = per_step(weight, norm.granularity, step)
            bias = per_step(bias, norm.granularity, step)
        elif cfg.norm == "train":
            weight = per_step(weight, norm.granularity, c_seq[0])
            bias = per_step(bias, norm.granularity, c_seq[0])
        affine = None  # training-mode Triton: the per-step scale/shift that backward reuses
        if backend == "triton":
            from mpbn.functional import triton_lif

            try:
                if cfg.norm == "train":
                    spikes, u_pre_seq, means, variances, affine = triton_lif.forward_train(
                        c_seq, v_threshold, reset_amount, weight, bias, cfg, save)
                else:
                    spikes, u_pre_seq = triton_lif.forward(
                        c_seq, v_threshold, reset_amount, weight, bias, mean_eval, invstd_eval,
                        cfg, save)
                    means = variances = None
                fired = None  # the kernels recompute spikes exactly
            except Exception as error:  # noqa: BLE001 - any kernel failure: run the torch code
                lif_backend.note_triton_failure(error)
                backend = "eager"
        if backend != "triton":
            spikes, u_pre_seq, fired, means, variances = lif_backend.run_maybe_compiled(
                forward_steps, backend == "compiled", c_seq, v_threshold, reset_amount, weight,
                bias, mean_eval, invstd_eval, cfg, save)
        if cfg.norm == "train":
            steps, count = c_seq.shape[0], c_seq[0].numel() // weight.numel()
            # Unbiased variance for the running estimate, as BN tracks it.
            means = means.to(norm.running_mean.dtype)
            variances = variances.to(norm.running_var.dtype)
            update_running_stats(norm.running_mean.view(-1), norm.running_var.view(-1),
                                 means, variances, norm.momentum)
            # Backward wants the normalizing (biased) statistics, shaped for one step.
            stat_shape = (steps, *weight.shape)
            invstds = torch.rsqrt(variances * ((count - 1) / count) + cfg.eps).view(stat_shape)
            means = means.view(stat_shape)
        if save:
            tensors = [u_pre_seq, fired]
            if cfg.norm == "train":
                tensors += [means, invstds]
            elif cfg.norm == "eval":
                tensors += [mean_eval, invstd_eval]
            else:
                tensors += [None, None]
            tensors += [weight, bias]
            tensors.append(v_threshold if isinstance(v_threshold, Tensor) else None)
            tensors.append(reset_amount if isinstance(reset_amount, Tensor) else None)
            tensors.append(affine)
            ctx.save_for_backward(*tensors)
            ctx.v_threshold = None if isinstance(v_threshold, Tensor) else v_threshold
            ctx.reset_amount = None if isinstance(reset_amount, Tensor) else reset_amount
            ctx.cfg, ctx.backend = cfg, backend
            ctx.granularity = None if norm is None else norm.granularity
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes: Tensor):
        (u_pre_seq, spikes, means, invstds, weight, bias, v_threshold_t, reset_amount_t,
         affine) = ctx.saved_tensors
        v_threshold = ctx.v_threshold if v_threshold_t is None else v_threshold_t
        reset_amount = ctx.reset_amount if reset_amount_t is None else reset_amount_t
        cfg: StepConfig = ctx.cfg
        grad_spikes = grad_spikes.contiguous()
        backend = ctx.backend
        if backend == "triton":
            from mpbn.functional import triton_lif

            try:
                if cfg.norm == "train":
                    grad_c, grad_w, grad_b = triton_lif.backward_train(
                        grad_spikes, u_pre_seq, v_threshold, reset_amount, means, invstds,
                        affine, cfg)
                    grad_w, grad_b = grad_w.to(weight.dtype), grad_b.to(bias.dtype)
                else:
                    grad_c, grad_w, grad_b = triton_lif.backward(
                        grad_spikes, u_pre_seq, v_threshold, reset_amount, weight, bias, means,
                        invstds, cfg)
            except Exception as error:  # noqa: BLE001 - as in forward; spikes are recomputed
                lif_backend.note_triton_failure(error)
                backend = "eager"
        if backend != "triton":
            grad_c, grad_w, grad_b = lif_backend.run_maybe_compiled(
                backward_steps, backend == "compiled", grad_spikes, u_pre_seq, spikes,
                v_threshold, reset_amount, weight, bias, means, invstds, cfg)
        if cfg.norm is not None:
            # Back to the parameters' own shape ([C] or (C, ...)).
            grad_w = grad_w.reshape(-1) if ctx.granularity == "channel" else grad_w.reshape(
                weight.shape)
            grad_b = grad_b.reshape(-1) if ctx.granularity == "channel" else grad_b.reshape(
                bias.shape)
            if not ctx.needs_input_grad[1]:
                grad_w = None
            if not ctx.needs_input_grad[2]:
                grad_b = None
        return grad_c, grad_w, grad_b, None, None, None, None


def lif_fused(
    x_seq: Tensor,
    params: LIFParams | None = None,
    norm: MembraneNormArgs | None = None,
    backend: str = "auto",
) -> Tensor:
    """Spikes of a LIF (MPBN-LIF with ``norm``) over ``x_seq [T, B, ...]`` (MPBN Eq. 1-2, 7-8).

    Same function as the reference :func:`~mpbn.functional.neuron.lif_step` run over time,
    computed by :class:`FusedLIF`. In training with ``norm``, the running statistics are
    updated in place once, with the step-averaged batch mean and unbiased variance
    (:func:`mpbn.functional.norm.update_running_stats`), as ``MembraneBN.through_time`` does.

    Args:
        x_seq: Input currents ``[T, B, ...]``.
        params: The neuron (``None``: the default :class:`LIFParams`); tensor thresholds must
            broadcast to one step ``[B, ...]``.
        norm: The membrane normalization, or ``None`` for plain LIF.
        backend: ``"eager"`` (torch ops), ``"compiled"`` (``torch.compile``), ``"triton"``
            (CUDA, not float64; falls back to eager elsewhere), or ``"auto"``: Triton where it
            applies, else compiled if :func:`compile_enabled`, else eager. A Triton kernel
            that fails warns once and the torch code runs from then on.

    Raises:
        ValueError: The arguments are outside what the fused path computes exactly (the
            message says why; see :func:`unfusable_reason`), or an unknown backend.
    """
    params = LIFParams() if params is None else params
    reason = unfusable_reason(x_seq, params, norm)
    if reason is not None:
        raise ValueError(f"the fused LIF does not support {reason}; use the reference "
                         "(mpbn.LIF(backend='reference'))")
    return apply_fused(x_seq, params, norm, backend)


def apply_fused(x_seq: Tensor, params: LIFParams, norm: MembraneNormArgs | None = None,
                backend: str = "auto") -> Tensor:
    """:func:`lif_fused` for a caller that has checked :func:`unfusable_reason` already."""
    cfg = step_config(x_seq, params, norm)
    backend = lif_backend.resolve_backend(backend, x_seq)
    if backend == "triton":
        from mpbn.functional import triton_lif

        if params.surrogate not in triton_lif.SURROGATE_IDS:
            backend = "eager"  # a surrogate registered without a kernel branch yet
    weight = norm.weight if norm is not None else None
    bias = norm.bias if norm is not None else None
    return FusedLIF.apply(x_seq.contiguous(), weight, bias, params, norm, cfg, backend)
