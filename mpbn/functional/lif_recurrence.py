"""The fused LIF / MPBN-LIF recurrence, written once (math: :mod:`mpbn.functional.fused`).

:func:`forward_steps` walks ``t = 0 .. T-1`` and :func:`backward_steps` walks back through the
BPTT recurrence. The same Python code runs eagerly (every op writes into preallocated buffers
with ``out=``) or through ``torch.compile`` (Inductor fuses a step, or the whole sequence, into
one loop); :mod:`mpbn.functional.lif_backend` decides which. The surrogate derivatives come
from :func:`mpbn.functional.surrogate.surrogate_grad`, with faster float-mask forms of two of
them for eager CPU code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from mpbn.functional.surrogate import surrogate_grad

__all__ = ["StepConfig", "backward_steps", "forward_steps", "per_step", "saves_fired"]


@dataclass(frozen=True)
class StepConfig:
    """The static part of one fused call: the neuron's scalar parameters (from its
    :class:`~mpbn.functional.neuron.LIFParams`, ``alpha`` resolved) and the MPBN mode.

    Hashable, so it keys the compiled variants; :func:`mpbn.functional.fused.step_config`
    builds it and keeps one object per distinct value (dynamo guards on identity).
    """

    decay: float
    hard: bool
    surrogate: str
    alpha: float
    detach_reset: bool
    norm: str | None  # None, "train" or "eval"
    reduce_dims: tuple[int, ...]  # the dims of a step [B, ...] that MPBN statistics reduce
    eps: float
    channel: bool = True  # MPBN granularity: per channel, else per element


def per_step(value: Tensor, granularity: str, step: Tensor) -> Tensor:
    """Shape a per-feature MPBN tensor to broadcast over one step ``[B, C, ...]``."""
    if granularity == "channel":
        return value.view(-1, *([1] * (step.dim() - 2)))
    return value.view(step.shape[1:])


def _step(x: Tensor, threshold: float | Tensor = 0.0) -> Tensor:
    """``1[x > threshold]`` in ``x``'s dtype.

    Eagerly via ``gt(out=float)``: on CPU, bool tensors and the ops that read them
    (``masked_fill``, ``where``, ``.to``) run several times slower than float ones.
    """
    if torch.compiler.is_compiling():
        return (x > threshold).to(x.dtype)
    return torch.gt(x, threshold, out=torch.empty_like(x))


def _surrogate_grad(name: str, x: Tensor, v_threshold: float | Tensor, alpha: float) -> Tensor:
    """:func:`~mpbn.functional.surrogate.surrogate_grad`, with float masks instead of bool.

    Same formulas (tested against the reference); ``rectangle`` and ``tanh`` build their window
    with ``le/ge(out=float)``, which is several times faster on CPU than bool masks.
    """
    if torch.compiler.is_compiling() or name not in ("rectangle", "tanh"):
        return surrogate_grad(name, x, v_threshold, alpha)
    if name == "rectangle":  # Eq. 12: 1/alpha where |x| <= alpha/2
        window = torch.le(x.abs(), alpha / 2, out=torch.empty_like(x))
        return window.div_(alpha)
    s = (x / (2 * v_threshold)).add_(0.5)
    inside = torch.ge(s, 0, out=torch.empty_like(s)).mul_(torch.le(s, 1, out=torch.empty_like(s)))
    sech2 = torch.tanh(s.sub_(0.5).mul_(alpha)).square_().neg_().add_(1)
    return inside.mul_(sech2).mul_(alpha / (2 * math.tanh(alpha / 2))).div_(2 * v_threshold)


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


def forward_steps(
    c_seq: Tensor,
    v_threshold: float | Tensor,
    reset_amount: float | Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    mean_eval: Tensor | None,
    invstd_eval: Tensor | None,
    cfg: StepConfig,
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
    keep_fired = save and saves_fired(cfg)
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
        o = torch.gt(v, v_threshold, out=_slot(spike_buf, t))
        if not eager:
            o = o.to(c_seq.dtype)
        if cfg.hard:
            u = torch.addcmul(u_pre, u_pre, o, value=-1)  # u_pre * (1 - o), exactly
        elif isinstance(reset_amount, Tensor):
            u = torch.addcmul(u_pre, o, reset_amount, value=-1)
        else:
            u = torch.add(u_pre, o, alpha=-reset_amount)
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


def backward_steps(
    grad_spikes: Tensor,
    u_pre_seq: Tensor,
    spikes: Tensor | None,
    v_threshold: float | Tensor,
    reset_amount: float | Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    means: Tensor | None,
    invstds: Tensor | None,
    cfg: StepConfig,
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
            x = u_pre - v_threshold
        else:
            mean = means[t] if cfg.norm == "train" else means
            invstd = invstds[t] if cfg.norm == "train" else invstds
            scale = weight * invstd
            # (per-feature constants folded first: a broadcast addcmul is slow on CPU)
            x = (u_pre * scale).add_(bias - mean * scale - v_threshold)
        g_v = _surrogate_grad(cfg.surrogate, x, v_threshold, cfg.alpha)
        if g_u is not None and not cfg.detach_reset:
            # dL/do[t] = grad + g_u * du/do, du/do = -u_pre (hard) or -reset_amount (soft)
            if cfg.hard or isinstance(reset_amount, Tensor):
                du_do = u_pre if cfg.hard else reset_amount
                g_o = torch.addcmul(grad_spikes[t], g_u, du_do, value=-1)
            else:
                g_o = torch.add(grad_spikes[t], g_u, alpha=-reset_amount)
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

def saves_fired(cfg: StepConfig) -> bool:
    """Whether backward reads the forward's spikes rather than recomputing them from ``u_pre``.

    Only a hard reset needs them (``du/du_pre = 1 - o``). Without MPBN they are recomputed
    exactly (``v = u_pre``); with MPBN, backward's ``scale * u_pre + shift`` may round differently
    from forward's ``F.batch_norm``, so a potential within an ulp of ``V_th`` could flip: they are
    saved, as uint8 (1 B per element; ``addcmul`` takes uint8 directly, where a bool mask
    through ``masked_fill`` was several times slower on CPU).
    """
    return cfg.hard and cfg.norm is not None
