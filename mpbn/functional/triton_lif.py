"""Triton kernels for the fused LIF / MPBN-LIF, forward and BPTT backward.

**Plain LIF and eval-mode MPBN-LIF**, where the normalization is a per-feature affine map
``v = scale * u_pre + shift`` (MPBN Eq. 7 with running statistics, the form of Eq. 9): one
launch per direction, ``T`` walked inside. Each program owns ``BLOCK`` neurons and keeps their
membrane in registers across time steps:

- forward reads ``c[t]``, writes ``o[t]`` and (for backward) ``u_pre[t]``: 12 B per float32
  element-step;
- backward reads ``dL/do[t]`` and ``u_pre[t]``, writes ``dL/dc[t]``: 12 B per element-step,
  recomputing spikes and the surrogate from ``u_pre`` (exact: the same ``v - V_th > 0``). With
  MPBN it also accumulates ``sum_t g_v`` and ``sum_t g_v * u_pre`` per neuron (8 B per element,
  once), which torch reduces into ``dL/dbeta`` and ``dL/dlambda``.

**Training-mode MPBN-LIF** normalizes step ``t`` with the batch statistics of ``u_pre[t]``, a
reduction over the whole batch between every two steps, which one launch cannot wait for.
So there is one launch per step boundary (``T + 1`` per direction), each finishing one step
and starting the next:

- forward launch ``k`` combines the per-tile moments of ``u_pre[k-1]`` (Welford per lane,
  Chan's formula across tiles), normalizes, fires and resets step ``k - 1``, then integrates
  ``u_pre[k]`` and writes its partial moments: 16 B per element-step (read ``u_pre[k-1]`` and
  ``c[k]``, write ``o[k-1]`` and ``u_pre[k]``). The per-step ``scale``/``shift`` it used are
  kept (``[2, T, G]``) so that backward recomputes exactly the same spikes;
- backward launch ``k`` finishes step ``k`` (BN's input gradient needs the batch sums of
  ``g_v`` and ``g_v * x_hat``, written by the previous launch) and begins step ``k - 1``
  (its ``g_v`` and partial sums): 24 B per element-step.

A step is viewed as ``[B, G, I]`` (channel-wise: ``G = C``, ``I = H * W``; element-wise:
``G = C * H * W``, ``I = 1``) and a program owns a ``[BG, BI]`` tile for a chunk of batch rows.

The recurrence is that of :mod:`mpbn.functional.lif_recurrence` (the math: the docstring of
:mod:`mpbn.functional.fused`). Uses only
``tl.load/store/where/exp/sum`` and runtime-bounded ``range`` loops, available in Triton 3.x.
Tested against the torch code on CPU tensors with ``TRITON_INTERPRET=1``; not yet timed on a
GPU (none was lent to the sessions that wrote them).
"""

from __future__ import annotations

import functools
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

__all__ = ["SURROGATE_IDS", "available", "forward", "backward", "forward_train",
           "backward_train"]

