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

Two CPU variants run the same Python code: eager (vectorized tensor ops, no compile latency) and
``torch.compile`` d (Inductor fuses a step, or the whole LIF sequence, into one C++ loop). On
CUDA (float32/16, bfloat16) the Triton kernels of :mod:`mpbn.functional.triton_lif` run: plain
LIF and eval-mode MPBN walk ``T`` inside one launch; training-mode MPBN takes one launch per
step boundary (its batch statistics are a reduction between every two steps).

Deviations from the reference are rounding only: ``v`` is computed as ``scale * u_pre + shift``
rather than ``F.batch_norm``'s expression, so a potential within a few ulps of ``V_th`` may fire
differently (never seen in float64 tests). Folded neurons (``threshold_sign``), thresholds that
require gradients and synchronized (distributed) MPBN are not fused: :func:`can_fuse` says no
and the module runs the reference.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from mpbn.functional.norm import update_running_stats
from mpbn.functional.surrogate import DEFAULT_ALPHA, check_surrogate, surrogate_grad

__all__ = [
    "BACKENDS",
    "MembraneNormArgs",
    "FusedLIF",
    "can_fuse",
    "lif_fused",
    "compile_enabled",
    "set_compile",
]

#: ``backend`` values of :func:`lif_fused`.
BACKENDS = ("auto", "eager", "compiled", "triton")

# CPU compile is opt-in: the first call per shape costs ~10-20 s of gcc, which a test suite or a
# short run does not want to pay by surprise. MPBN_COMPILE=1 (or set_compile(True)) turns it on.
_COMPILE = os.environ.get("MPBN_COMPILE", "0") not in ("", "0", "false", "False")


def set_compile(enabled: bool) -> None:
    """Use ``torch.compile`` d loops for CPU tensors under ``backend="auto"``."""
    global _COMPILE
    _COMPILE = bool(enabled)


def compile_enabled() -> bool:
    """Whether ``backend="auto"`` compiles on CPU (``MPBN_COMPILE=1`` or :func:`set_compile`)."""
    return _COMPILE


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


@dataclass(frozen=True)
class _Config:
    """Everything static about one call; hashable, so it can key compiled variants."""

    decay: float
    hard: bool
    surrogate: str
    alpha: float
    detach_reset: bool
    norm: str | None  # None, "train" or "eval"
    reduce_dims: tuple[int, ...]  # the dims of a step [B, ...] that MPBN statistics reduce
    eps: float
    channel: bool = True  # MPBN granularity: per channel, else per element


def _is_tensor_needing_grad(value: object) -> bool:
    return isinstance(value, Tensor) and value.requires_grad


def can_fuse(
    x_seq: Tensor,
    v_threshold: float | Tensor,
    threshold_sign: Tensor | float | None = None,
    reset_amount: float | Tensor | None = None,
    norm: MembraneNormArgs | None = None,
) -> bool:
    """Whether :func:`lif_fused` computes exactly what the reference would for these arguments.

    Not fused: folded neurons (``threshold_sign``), thresholds or reset amounts that require
    gradients (the fused backward returns none for them), non-float input, and MPBN whose
    parameters differ in dtype/device from the input (the reference then relies on autocast or
    type promotion inside ``F.batch_norm``).
    """
    if x_seq.dim() < 2 or not x_seq.is_floating_point() or x_seq.shape[0] == 0:
        return False
    if threshold_sign is not None:
        return False
    if _is_tensor_needing_grad(v_threshold) or _is_tensor_needing_grad(reset_amount):
        return False
    if norm is not None:
        if x_seq.dim() < 3:
            return False
        for tensor in (norm.weight, norm.bias, norm.running_mean, norm.running_var):
            if tensor.dtype != x_seq.dtype or tensor.device != x_seq.device:
                return False
        if norm.training and x_seq[0].numel() // norm.weight.numel() < 2:
            return False  # BN refuses one value per feature; let the reference raise
    return True


