"""Triton kernels for the fused LIF: one pass over memory per direction, ``T`` walked inside.

Covers plain LIF and eval-mode MPBN-LIF, where the normalization is a per-feature affine map
``v = scale * u_pre + shift`` (MPBN Eq. 7 with running statistics, the form of Eq. 9). Each
program owns ``BLOCK`` neurons and keeps their membrane in registers across time steps:

- forward reads ``c[t]``, writes ``o[t]`` and (for backward) ``u_pre[t]``: 12 B per float32
  element-step;
- backward reads ``dL/do[t]`` and ``u_pre[t]``, writes ``dL/dc[t]``: 12 B per element-step,
  recomputing spikes and the surrogate from ``u_pre`` (exact: the same ``v - V_th > 0``). With
  MPBN it also accumulates ``sum_t g_v`` and ``sum_t g_v * u_pre`` per neuron (8 B per element,
  once), which torch reduces into ``dL/dbeta`` and ``dL/dlambda``.

The recurrence is that of :mod:`mpbn.functional.fused` (module docstring there). Training-mode
MPBN needs a batch reduction between every two steps, so it is left to the torch code of
:mod:`mpbn.functional.fused` (eager or compiled). Uses only ``tl.load/store/where/exp`` and a
runtime-bounded ``range`` loop, available in Triton 3.x. Tested on CPU tensors with
``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import math
import os

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # the CPU paths need no Triton
    triton = None
    tl = None

__all__ = ["available", "forward", "backward", "run_for_test"]

_SURROGATE_IDS = {"rectangle": 0, "tanh": 1, "linear": 2, "sigmoid": 3, "atan": 4}
_BLOCK = 1024


def available() -> bool:
    """Whether the kernels can run: Triton importable, and CUDA (or the interpreter)."""
    if triton is None:
        return False
    return torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"


if triton is not None:

    @triton.jit
    def _surrogate_grad(x, v_th, alpha, coef, SURROGATE: tl.constexpr):
        """``g(x)`` of :func:`mpbn.functional.surrogate.surrogate_grad` (``coef`` see there)."""
        if SURROGATE == 0:  # rectangle, MPBN Eq. 12
            g = tl.where(tl.abs(x) <= alpha * 0.5, 1.0 / alpha, 0.0)
        elif SURROGATE == 1:  # tanh on s = x / (2 V_th) + 1/2, support [0, 1]
            s = x / (2.0 * v_th) + 0.5
            z = alpha * (s - 0.5)
            e = tl.exp(-2.0 * tl.abs(z))  # tanh via exp: stable for either sign of z
            th = (1.0 - e) / (1.0 + e)
            g = tl.where((s >= 0.0) & (s <= 1.0), (1.0 - th * th) * coef / (2.0 * v_th), 0.0)
        elif SURROGATE == 2:  # linear (triangle)
            g = alpha * tl.maximum(1.0 - tl.abs(x) / v_th, 0.0)
        elif SURROGATE == 3:  # sigmoid
            sig = 1.0 / (1.0 + tl.exp(-alpha * x))
            g = alpha * sig * (1.0 - sig)
        else:  # atan
            y = 1.5707963267948966 * alpha * x
            g = (alpha * 0.5) / (1.0 + y * y)
        return g

    @triton.jit
    def _lif_forward_kernel(
        c_ptr, spikes_ptr, u_pre_ptr, scale_ptr, shift_ptr, v_th_ptr, amount_ptr,
        steps, numel, inner, num_params, decay,
        HARD: tl.constexpr, NORM: tl.constexpr, SAVE: tl.constexpr, BLOCK: tl.constexpr,
    ):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < numel
        # Per-feature parameters: scalar (num_params 1), per channel or per element.
        pidx = (offs // inner) % num_params
        v_th = tl.load(v_th_ptr + pidx, mask=mask, other=1.0)
        amount = tl.load(amount_ptr + pidx, mask=mask, other=0.0)
        if NORM:
            scale = tl.load(scale_ptr + pidx, mask=mask, other=1.0)
            shift = tl.load(shift_ptr + pidx, mask=mask, other=0.0)
        c_ptrs = c_ptr + offs
        o_ptrs = spikes_ptr + offs
        p_ptrs = u_pre_ptr + offs
        u = tl.zeros([BLOCK], dtype=tl.float32)
        for _ in range(steps):
            c = tl.load(c_ptrs, mask=mask, other=0.0).to(tl.float32)
            u_pre = decay * u + c  # Eq. 1 (u = 0 at t = 0, so u_pre[0] = c[0])
            if NORM:
                v = u_pre * scale + shift  # Eq. 7, running statistics
            else:
                v = u_pre
            o = tl.where(v - v_th > 0.0, 1.0, 0.0)  # Eq. 2 / 8
            tl.store(o_ptrs, o.to(spikes_ptr.dtype.element_ty), mask=mask)
            if SAVE:
                tl.store(p_ptrs, u_pre.to(u_pre_ptr.dtype.element_ty), mask=mask)
            if HARD:
                u = u_pre * (1.0 - o)
            else:
                u = u_pre - o * amount
            # Pointer steps are 64-bit, so T * numel may exceed 2**31.
            c_ptrs += numel
            o_ptrs += numel
            p_ptrs += numel

    @triton.jit
    def _lif_backward_kernel(
        grad_ptr, u_pre_ptr, grad_c_ptr, sum_g_ptr, sum_gu_ptr,
        scale_ptr, shift_ptr, v_th_ptr, amount_ptr,
        steps, last_offset, numel, inner, num_params, decay, alpha, coef,
        HARD: tl.constexpr, NORM: tl.constexpr, DETACH: tl.constexpr,
        SURROGATE: tl.constexpr, BLOCK: tl.constexpr,
    ):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < numel
        pidx = (offs // inner) % num_params
        v_th = tl.load(v_th_ptr + pidx, mask=mask, other=1.0)
        amount = tl.load(amount_ptr + pidx, mask=mask, other=0.0)
        if NORM:
            scale = tl.load(scale_ptr + pidx, mask=mask, other=1.0)
            shift = tl.load(shift_ptr + pidx, mask=mask, other=0.0)
        # (T - 1) * numel from the host: 64-bit where needed, and no arithmetic on a
        # specialized constexpr when T = 1.
        g_ptrs = grad_ptr + last_offset + offs
        p_ptrs = u_pre_ptr + last_offset + offs
        d_ptrs = grad_c_ptr + last_offset + offs
        g_u = tl.zeros([BLOCK], dtype=tl.float32)  # dL/du[t], from step t + 1
        acc_g = tl.zeros([BLOCK], dtype=tl.float32)
        acc_gu = tl.zeros([BLOCK], dtype=tl.float32)
        for _ in range(steps):
            u_pre = tl.load(p_ptrs, mask=mask, other=0.0).to(tl.float32)
            g_o = tl.load(g_ptrs, mask=mask, other=0.0).to(tl.float32)
            if NORM:
                v = u_pre * scale + shift
            else:
                v = u_pre
            x = v - v_th
            o = tl.where(x > 0.0, 1.0, 0.0)
            if not DETACH:  # the reset's dependence on the spike
                if HARD:
                    g_o = g_o - g_u * u_pre
                else:
                    g_o = g_o - g_u * amount
            g_v = g_o * _surrogate_grad(x, v_th, alpha, coef, SURROGATE)
            if NORM:
                g_pre = g_v * scale
                acc_g += g_v
                acc_gu += g_v * u_pre
            else:
                g_pre = g_v
            if HARD:
                g_pre += g_u * (1.0 - o)
            else:
                g_pre += g_u
            tl.store(d_ptrs, g_pre.to(grad_c_ptr.dtype.element_ty), mask=mask)
            g_u = decay * g_pre
            g_ptrs -= numel
            p_ptrs -= numel
            d_ptrs -= numel
        if NORM:
            tl.store(sum_g_ptr + offs, acc_g, mask=mask)
            tl.store(sum_gu_ptr + offs, acc_gu, mask=mask)


def _param_layout(step: Tensor, values: list[float | Tensor | None]) -> tuple[int, int]:
    """``(inner, num_params)``: how a flat step index maps to a parameter index."""
    tensors = [v for v in values if isinstance(v, Tensor) and v.numel() > 1]
    if not tensors:
        return 1, 1
    per_element = any(v.dim() >= 2 and v.shape[1:].numel() > 1 for v in tensors)
    if per_element or step.dim() == 1:
        return 1, step[0].numel()
    return step[0, 0].numel(), step.shape[1]


def _param_array(value: float | Tensor | None, step: Tensor, inner: int, num: int,
                 default: float) -> Tensor:
    """A parameter as a contiguous float32 vector of ``num`` entries in the chosen layout."""
    if value is None:
        value = default
    full = torch.as_tensor(value, dtype=torch.float32, device=step.device)
    full = full.expand(step.shape[1:]) if step.dim() > 1 else full.expand(())
    if num == 1:
        return full.reshape(-1)[:1].contiguous()
    if inner == 1:
        return full.reshape(-1).contiguous()
    return full.reshape(num, -1)[:, 0].contiguous()


def _layout_and_params(step, v_th, amount, scale, shift):
    inner, num = _param_layout(step, [v_th, amount, scale, shift])
    arrays = [_param_array(v, step, inner, num, d)
              for v, d in ((scale, 1.0), (shift, 0.0), (v_th, 1.0), (amount, 0.0))]
    return inner, num, arrays


def _eval_affine(norm: bool, weight, bias, mean_eval, invstd_eval):
    """Eval-mode MPBN as ``v = u_pre * scale + shift``, or ``(None, None)`` without MPBN."""
    if not norm:
        return None, None
    scale = weight * invstd_eval
    return scale, bias - mean_eval * scale


def forward(c_seq: Tensor, v_th, amount, weight, bias, mean_eval, invstd_eval, cfg, save: bool):
    """Spikes and ``u_pre`` (``None`` unless ``save``) of the LIF / eval MPBN-LIF over time."""
    c_seq = c_seq.contiguous()
    steps, step = c_seq.shape[0], c_seq[0]
    numel = step.numel()
    norm = cfg.norm == "eval"
    scale, shift = _eval_affine(norm, weight, bias, mean_eval, invstd_eval)
    inner, num, (scale_a, shift_a, v_th_a, amount_a) = _layout_and_params(
        step, v_th, amount, scale, shift)
    spikes = torch.empty_like(c_seq)
    u_pre = torch.empty_like(c_seq) if save else spikes  # unused pointer when not saving
    grid = (triton.cdiv(numel, _BLOCK),)
    _lif_forward_kernel[grid](
        c_seq, spikes, u_pre, scale_a, shift_a, v_th_a, amount_a,
        steps, numel, inner, num, float(cfg.decay),
        HARD=cfg.hard, NORM=norm, SAVE=save, BLOCK=_BLOCK,
    )
    return spikes, (u_pre if save else None)


def backward(grad_spikes: Tensor, u_pre_seq: Tensor, v_th, amount, weight, bias, mean_eval,
             invstd_eval, cfg):
    """``(dL/dc, dL/dlambda, dL/dbeta)``; the last two per step-shape (eval MPBN) or ``None``."""
    steps, step = u_pre_seq.shape[0], u_pre_seq[0]
    numel = step.numel()
    norm = cfg.norm == "eval"
    scale, shift = _eval_affine(norm, weight, bias, mean_eval, invstd_eval)
    inner, num, (scale_a, shift_a, v_th_a, amount_a) = _layout_and_params(
        step, v_th, amount, scale, shift)
    grad_c = torch.empty_like(u_pre_seq)
    sums = torch.empty((2, numel) if norm else (2, 1), dtype=torch.float32, device=step.device)
    alpha = float(cfg.alpha)
    coef = alpha / (2 * math.tanh(alpha / 2))
    grid = (triton.cdiv(numel, _BLOCK),)
    _lif_backward_kernel[grid](
        grad_spikes.contiguous(), u_pre_seq, grad_c, sums[0], sums[1],
        scale_a, shift_a, v_th_a, amount_a,
        steps, (steps - 1) * numel, numel, inner, num, float(cfg.decay), alpha, coef,
        HARD=cfg.hard, NORM=norm, DETACH=cfg.detach_reset,
        SURROGATE=_SURROGATE_IDS[cfg.surrogate], BLOCK=_BLOCK,
    )
    if not norm:
        return grad_c, None, None
    sum_g = sums[0].view(step.shape).to(u_pre_seq.dtype).sum(cfg.reduce_dims, keepdim=True)
    sum_gu = sums[1].view(step.shape).to(u_pre_seq.dtype).sum(cfg.reduce_dims, keepdim=True)
    # dL/dlambda = sum g_v * x_hat = invstd * (sum g_v u_pre - mu * sum g_v), running stats.
    grad_w = invstd_eval * (sum_gu - mean_eval * sum_g)
    return grad_c, grad_w, sum_g


def run_for_test(x_seq: Tensor, grad_out: Tensor, norm, params: list[Tensor], **kwargs):
    """Forward and backward through the Triton kernels on any device (tests, interpreter).

    Returns ``(spikes, grads)`` with the gradients w.r.t. ``x_seq`` and ``params``.
    """
    from mpbn.functional import fused

    kwargs.setdefault("decay", 0.25)
    kwargs.setdefault("v_threshold", 0.5)
    cfg = fused._build_config(
        x_seq, kwargs["decay"], kwargs["v_threshold"], kwargs.get("reset", "hard"),
        kwargs.get("surrogate", "rectangle"), kwargs.get("alpha"), kwargs.get("reset_amount"),
        kwargs.get("detach_reset", False), norm, "triton",
    )
    amount = kwargs.get("reset_amount")
    amount = kwargs["v_threshold"] if amount is None else amount
    weight = norm.weight if norm is not None else None
    bias = norm.bias if norm is not None else None
    out = fused.FusedLIF.apply(x_seq.contiguous(), weight, bias, kwargs["v_threshold"], amount,
                               norm, cfg, "triton")
    grads = torch.autograd.grad(out, [x_seq, *params], grad_out)
    return out.detach(), grads