#: The surrogates the kernels compute, by their branch in ``_surrogate_grad``: exactly the names
#: of :data:`mpbn.functional.surrogate.REGISTRY` (a test fails naming one that is missing; until
#: it is added, a neuron with it runs the torch code).
SURROGATE_IDS = {"rectangle": 0, "tanh": 1, "linear": 2, "sigmoid": 3, "atan": 4}
_BLOCK = 1024
_MIN_PROGRAMS = 256  # training-mode MPBN: split the batch until a step has about this many


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
    def _neuron_params(v_th_ptr, amount_ptr, offs, inner, num_params, mask):
        """``(V_th, reset amount)`` of each neuron: one value, per channel or per element."""
        pidx = (offs // inner) % num_params
        v_th = tl.load(v_th_ptr + pidx, mask=mask, other=1.0)
        amount = tl.load(amount_ptr + pidx, mask=mask, other=0.0)
        return pidx, v_th, amount

    @triton.jit
    def _reset(u_pre, o, amount, HARD: tl.constexpr):
        """The potential after the spike test: ``u_pre * (1 - o)`` hard, ``u_pre - o * amount``
        soft."""
        if HARD:
            u = u_pre * (1.0 - o)
        else:
            u = u_pre - o * amount
        return u

    @triton.jit
    def _grad_spike(g_o, g_u, u_pre, amount, HARD: tl.constexpr, DETACH: tl.constexpr):
        """``dL/do = grad + g_u * du/do`` with ``du/do = -u_pre`` (hard) or ``-amount`` (soft);
        ``detach_reset`` drops the term (Eq. 11)."""
        if not DETACH:
            if HARD:
                g_o = g_o - g_u * u_pre
            else:
                g_o = g_o - g_u * amount
        return g_o

    @triton.jit
    def _grad_through_reset(g_u, o, HARD: tl.constexpr):
        """``g_u * du/du_pre``: ``1 - o`` after a hard reset, 1 after a soft one."""
        if HARD:
            g = g_u * (1.0 - o)
        else:
            g = g_u
        return g

    @triton.jit
    def _lif_forward_kernel(
        c_ptr, spikes_ptr, u_pre_ptr, scale_ptr, shift_ptr, v_th_ptr, amount_ptr,
        steps, numel, inner, num_params, decay,
        HARD: tl.constexpr, NORM: tl.constexpr, SAVE: tl.constexpr, BLOCK: tl.constexpr,
    ):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < numel
        pidx, v_th, amount = _neuron_params(v_th_ptr, amount_ptr, offs, inner, num_params, mask)
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
            u = _reset(u_pre, o, amount, HARD)
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
        pidx, v_th, amount = _neuron_params(v_th_ptr, amount_ptr, offs, inner, num_params, mask)
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
            g_o = _grad_spike(g_o, g_u, u_pre, amount, HARD, DETACH)
            g_v = g_o * _surrogate_grad(x, v_th, alpha, coef, SURROGATE)
            if NORM:
                g_pre = g_v * scale
                acc_g += g_v
                acc_gu += g_v * u_pre
            else:
                g_pre = g_v
            g_pre += _grad_through_reset(g_u, o, HARD)
            tl.store(d_ptrs, g_pre.to(grad_c_ptr.dtype.element_ty), mask=mask)
            g_u = decay * g_pre
            g_ptrs -= numel
            p_ptrs -= numel
            d_ptrs -= numel
        if NORM:
            tl.store(sum_g_ptr + offs, acc_g, mask=mask)
            tl.store(sum_gu_ptr + offs, acc_gu, mask=mask)


    @triton.jit
    def _affine_fire(u_pre, scale, shift, v_th):
        """``(x, o)``: ``x = v - V_th`` with ``v = scale * u_pre + shift`` (Eq. 7) and the spike.

        One helper for every kernel, so that backward recomputes exactly the forward's spikes.
        """
        x = (u_pre * scale + shift) - v_th
        return x, tl.where(x > 0.0, 1.0, 0.0)

    @triton.jit
    def _step_offsets(b, g_idx, i_idx, G, I):
        """Offsets of a ``[BG, BI]`` tile of one step viewed as ``[B, G, I]``, at batch ``b``."""
        return b.to(tl.int64) * G * I + g_idx * I + i_idx

    @triton.jit
    def _tile(G, I, b_chunk, BG: tl.constexpr, BI: tl.constexpr):
        """This program's tile of a step viewed as ``[B, G, I]`` (grid: g blocks, i blocks,
        batch chunks): ``[BG, 1]`` feature and ``[1, BI]`` position indices with their masks,
        the first batch row, the ``[BG]`` feature rows its per-feature results go to, its index
        among the feature's partials, and whether it writes the per-step statistics."""
        pid_g = tl.program_id(0)
        pid_i = tl.program_id(1)
        pid_b = tl.program_id(2)
        g_idx = pid_g * BG + tl.arange(0, BG)[:, None]
        i_idx = pid_i * BI + tl.arange(0, BI)[None, :]
        g_mask = g_idx < G
        tile_mask = g_mask & (i_idx < I)
        g_row = pid_g * BG + tl.arange(0, BG)
        k_tile = pid_b * tl.num_programs(1) + pid_i
        return (g_idx, i_idx, g_mask, tile_mask, pid_b * b_chunk, g_row, g_row < G, k_tile,
                (pid_i == 0) & (pid_b == 0))

    @triton.jit
    def _combine_moments(mean_ptr, m2_ptr, cnt_ptr, g_idx, g_mask, G, n_tiles):
        """Mean and sum of squared deviations per feature from the per-tile partials (Chan)."""
        total = tl.zeros(g_idx.shape, dtype=tl.float32)
        weighted = tl.zeros(g_idx.shape, dtype=tl.float32)
        for k in range(n_tiles):
            n_k = tl.load(cnt_ptr + k * G + g_idx, mask=g_mask, other=0.0)
            total += n_k
            weighted += n_k * tl.load(mean_ptr + k * G + g_idx, mask=g_mask, other=0.0)
        mean = weighted / tl.maximum(total, 1.0)
        m2 = tl.zeros(g_idx.shape, dtype=tl.float32)
        for k in range(n_tiles):
            n_k = tl.load(cnt_ptr + k * G + g_idx, mask=g_mask, other=0.0)
            d = tl.load(mean_ptr + k * G + g_idx, mask=g_mask, other=0.0) - mean
            m2 += tl.load(m2_ptr + k * G + g_idx, mask=g_mask, other=0.0) + n_k * d * d
        return mean, m2, total

    @triton.jit
    def _mpbn_train_forward_kernel(
        c_ptr, u_pre_prev_ptr, u_pre_ptr, spikes_prev_ptr,
        w_ptr, b_ptr, v_th_ptr, amount_ptr,
        in_mean_ptr, in_m2_ptr, in_cnt_ptr, out_mean_ptr, out_m2_ptr, out_cnt_ptr,
        stat_mean_ptr, stat_var_ptr, scale_out_ptr, shift_out_ptr,
        B, G, I, b_chunk, n_tiles, inner, num_params, decay, eps,
        FIRE: tl.constexpr, INTEGRATE: tl.constexpr, HARD: tl.constexpr,
        BG: tl.constexpr, BI: tl.constexpr,
    ):
        """One launch per step boundary: fire step ``s = k - 1``, then integrate step ``k``.

        FIRE combines the partial moments of ``u_pre[s]`` (written by the previous launch) into
        the batch statistics, normalizes (Eq. 7), fires (Eq. 8), resets; INTEGRATE computes
        ``u_pre[k] = decay * u[s] + c[k]`` (Eq. 1), stores it and writes this tile's partial
        moments (a Welford pass over its batch rows). Moves 16 B per element and step.
        """
        g_idx, i_idx, g_mask, tile_mask, b0, g_row, row_mask, k_tile, first = _tile(
            G, I, b_chunk, BG, BI)
        if FIRE:
            mean, m2, total = _combine_moments(in_mean_ptr, in_m2_ptr, in_cnt_ptr, g_idx, g_mask,
                                               G, n_tiles)
            var = m2 / tl.maximum(total, 1.0)  # biased: what BN normalizes with
            invstd = 1.0 / tl.sqrt(var + eps)
            scale = tl.load(w_ptr + g_idx, mask=g_mask, other=1.0).to(tl.float32) * invstd
            shift = tl.load(b_ptr + g_idx, mask=g_mask, other=0.0).to(tl.float32) - mean * scale
            if first:  # one program per feature block writes them
                # ([BG, 1] -> [BG] by summing the single column)
                tl.store(stat_mean_ptr + g_row, tl.sum(mean, axis=1), mask=row_mask)
                tl.store(stat_var_ptr + g_row, tl.sum(m2 / tl.maximum(total - 1.0, 1.0), axis=1),
                         mask=row_mask)
                tl.store(scale_out_ptr + g_row, tl.sum(scale, axis=1), mask=row_mask)
                tl.store(shift_out_ptr + g_row, tl.sum(shift, axis=1), mask=row_mask)
        w_mean = tl.zeros([BG, BI], dtype=tl.float32)
        w_m2 = tl.zeros([BG, BI], dtype=tl.float32)
        n_rows = tl.minimum(B - b0, b_chunk)
        for j in range(b_chunk):
            b = b0 + j
            # (b < B as a tensor: the interpreter's bool tensor & bool scalar gives int)
            mask = tile_mask & ((i_idx * 0 + b) < B)
            offs = _step_offsets(b, g_idx, i_idx, G, I)
            u = tl.zeros([BG, BI], dtype=tl.float32)
            if FIRE:
                _, v_th, amount = _neuron_params(v_th_ptr, amount_ptr, offs, inner, num_params,
                                                 mask)
                u_prev = tl.load(u_pre_prev_ptr + offs, mask=mask, other=0.0).to(tl.float32)
                x, o = _affine_fire(u_prev, scale, shift, v_th)
                tl.store(spikes_prev_ptr + offs, o.to(spikes_prev_ptr.dtype.element_ty),
                         mask=mask)
                u = _reset(u_prev, o, amount, HARD)
            if INTEGRATE:
                c = tl.load(c_ptr + offs, mask=mask, other=0.0).to(tl.float32)
                u_pre = decay * u + c
                tl.store(u_pre_ptr + offs, u_pre.to(u_pre_ptr.dtype.element_ty), mask=mask)
                # Welford per lane over this tile's batch rows (numerically safe for any mean).
                count = j + 1.0
                delta = u_pre - w_mean
                new_mean = w_mean + delta / count
                new_m2 = w_m2 + delta * (u_pre - new_mean)
                w_mean = tl.where(mask, new_mean, w_mean)
                w_m2 = tl.where(mask, new_m2, w_m2)
        if INTEGRATE:
            # The tile's lanes (same row count each) into one mean / M2 per feature.
            lanes = tl.maximum(tl.sum(tl.where(tile_mask, 1.0, 0.0), axis=1), 1.0)  # [BG]
            rows = n_rows.to(tl.float32)
            t_mean = tl.sum(tl.where(tile_mask, w_mean, 0.0), axis=1) / lanes
            d = w_mean - t_mean[:, None]
            t_m2 = tl.sum(tl.where(tile_mask, w_m2 + rows * d * d, 0.0), axis=1)
            tl.store(out_mean_ptr + k_tile * G + g_row, t_mean, mask=row_mask)
            tl.store(out_m2_ptr + k_tile * G + g_row, t_m2, mask=row_mask)
            tl.store(out_cnt_ptr + k_tile * G + g_row, rows * lanes, mask=row_mask)

    @triton.jit
    def _mpbn_train_backward_kernel(
        grad_ptr, grad_prev_ptr, u_pre_ptr, u_pre_prev_ptr, grad_c_ptr, grad_c_next_ptr,
        scale_ptr, shift_ptr, scale_prev_ptr, shift_prev_ptr, mean_ptr, invstd_ptr,
        mean_prev_ptr, v_th_ptr, amount_ptr,
        in_g_ptr, in_gx_ptr, out_g_ptr, out_gx_ptr, sum_g_out_ptr, sum_gx_out_ptr,
        B, G, I, b_chunk, n_tiles, inner, num_params, decay, alpha, coef, count,
        FINISH: tl.constexpr, BEGIN: tl.constexpr, HAS_NEXT: tl.constexpr, HARD: tl.constexpr,
        DETACH: tl.constexpr, SURROGATE: tl.constexpr, BG: tl.constexpr, BI: tl.constexpr,
    ):
        """One launch per step boundary of BPTT: finish step ``s = k``, then begin ``s - 1``.

        BEGIN computes ``g_v`` of a step (surrogate of Eq. 12 times dL/do, with the reset's
        term from the later step) and this tile's partial sums of ``g_v`` and
        ``g_v * (u_pre - mu)``; FINISH combines them and applies BN's input gradient,
        ``g_pre = scale * (g_v - mean(g_v) - x_hat * mean(g_v * x_hat)) + g_u * du/du_pre``,
        recomputing ``g_v`` from ``u_pre`` and the stored gradient of the later step.
        """
        g_idx, i_idx, g_mask, tile_mask, b0, g_row, row_mask, k_tile, first = _tile(
            G, I, b_chunk, BG, BI)
        if FINISH:
            scale = tl.load(scale_ptr + g_idx, mask=g_mask, other=0.0)
            shift = tl.load(shift_ptr + g_idx, mask=g_mask, other=0.0)
            mean = tl.load(mean_ptr + g_idx, mask=g_mask, other=0.0)
            invstd = tl.load(invstd_ptr + g_idx, mask=g_mask, other=0.0)
            sum_g = tl.zeros([BG, 1], dtype=tl.float32)
            sum_gxc = tl.zeros([BG, 1], dtype=tl.float32)
            for k in range(n_tiles):
                sum_g += tl.load(in_g_ptr + k * G + g_idx, mask=g_mask, other=0.0)
                sum_gxc += tl.load(in_gx_ptr + k * G + g_idx, mask=g_mask, other=0.0)
            sum_gx = invstd * sum_gxc  # sum g_v * x_hat
            k1 = scale * invstd * sum_gx / count
            k0 = k1 * mean - scale * sum_g / count
            if first:
                tl.store(sum_g_out_ptr + g_row, tl.sum(sum_g, axis=1), mask=row_mask)
                tl.store(sum_gx_out_ptr + g_row, tl.sum(sum_gx, axis=1), mask=row_mask)
        if BEGIN:
            scale_p = tl.load(scale_prev_ptr + g_idx, mask=g_mask, other=0.0)
            shift_p = tl.load(shift_prev_ptr + g_idx, mask=g_mask, other=0.0)
            mean_p = tl.load(mean_prev_ptr + g_idx, mask=g_mask, other=0.0)
        acc_g = tl.zeros([BG, BI], dtype=tl.float32)
        acc_gx = tl.zeros([BG, BI], dtype=tl.float32)
        for j in range(b_chunk):
            b = b0 + j
            # (b < B as a tensor: the interpreter's bool tensor & bool scalar gives int)
            mask = tile_mask & ((i_idx * 0 + b) < B)
            offs = _step_offsets(b, g_idx, i_idx, G, I)
            _, v_th, amount = _neuron_params(v_th_ptr, amount_ptr, offs, inner, num_params,
                                             mask)
            g_pre = tl.zeros([BG, BI], dtype=tl.float32)
            if FINISH:
                u_pre = tl.load(u_pre_ptr + offs, mask=mask, other=0.0).to(tl.float32)
                g_o = tl.load(grad_ptr + offs, mask=mask, other=0.0).to(tl.float32)
                x, o = _affine_fire(u_pre, scale, shift, v_th)
                g_u = tl.zeros([BG, BI], dtype=tl.float32)
                if HAS_NEXT:  # dL/du[s] = decay * dL/du_pre[s + 1]
                    g_u = decay * tl.load(grad_c_next_ptr + offs, mask=mask,
                                          other=0.0).to(tl.float32)
                    g_o = _grad_spike(g_o, g_u, u_pre, amount, HARD, DETACH)
                g_v = g_o * _surrogate_grad(x, v_th, alpha, coef, SURROGATE)
                g_pre = g_v * scale - u_pre * k1 + k0 + _grad_through_reset(g_u, o, HARD)
                tl.store(grad_c_ptr + offs, g_pre.to(grad_c_ptr.dtype.element_ty), mask=mask)
            if BEGIN:
                u_p = tl.load(u_pre_prev_ptr + offs, mask=mask, other=0.0).to(tl.float32)
                g_op = tl.load(grad_prev_ptr + offs, mask=mask, other=0.0).to(tl.float32)
                x_p, o_p = _affine_fire(u_p, scale_p, shift_p, v_th)
                if FINISH:
                    g_op = _grad_spike(g_op, decay * g_pre, u_p, amount, HARD, DETACH)
                g_vp = g_op * _surrogate_grad(x_p, v_th, alpha, coef, SURROGATE)
                acc_g += tl.where(mask, g_vp, 0.0)
                acc_gx += tl.where(mask, g_vp * (u_p - mean_p), 0.0)
        if BEGIN:
            tl.store(out_g_ptr + k_tile * G + g_row, tl.sum(acc_g, axis=1), mask=row_mask)
            tl.store(out_gx_ptr + k_tile * G + g_row, tl.sum(acc_gx, axis=1), mask=row_mask)


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
    if not isinstance(value, Tensor):
        # Filled on the device: torch.as_tensor of a Python float copies it from the host, and
        # on CUDA that copy waits for the stream, a host stall per parameter and call.
        return torch.full((num,), float(value), dtype=torch.float32, device=step.device)
    full = value.to(dtype=torch.float32, device=step.device)
    full = full.expand(step.shape[1:]) if step.dim() > 1 else full.expand(())
    if num == 1:
        return full.reshape(-1)[:1].contiguous()
    if inner == 1:
        return full.reshape(-1).contiguous()
    return full.reshape(num, -1)[:, 0].contiguous()


def _layout_and_params(step, v_threshold, reset_amount, scale=None, shift=None, *,
                       affine: bool = True):
    """``(inner, num, arrays)``: the layout and ``[scale, shift,] V_th, reset amount`` arrays.

    The training kernels normalize with their own statistics and take no ``scale``/``shift``
    (``affine=False``: those two are not built).
    """
    inner, num = _param_layout(step, [v_threshold, reset_amount, scale, shift])
    pairs = ((scale, 1.0), (shift, 0.0)) if affine else ()
    pairs += ((v_threshold, 1.0), (reset_amount, 0.0))
    return inner, num, [_param_array(v, step, inner, num, d) for v, d in pairs]


def _eval_affine(norm: bool, weight, bias, mean_eval, invstd_eval):
    """Eval-mode MPBN as ``v = u_pre * scale + shift``, or ``(None, None)`` without MPBN."""
    if not norm:
        return None, None
    scale = weight * invstd_eval
    return scale, bias - mean_eval * scale


def _on_input_device(launcher):
    """Run ``launcher`` with the CUDA device of its first (tensor) argument current.

    Triton launches on the *current* CUDA device and its current stream, not on the device the
    pointers belong to: without this a model on ``cuda:1`` while ``cuda:0`` is current would
    have its kernels read another GPU's addresses.
    """
    @functools.wraps(launcher)
    def on_device(x: Tensor, *args, **kwargs):
        if not x.is_cuda:  # CPU tensors under TRITON_INTERPRET=1
            return launcher(x, *args, **kwargs)
        with torch.cuda.device(x.device):
            return launcher(x, *args, **kwargs)
    return on_device


@_on_input_device
def forward(c_seq: Tensor, v_threshold, reset_amount, weight, bias, mean_eval, invstd_eval, cfg,
            save: bool):
    """Spikes and ``u_pre`` (``None`` unless ``save``) of the LIF / eval MPBN-LIF over time."""
    c_seq = c_seq.contiguous()
    steps, step = c_seq.shape[0], c_seq[0]
    numel = step.numel()
    norm = cfg.norm == "eval"
    scale, shift = _eval_affine(norm, weight, bias, mean_eval, invstd_eval)
    inner, num, (scale_a, shift_a, v_th_a, amount_a) = _layout_and_params(
        step, v_threshold, reset_amount, scale, shift)
    spikes = torch.empty_like(c_seq)
    u_pre = torch.empty_like(c_seq) if save else spikes  # unused pointer when not saving
    grid = (triton.cdiv(numel, _BLOCK),)
    _lif_forward_kernel[grid](
        c_seq, spikes, u_pre, scale_a, shift_a, v_th_a, amount_a,
        steps, numel, inner, num, float(cfg.decay),
        HARD=cfg.hard, NORM=norm, SAVE=save, BLOCK=_BLOCK,
    )
    return spikes, (u_pre if save else None)


@_on_input_device
def backward(grad_spikes: Tensor, u_pre_seq: Tensor, v_threshold, reset_amount, weight, bias,
             mean_eval, invstd_eval, cfg):
    """``(dL/dc, dL/dlambda, dL/dbeta)``; the last two per step-shape (eval MPBN) or ``None``."""
    steps, step = u_pre_seq.shape[0], u_pre_seq[0]
    numel = step.numel()
    norm = cfg.norm == "eval"
    scale, shift = _eval_affine(norm, weight, bias, mean_eval, invstd_eval)
    inner, num, (scale_a, shift_a, v_th_a, amount_a) = _layout_and_params(
        step, v_threshold, reset_amount, scale, shift)
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
        SURROGATE=SURROGATE_IDS[cfg.surrogate], BLOCK=_BLOCK,
    )
    if not norm:
        return grad_c, None, None
    sum_g = sums[0].view(step.shape).to(u_pre_seq.dtype).sum(cfg.reduce_dims, keepdim=True)
    sum_gu = sums[1].view(step.shape).to(u_pre_seq.dtype).sum(cfg.reduce_dims, keepdim=True)
    # dL/dlambda = sum g_v * x_hat = invstd * (sum g_v u_pre - mu * sum g_v), running stats.
    grad_w = invstd_eval * (sum_gu - mean_eval * sum_g)
    return grad_c, grad_w, sum_g