def _per_step(value: Tensor, granularity: str, step: Tensor) -> Tensor:
    """Shape a per-feature MPBN tensor to broadcast over one step ``[B, C, ...]``."""
    if granularity == "channel":
        return value.view(-1, *([1] * (step.dim() - 2)))
    return value.view(step.shape[1:])


# ----------------------------------------------------------------------------------------------
# The recurrence, written once. Called eagerly or through torch.compile (same code, same math).
# ----------------------------------------------------------------------------------------------


def _step(x: Tensor, threshold: float | Tensor = 0.0) -> Tensor:
    """``1[x > threshold]`` in ``x``'s dtype.

    Eagerly via ``gt(out=float)``: on CPU, bool tensors and the ops that read them
    (``masked_fill``, ``where``, ``.to``) run several times slower than float ones.
    """
    if torch.compiler.is_compiling():
        return (x > threshold).to(x.dtype)
    return torch.gt(x, threshold, out=torch.empty_like(x))


def _surrogate_grad(name: str, x: Tensor, scale: float | Tensor, alpha: float) -> Tensor:
    """:func:`~mpbn.functional.surrogate.surrogate_grad`, with float masks instead of bool.

    Same formulas (tested against the reference); ``rectangle`` and ``tanh`` build their window
    with ``le/ge(out=float)``, which is several times faster on CPU than bool masks.
    """
    if torch.compiler.is_compiling() or name not in ("rectangle", "tanh"):
        return surrogate_grad(name, x, scale, alpha)
    if name == "rectangle":  # Eq. 12: 1/alpha where |x| <= alpha/2
        window = torch.le(x.abs(), alpha / 2, out=torch.empty_like(x))
        return window.div_(alpha)
    s = (x / (2 * scale)).add_(0.5)
    inside = torch.ge(s, 0, out=torch.empty_like(s)).mul_(torch.le(s, 1, out=torch.empty_like(s)))
    sech2 = torch.tanh(s.sub_(0.5).mul_(alpha)).square_().neg_().add_(1)
    return inside.mul_(sech2).mul_(alpha / (2 * math.tanh(alpha / 2))).div_(2 * scale)


