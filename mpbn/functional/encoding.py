"""Spike encoders: a static batch ``[B, ...]`` to a time-first sequence ``[T, B, ...]``.

Pure tensor functions with no state, so models (``encoding="poisson"``), analysis (seeded
re-encoding) and data pipelines share one copy. :mod:`mpbn.data.encoders` re-exports them.
"""

from __future__ import annotations

import math

import torch

__all__ = ["direct_encode", "poisson_encode"]


def _check_timesteps(timesteps: int) -> None:
    if not isinstance(timesteps, int) or timesteps < 1:
        raise ValueError(f"timesteps must be a positive int, got {timesteps!r}")


def direct_encode(x: torch.Tensor, timesteps: int) -> torch.Tensor:
    """Repeat the analog input at every time step (direct / "real-valued" coding).

    The MPBN paper feeds the image to a first convolution at every step (Sec. 5); this is that
    input: ``s[t] = x`` for ``t = 1..T``.

    Args:
        x: Input batch ``[B, ...]``.
        timesteps: Number of time steps ``T``.

    Returns:
        A ``[T, B, ...]`` expanded view of ``x``: no memory is copied, so do not write into it.
    """
    _check_timesteps(timesteps)
    return x.unsqueeze(0).expand(timesteps, *x.shape)


def poisson_encode(
    x: torch.Tensor,
    timesteps: int,
    generator: torch.Generator | None = None,
    *,
    rate_scale: float = 1.0,
) -> torch.Tensor:
    """Rate-code the input with signed Bernoulli spikes at every step (Poisson rate coding).

    At each step ``t`` and element ``i``::

        s[t, i] = sign(x[i]) * 1[u[t, i] <= p[i]],   p = clamp(rate_scale * |x|, 0, 1),
        u ~ U[0, 1)

    so the firing probability per step is ``p`` and spikes carry the sign of ``x``. BNTT
    (Kim & Panda 2021, Sec. 3.5) only says the generator produces "a Poisson spike train [...]
    for each pixel in the image with frequency proportional to the pixel intensity"; the
    constant of proportionality is a choice:

    * ``rate_scale=1.0`` (default): ``p = clamp(|x|, 0, 1)``, the plain Bernoulli rate code
      (rate = intensity for intensities in ``[0, 1]``), and this library's behaviour since its
      first release (the golden outputs are recorded with it).
    * ``rate_scale=0.5``: the BNTT authors' public code, ``PoissonGen(inp, rescale_fac=2.0)``
      (``model.py`` lines 27-29 of their repository at commit ``bdf5250``), which fires when
      ``rand * 2.0 <= |x|``, i.e. ``p = clamp(|x| / 2, 0, 1)``. Their inputs are CIFAR images
      standardized with ``Normalize(mean, (0.2023, 0.1994, 0.2010))`` (``train.py``), so
      ``|x|`` reaches about 2.75; the factor 1/2 maps ``|x| <= 2`` onto rates up to 1. Pass it
      to reproduce their code exactly (same uniform draw, same spikes).

    Args:
        x: Input batch ``[B, ...]``.
        timesteps: Number of time steps ``T``.
        generator: Optional generator on ``x.device`` for reproducible spikes.
        rate_scale: Firing probability per unit of ``|x|`` (before clamping to 1); positive.

    Returns:
        Float tensor ``[T, B, ...]`` with values in ``{-1, 0, 1}`` and the dtype of ``x``
        (float32 for integer inputs). When ``x`` requires a gradient, backward passes the
        derivative of the firing expectation ``E[s] = clamp(rate_scale * x, -1, 1)``:
        ``rate_scale`` where ``rate_scale * |x| <= 1``, else 0.

    Raises:
        ValueError: ``timesteps`` is not a positive int, or ``rate_scale`` is not a positive
            finite number.
    """
    _check_timesteps(timesteps)
    if not (isinstance(rate_scale, (int, float)) and math.isfinite(rate_scale) and rate_scale > 0):
        raise ValueError(f"rate_scale must be a positive finite number, got {rate_scale!r}")
    dtype = x.dtype if x.is_floating_point() else torch.float32
    x = x.to(dtype)
    # Multiplying by exactly 1.0 is the identity in floating point, so the default path draws
    # and compares exactly as before the option existed.
    scaled = x * rate_scale if rate_scale != 1.0 else x
    rate = scaled.abs().clamp_(0.0, 1.0)
    noise = torch.rand((timesteps, *x.shape), generator=generator, device=x.device, dtype=dtype)
    # A rate of exactly 0 must never fire, even when the uniform draw is 0.
    fired = (noise < rate) | ((noise == rate) & (rate > 0))
    spikes = fired.to(dtype) * torch.sign(x)
    if x.requires_grad:
        # Straight-through gradient of the expected spike, so attacks crafted through the SNN
        # (Sharmin et al. 2020 FGSM) reach the pixels; the forward value is unchanged
        # (e - e.detach() is exactly 0).
        expected = scaled.clamp(-1.0, 1.0)
        spikes = spikes + (expected - expected.detach())
    return spikes