def _train_layout(step: Tensor, channel: bool) -> tuple[int, int, int]:
    """``(B, G, I)``: one step viewed as ``[B, G, I]``, MPBN statistics per ``g`` over (B, I)."""
    if channel:
        return step.shape[0], step.shape[1], step[0, 0].numel()
    return step.shape[0], step[0].numel(), 1


def _train_tiling(batch: int, groups: int, inner: int) -> tuple[int, int, tuple, int, int]:
    """``(BG, BI, grid, b_chunk, n_tiles)`` for the training-mode MPBN kernels.

    A program owns a ``[BG, BI]`` tile of (feature, position) for a chunk of batch rows; the
    batch is split until there are about ``_MIN_PROGRAMS`` programs (a small step would else run
    on a few of a GPU's SMs). Each (batch chunk, position block) writes one partial per feature.
    """
    bi = min(triton.next_power_of_2(inner), _BLOCK)
    bg = min(max(_BLOCK // bi, 1), triton.next_power_of_2(groups))
    n_g, n_i = triton.cdiv(groups, bg), triton.cdiv(inner, bi)
    n_b = min(batch, max(1, triton.cdiv(_MIN_PROGRAMS, n_g * n_i)))
    b_chunk = triton.cdiv(batch, n_b)
    n_b = triton.cdiv(batch, b_chunk)
    return bg, bi, (n_g, n_i, n_b), b_chunk, n_b * n_i


@_on_input_device
def forward_train(c_seq: Tensor, v_threshold, reset_amount, weight: Tensor, bias: Tensor, cfg,
                  save: bool = True):
    """Training-mode MPBN-LIF forward: ``(spikes, u_pre, means, variances, affine)``.

    ``means``/``variances`` (unbiased, for the running estimates) are ``[T, G]``; ``affine`` is
    ``[2, T, G]``, the ``scale``/``shift`` each step normalized with, which backward reuses so
    that it recomputes exactly the spikes of the forward. ``T + 1`` launches (see the kernel).
    Without ``save`` (no gradient wanted) ``u_pre`` is ``None`` and the launches pass it through
    two alternating step buffers instead of ``[T, ...]``.
    """
    c_seq = c_seq.contiguous()
    steps, step = c_seq.shape[0], c_seq[0]
    batch, groups, inner_size = _train_layout(step, cfg.channel)
    bg, bi, grid, b_chunk, n_tiles = _train_tiling(batch, groups, inner_size)
    inner, num, (v_th_a, amount_a) = _layout_and_params(step, v_threshold, reset_amount,
                                                        affine=False)
    f32 = dict(dtype=torch.float32, device=c_seq.device)
    spikes = torch.empty_like(c_seq)
    # Launch k reads u_pre[k - 1] and writes u_pre[k]: two slots carry it when none is kept.
    u_pre = torch.empty_like(c_seq) if save else torch.empty((2, *step.shape), dtype=step.dtype,
                                                            device=step.device)
    slot = (lambda t: t) if save else (lambda t: t % 2)
    partials = torch.empty((2, 3, n_tiles, groups), **f32)  # (mean, M2, count) per tile
    stats = torch.empty((4, steps, groups), **f32)  # mean, unbiased var, scale, shift
    w = weight.reshape(-1).contiguous()
    b = bias.reshape(-1).contiguous()
    last = steps - 1
    for k in range(steps + 1):
        s = max(k - 1, 0)  # the step this launch fires
        cur, prev = partials[k % 2], partials[(k + 1) % 2]
        _mpbn_train_forward_kernel[grid](
            c_seq[min(k, last)], u_pre[slot(s)], u_pre[slot(min(k, last))], spikes[s],
            w, b, v_th_a, amount_a,
            prev[0], prev[1], prev[2], cur[0], cur[1], cur[2],
            stats[0, s], stats[1, s], stats[2, s], stats[3, s],
            batch, groups, inner_size, b_chunk, n_tiles, inner, num,
            float(cfg.decay), float(cfg.eps),
            FIRE=k >= 1, INTEGRATE=k < steps, HARD=cfg.hard, BG=bg, BI=bi,
        )
    return spikes, u_pre if save else None, stats[0], stats[1], stats[2:]


@_on_input_device
def backward_train(grad_spikes: Tensor, u_pre_seq: Tensor, v_threshold, reset_amount, means: Tensor,
                   invstds: Tensor, affine: Tensor, cfg):
    """``(dL/dc, dL/dlambda, dL/dbeta)`` of the training-mode MPBN-LIF; the last two ``[G]``."""
    steps, step = u_pre_seq.shape[0], u_pre_seq[0]
    batch, groups, inner_size = _train_layout(step, cfg.channel)
    bg, bi, grid, b_chunk, n_tiles = _train_tiling(batch, groups, inner_size)
    inner, num, (v_th_a, amount_a) = _layout_and_params(step, v_threshold, reset_amount,
                                                        affine=False)
    f32 = dict(dtype=torch.float32, device=step.device)
    mean = means.reshape(steps, groups).to(torch.float32).contiguous()
    invstd = invstds.reshape(steps, groups).to(torch.float32).contiguous()
    scale, shift = affine[0], affine[1]
    grad_spikes = grad_spikes.contiguous()
    grad_c = torch.empty_like(u_pre_seq)
    partials = torch.empty((2, 2, n_tiles, groups), **f32)  # sum g_v, sum g_v (u_pre - mu)
    sums = torch.empty((2, steps, groups), **f32)  # per step: sum g_v, sum g_v * x_hat
    alpha = float(cfg.alpha)
    coef = alpha / (2 * math.tanh(alpha / 2))
    last = steps - 1
    for k in range(steps, -1, -1):
        s, p = min(k, last), max(k - 1, 0)  # finish step s, begin step p = k - 1
        cur, prev = partials[k % 2], partials[(k + 1) % 2]
        _mpbn_train_backward_kernel[grid](
            grad_spikes[s], grad_spikes[p], u_pre_seq[s], u_pre_seq[p], grad_c[s],
            grad_c[min(k + 1, last)],
            scale[s], shift[s], scale[p], shift[p], mean[s], invstd[s], mean[p],
            v_th_a, amount_a,
            prev[0], prev[1], cur[0], cur[1], sums[0, s], sums[1, s],
            batch, groups, inner_size, b_chunk, n_tiles, inner, num,
            float(cfg.decay), alpha, coef, float(batch * inner_size),
            FINISH=k < steps, BEGIN=k >= 1, HAS_NEXT=k + 1 < steps, HARD=cfg.hard,
            DETACH=cfg.detach_reset, SURROGATE=SURROGATE_IDS[cfg.surrogate], BG=bg, BI=bi,
        )
    return grad_c, sums[1].sum(0), sums[0].sum(0)