def _shifted_moments(values: Tensor, dims: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """Biased variance and mean over ``dims`` (kept), in one pass of plain sums.

    The sums run about the first value of each reduced slice, ``k``: ``var = E[(x-k)^2] -
    E[x-k]^2`` loses precision only as ``(mean - k)^2 / var`` grows, and ``k`` is one of the
    values summed, so that ratio stays of the order of the data's spread. Why not
    ``torch.var_mean``: Inductor compiles it on CPU to a per-element Welford update, several
    times slower than plain sums over the same step (compute-bound); with this and
    :func:`_sum_rows_first` the compiled MPBN-LIF forward + backward at T = 8 went from 10.1 to
    8.2 ms (docs/PERFORMANCE.md, "What changed in session 4").
    """
    shift = values
    for dim in dims:
        shift = shift.narrow(dim, 0, 1)
    centred = values - shift
    count = values.numel() // shift.numel()
    mean_c = _sum_rows_first(centred, dims) / count
    var = _sum_rows_first(centred * centred, dims) / count - mean_c * mean_c
    return var.clamp_min(0), mean_c + shift


def _sum_rows_first(values: Tensor, dims: tuple[int, ...]) -> Tensor:
    """``values.sum(dims, keepdim=True)``, the contiguous trailing dims first, then the batch.

    For a channel-wise sum of ``[B, C, H, W]`` Inductor otherwise loops channel by channel over
    ``B`` short rows far apart (latency-bound: ~2x slower than streaming at the benchmark's
    ``H * W = 256``); summing each ``(b, c)`` row first walks memory in order, then the
    ``[B, C]`` partial sums are tiny.
    """
    rows = tuple(d for d in dims if d != 0)
    if rows:
        values = values.sum(dim=rows, keepdim=True)
    return values.sum(dim=0, keepdim=True) if 0 in dims else values


def _slot(buffer: Tensor | None, t: int) -> Tensor | None:
    """``buffer[t]`` as an ``out=`` target in eager mode; ``None`` (a fresh tensor) compiled."""
    return None if buffer is None else buffer[t]


def _forward_steps(
    c_seq: Tensor,
    v_th: float | Tensor,
    amount: float | Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    mean_eval: Tensor | None,
    invstd_eval: Tensor | None,
    cfg: _Config,
    save: bool,
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None, Tensor | None]:
    """Forward over time. Returns ``(spikes, u_pre_seq, fired, means, variances)``.

    ``means``/``variances`` (the per-step batch mean and *unbiased* variance, as BN's running
    statistics track them) are ``[T, F]`` in training MPBN, else ``None``; ``u_pre_seq`` is
    ``None`` unless ``save``. ``fired`` is a uint8 copy of the spikes for the backward of an
    MPBN neuron with hard reset (see :func:`_saves_fired`), else ``None``.

    Eagerly, every op writes its result straight into the output buffers (``out=``): one pass
    per op and no final ``stack`` copy. Under ``torch.compile`` the same ops run functionally
    and Inductor fuses them (with the ``stack``) into one loop.
    """
    steps = c_seq.shape[0]
    eager = not torch.compiler.is_compiling()
    spike_buf = torch.empty_like(c_seq) if eager else None
    u_pre_buf = torch.empty_like(c_seq) if eager and save else None
    keep_fired = save and _saves_fired(cfg)
    fired_buf = torch.empty(c_seq.shape, dtype=torch.uint8, device=c_seq.device) if (
        eager and keep_fired) else None
    spikes: list[Tensor] = []
    u_pres: list[Tensor] = []
    means: list[Tensor] = []
    variances: list[Tensor] = []
    if cfg.norm == "eval":
        scale = weight * invstd_eval
        shift = bias - mean_eval * scale
    u: Tensor | None = None
    for t in range(steps):
        if u is None:  # u[-1] = 0, so u_pre[0] = c[0] exactly
            u_pre = c_seq[t] if u_pre_buf is None else u_pre_buf[t].copy_(c_seq[t])
        else:  # Eq. 1 (eagerly a fused multiply-add: may differ from the reference by an ulp)
            u_pre = torch.add(c_seq[t], u, alpha=cfg.decay, out=_slot(u_pre_buf, t))
        if cfg.norm is None:
            v = u_pre
        else:
            if cfg.norm == "train" and eager:
                # F.batch_norm is CPU's fastest one-step statistics (var_mean over (0, 2, 3) is
                # several times slower) and computes v exactly as the reference does; with
                # momentum 1 it writes the batch mean and unbiased variance into these buffers.
                feats = u_pre if cfg.channel else u_pre.flatten(1)
                mean = torch.zeros(feats.shape[1], dtype=u_pre.dtype, device=u_pre.device)
                var = torch.zeros_like(mean)
                v = F.batch_norm(feats, mean, var, weight.reshape(-1), bias.reshape(-1), True,
                                 1.0, cfg.eps).view_as(u_pre)
                means.append(mean)
                variances.append(var)
            elif cfg.norm == "train":
                # Biased variance normalizes (BN Eq. 4-5); one pass for both moments.
                var, mean = _shifted_moments(u_pre, cfg.reduce_dims)
                scale = weight * torch.rsqrt(var + cfg.eps)
                v = u_pre * scale + (bias - mean * scale)  # Eq. 7
                count = u_pre.numel() // mean.numel()
                means.append(mean.reshape(-1))
                variances.append(var.reshape(-1) * (count / (count - 1)))
            else:  # eval: Eq. 7 with running statistics, a per-feature affine map
                v = (u_pre * scale).add_(shift)
        # Eq. 2 / 8. v > V_th is exactly v - V_th > 0 in IEEE arithmetic (gradual underflow).
        o = torch.gt(v, v_th, out=_slot(spike_buf, t))
        if not eager:
            o = o.to(c_seq.dtype)
        if cfg.hard:
            u = torch.addcmul(u_pre, u_pre, o, value=-1)  # u_pre * (1 - o), exactly
        elif isinstance(amount, Tensor):
            u = torch.addcmul(u_pre, o, amount, value=-1)
        else:
            u = torch.add(u_pre, o, alpha=-amount)
        spikes.append(o)
        if save:
            u_pres.append(u_pre)
        if keep_fired and eager:
            fired_buf[t].copy_(o)
    if eager:
        spikes_seq, u_pre_seq, fired_seq = spike_buf, u_pre_buf, fired_buf
    else:
        spikes_seq = torch.stack(spikes)
        u_pre_seq = torch.stack(u_pres) if save else None
        # From the stacked spikes: converted step by step, Inductor gave each uint8 step a
        # transposed layout and restructured the whole loop around it (2x slower forward).
        fired_seq = spikes_seq.to(torch.uint8) if keep_fired else None
    return (
        spikes_seq,
        u_pre_seq,
        fired_seq,
        torch.stack(means) if means else None,
        torch.stack(variances) if variances else None,
    )


def _backward_steps(
    grad_spikes: Tensor,
    u_pre_seq: Tensor,
    spikes: Tensor | None,
    v_th: float | Tensor,
    amount: float | Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    means: Tensor | None,
    invstds: Tensor | None,
    cfg: _Config,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """BPTT over time (module docstring). Returns ``(grad_c, grad_weight, grad_bias)``.

    ``means``/``invstds`` are ``[T, ...]`` per-step statistics in training and the running
    statistics shaped for one step (no ``T``) in evaluation. ``spikes`` (uint8 or float) may be
    ``None``: recomputed from ``u_pre``, which is exact without MPBN (``v = u_pre``).
    """
    steps = u_pre_seq.shape[0]
    eager = not torch.compiler.is_compiling()
    grad_buf = torch.empty_like(u_pre_seq) if eager else None
    grads: list[Tensor] = []
    grad_w: Tensor | None = None
    grad_b: Tensor | None = None
    g_u: Tensor | None = None
    count = 1
    if cfg.norm is not None:
        for d in cfg.reduce_dims:
            count *= u_pre_seq.shape[1 + d]
    for t in range(steps - 1, -1, -1):
        u_pre = u_pre_seq[t]
        out = _slot(grad_buf, t)
        if cfg.norm is None:
            x = u_pre - v_th
        else:
            mean = means[t] if cfg.norm == "train" else means
            invstd = invstds[t] if cfg.norm == "train" else invstds
            scale = weight * invstd
            # (per-feature constants folded first: a broadcast addcmul is slow on CPU)
            x = (u_pre * scale).add_(bias - mean * scale - v_th)
        g_v = _surrogate_grad(cfg.surrogate, x, v_th, cfg.alpha)
        if g_u is not None and not cfg.detach_reset:
            # dL/do[t] = grad + g_u * du/do, du/do = -u_pre (hard) or -reset_amount (soft)
            if cfg.hard or isinstance(amount, Tensor):
                g_o = torch.addcmul(grad_spikes[t], g_u, u_pre if cfg.hard else amount, value=-1)
            else:
                g_o = torch.add(grad_spikes[t], g_u, alpha=-amount)
            g_v.mul_(g_o)
        else:
            g_v.mul_(grad_spikes[t])
        if g_u is not None and cfg.hard:
            fired = _step(x) if spikes is None else spikes[t]
            g_u = g_u.addcmul_(g_u, fired, value=-1)  # du/du_pre = 1 - o: g_u - g_u * o
        if cfg.norm is None:
            g_pre = g_v if g_u is None else torch.add(g_v, g_u, out=out)
        else:
            # dL/dbeta = sum g_v; dL/dlambda = sum g_v * x_hat = invstd * (sum g_v u - mu sum g_v)
            sum_g = _sum_rows_first(g_v, cfg.reduce_dims)
            sum_gu = _sum_rows_first(g_v * u_pre, cfg.reduce_dims)
            sum_gx = invstd * (sum_gu - mean * sum_g)
            grad_w = sum_gx if grad_w is None else grad_w + sum_gx
            grad_b = sum_g if grad_b is None else grad_b + sum_g
            if cfg.norm == "train":
                # BN input gradient: scale * (g_v - mean(g_v) - x_hat * mean(g_v * x_hat)),
                # with x_hat = (u_pre - mu) * invstd expanded into a per-feature affine in u_pre.
                k1 = scale * invstd * sum_gx / count
                k0 = k1 * mean - scale * sum_g / count
                g_pre = g_v.mul_(scale).sub_(u_pre * k1).add_(k0)
            else:
                g_pre = g_v.mul_(scale)
            if g_u is not None:
                g_pre = torch.add(g_pre, g_u, out=out)
        if eager and g_pre.data_ptr() != grad_buf[t].data_ptr():
            grad_buf[t].copy_(g_pre)
        grads.append(g_pre)
        g_u = torch.mul(g_pre, cfg.decay)  # Eq. 1: u_pre[t] = decay * u[t-1] + c[t]
    if eager:
        return grad_buf, grad_w, grad_b
    grads.reverse()
    return torch.stack(grads), grad_w, grad_b


_compiled: dict[str, object] = {}
_compile_failed = False
# One compiled function serves every layer, each (shape, configuration) its own specialization
# (dynamic=False). Dynamo's default of 8 per function is fewer than a ResNet's layer shapes x
# train/eval modes x MPBN variants: it raised, and the fallback then ran every layer eagerly.
_RECOMPILE_LIMIT = 256
_CONFIGS: dict[_Config, _Config] = {}


def _run_steps(name: str, backend: str, *args):
    """``_forward_steps``/``_backward_steps``, through ``torch.compile`` for ``"compiled"``.

    Compile is an optimization only: if it fails (no C++ compiler, an Inductor limitation),
    warn once and run the same code eagerly from then on.
    """
    global _compile_failed
    eager_fn = _forward_steps if name == "forward" else _backward_steps
    if backend == "compiled" and not _compile_failed:
        if name not in _compiled:
            _compiled[name] = torch.compile(eager_fn, dynamic=False, fullgraph=True)
        dynamo_config = torch._dynamo.config
        # torch < 2.6 names it cache_size_limit
        key = "recompile_limit" if hasattr(dynamo_config, "recompile_limit") else "cache_size_limit"
        limit = getattr(dynamo_config, key)
        try:
            # Raised for this call only (two setattrs: cheaper per call than config.patch).
            setattr(dynamo_config, key, max(limit, _RECOMPILE_LIMIT))
            return _compiled[name](*args)
        except Exception as error:  # noqa: BLE001 - any compile failure means "run eagerly"
            _compile_failed = True
            warnings.warn(f"torch.compile of the fused LIF failed ({type(error).__name__}: "
                          f"{error}); using the eager fused path", RuntimeWarning, stacklevel=2)
        finally:
            setattr(dynamo_config, key, limit)
    return eager_fn(*args)


def _saves_fired(cfg: _Config) -> bool:
    """Whether backward reads the forward's spikes rather than recomputing them from ``u_pre``.

    Only a hard reset needs them (``du/du_pre = 1 - o``). Without MPBN they are recomputed
    exactly (``v = u_pre``); with MPBN, backward's ``scale * u_pre + shift`` may round differently
    from forward's ``F.batch_norm``, so a potential within an ulp of ``V_th`` could flip: they are
    saved, as uint8 (1 B per element; ``addcmul`` takes uint8 directly, where a bool mask
    through ``masked_fill`` was several times slower on CPU).
    """
    return cfg.hard and cfg.norm is not None


_triton_failed = False


def _use_triton(c_seq: Tensor, cfg: _Config) -> bool:
    """CUDA, Triton importable, and a dtype the kernels compute exactly (they run in float32)."""
    if not c_seq.is_cuda or _triton_failed or c_seq.dtype == torch.float64:
        return False
    from mpbn.functional import triton_lif

    return triton_lif.available()


def _triton_failed_warning(error: Exception) -> None:
    """Kernels are an optimization: if one fails (a Triton version, a GPU it does not support),
    warn once and run the torch code from then on."""
    global _triton_failed
    _triton_failed = True
    warnings.warn(f"the Triton LIF kernel failed ({type(error).__name__}: {error}); using the "
                  "eager fused path", RuntimeWarning, stacklevel=3)


class FusedLIF(torch.autograd.Function):
    """The whole LIF / MPBN-LIF sequence as one autograd node (see the module docstring).

    Saved for backward: ``u_pre [T, B, ...]`` in the input dtype; with MPBN also ``[T, F]``
    statistics and, for a hard reset, the spikes as uint8 (:func:`_saves_fired`; the Triton
    kernels keep instead the ``[2, T, F]`` affine maps each step normalized with). The float spikes
    returned are not kept: the next layer saves them as it needs (bool, in the model zoo).
    """

    @staticmethod
    def forward(
        ctx,
        c_seq: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        v_th: float | Tensor,
        amount: float | Tensor,
        norm: MembraneNormArgs | None,
        cfg: _Config,
        backend: str,
    ) -> Tensor:
        # Nothing to save when no input needs a gradient (inference, torch.no_grad()).
        save = any(ctx.needs_input_grad[:3])
        mean_eval = invstd_eval = None
        if cfg.norm == "eval":
            step = c_seq[0]
            mean_eval = _per_step(norm.running_mean, norm.granularity, step)
            invstd_eval = torch.rsqrt(_per_step(norm.running_var, norm.granularity, step) + cfg.eps)
            weight = _per_step(weight, norm.granularity, step)
            bias = _per_step(bias, norm.granularity, step)
        elif cfg.norm == "train":
            weight = _per_step(weight, norm.granularity, c_seq[0])
            bias = _per_step(bias, norm.granularity, c_seq[0])
        affine = None  # training-mode Triton: the per-step scale/shift that backward reuses
        if backend == "triton":
            from mpbn.functional import triton_lif

            try:
                if cfg.norm == "train":
                    spikes, u_pre_seq, means, variances, affine = triton_lif.forward_train(
                        c_seq, v_th, amount, weight, bias, cfg, save)
                else:
                    spikes, u_pre_seq = triton_lif.forward(
                        c_seq, v_th, amount, weight, bias, mean_eval, invstd_eval, cfg, save)
                    means = variances = None
                fired = None  # the kernels recompute spikes exactly
            except Exception as error:  # noqa: BLE001 - any kernel failure means "run the torch code"
                _triton_failed_warning(error)
                backend = "eager"
        if backend != "triton":
            spikes, u_pre_seq, fired, means, variances = _run_steps(
                "forward", backend, c_seq, v_th, amount, weight, bias, mean_eval, invstd_eval,
                cfg, save)
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
            tensors.append(v_th if isinstance(v_th, Tensor) else None)
            tensors.append(amount if isinstance(amount, Tensor) else None)
            tensors.append(affine)
            ctx.save_for_backward(*tensors)
            ctx.v_th = None if isinstance(v_th, Tensor) else v_th
            ctx.amount = None if isinstance(amount, Tensor) else amount
            ctx.cfg, ctx.backend = cfg, backend
            ctx.granularity = None if norm is None else norm.granularity
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes: Tensor):
        (u_pre_seq, spikes, means, invstds, weight, bias, v_th_t, amount_t,
         affine) = ctx.saved_tensors
        v_th = ctx.v_th if v_th_t is None else v_th_t
        amount = ctx.amount if amount_t is None else amount_t
        cfg: _Config = ctx.cfg
        grad_spikes = grad_spikes.contiguous()
        backend = ctx.backend
        if backend == "triton":
            from mpbn.functional import triton_lif

            try:
                if cfg.norm == "train":
                    grad_c, grad_w, grad_b = triton_lif.backward_train(
                        grad_spikes, u_pre_seq, v_th, amount, means, invstds, affine, cfg)
                    grad_w, grad_b = grad_w.to(weight.dtype), grad_b.to(bias.dtype)
                else:
                    grad_c, grad_w, grad_b = triton_lif.backward(
                        grad_spikes, u_pre_seq, v_th, amount, weight, bias, means, invstds, cfg)
            except Exception as error:  # noqa: BLE001 - as in forward; spikes are recomputed
                _triton_failed_warning(error)
                backend = "eager"
        if backend != "triton":
            grad_c, grad_w, grad_b = _run_steps(
                "backward", backend, grad_spikes, u_pre_seq, spikes, v_th, amount, weight,
                bias, means, invstds, cfg)
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
        return grad_c, grad_w, grad_b, None, None, None, None, None


def _build_config(
    x_seq: Tensor, decay: float, v_threshold: float | Tensor, reset: str, surrogate: str,
    alpha: float | None, reset_amount: float | Tensor | None, detach_reset: bool,
    norm: MembraneNormArgs | None, backend: str,
) -> _Config:
    """Validate the arguments of :func:`lif_fused` and collect the static ones."""
    if reset not in ("hard", "soft"):
        raise ValueError(f"unknown reset {reset!r}; valid: hard, soft")
    check_surrogate(surrogate)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if not can_fuse(x_seq, v_threshold, None, reset_amount, norm):
        raise ValueError("these arguments are not supported by the fused LIF (see can_fuse)")
    step_dims = x_seq.dim() - 1
    reduce_dims: tuple[int, ...] = ()
    norm_mode = None
    if norm is not None:
        norm_mode = "train" if norm.training else "eval"
        reduce_dims = (0,) + tuple(range(2, step_dims)) if norm.granularity == "channel" else (0,)
    cfg = _Config(
        decay=float(decay),
        hard=reset == "hard",
        surrogate=surrogate,
        alpha=float(DEFAULT_ALPHA[surrogate] if alpha is None else alpha),
        detach_reset=bool(detach_reset),
        norm=norm_mode,
        reduce_dims=reduce_dims,
        eps=float(norm.eps) if norm is not None else 0.0,
        channel=norm is None or norm.granularity == "channel",
    )
    # One object per distinct config: torch.compile guards on the object's identity, and a
    # fresh one per call would recompile every call.
    return _CONFIGS.setdefault(cfg, cfg)


def lif_fused(
    x_seq: Tensor,
    *,
    decay: float = 0.25,
    v_threshold: float | Tensor = 0.5,
    reset: str = "hard",
    surrogate: str = "rectangle",
    alpha: float | None = None,
    reset_amount: float | Tensor | None = None,
    detach_reset: bool = False,
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
        decay: Leak ``tau`` of Eq. 1.
        v_threshold: ``V_th``, a float or a tensor broadcastable to one step ``[B, ...]``.
        reset: ``"hard"`` or ``"soft"``.
        surrogate: Surrogate gradient name.
        alpha: Surrogate parameter; ``None`` takes its default.
        reset_amount: What a soft reset subtracts; ``None`` means ``v_threshold``.
        detach_reset: Stop the gradient through the reset.
        norm: The membrane normalization, or ``None`` for plain LIF.
        backend: ``"eager"`` (torch ops), ``"compiled"`` (``torch.compile``), ``"triton"``
            (CUDA, not float64; falls back to eager elsewhere), or ``"auto"``: Triton where it
            applies, else compiled if :func:`compile_enabled`, else eager. A Triton kernel
            that fails warns once and the torch code runs from then on.
    """
    cfg = _build_config(x_seq, decay, v_threshold, reset, surrogate, alpha, reset_amount,
                        detach_reset, norm, backend)
    x_seq = x_seq.contiguous()
    amount = v_threshold if reset_amount is None else reset_amount
    if backend == "auto":
        if _use_triton(x_seq, cfg):
            backend = "triton"
        else:
            backend = "compiled" if compile_enabled() else "eager"
    elif backend == "triton" and not _use_triton(x_seq, cfg):
        backend = "eager"  # no Triton, a CPU or float64 tensor, or a kernel failed before
    weight = norm.weight if norm is not None else None
    bias = norm.bias if norm is not None else None
    return FusedLIF.apply(x_seq, weight, bias, v_threshold, amount, norm, cfg, backend)
