"""Encoders that turn a static batch ``[B, ...]`` into a time-first sequence ``[T, B, ...]``."""

from __future__ import annotations

import torch


def _check_timesteps(timesteps: int) -> None:
    if not isinstance(timesteps, int) or timesteps < 1:
        raise ValueError(f"timesteps must be a positive int, got {timesteps!r}")


def direct_encode(x: torch.Tensor, timesteps: int) -> torch.Tensor:
    """Repeat the analog input at every time step (direct / "real-valued" coding).

    The MPBN paper feeds the image to a first convolution at every step; this is that input.

    Args:
        x: Input batch ``[B, ...]``.
        timesteps: Number of time steps ``T``.

    Returns:
        A ``[T, B, ...]`` expanded view of ``x``: no memory is copied, so do not write into it.
    """
    _check_timesteps(timesteps)
    return x.unsqueeze(0).expand(timesteps, *x.shape)


def poisson_encode(
    x: torch.Tensor, timesteps: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Rate-code the input with Bernoulli spikes at every step (BNTT's Poisson generator).

    At each step ``t`` and element ``i``: ``s[t, i] = sign(x[i]) * 1[u[t, i] <= |x[i]|]`` with
    ``u ~ U[0, 1)``, so the firing rate equals ``clamp(|x|, 0, 1)`` and spikes carry the sign of
    ``x``. This matches the BNTT authors' ``PoissonGenerator`` (``(rand <= |x|) * sign(x)``),
    which is applied to normalized images, hence negative inputs give negative spikes.

    Args:
        x: Input batch ``[B, ...]``; intensities are ``|x|`` clamped to ``[0, 1]``.
        timesteps: Number of time steps ``T``.
        generator: Optional generator on ``x.device`` for reproducible spikes.

    Returns:
        Float tensor ``[T, B, ...]`` with values in ``{-1, 0, 1}`` and the dtype of ``x``
        (float32 for integer inputs). When ``x`` requires a gradient, backward passes
        ``d s / d x = 1`` where ``|x| <= 1`` (the derivative of the firing expectation).
    """
    _check_timesteps(timesteps)
    dtype = x.dtype if x.is_floating_point() else torch.float32
    x = x.to(dtype)
    rate = x.abs().clamp_(0.0, 1.0)
    noise = torch.rand((timesteps, *x.shape), generator=generator, device=x.device, dtype=dtype)
    # A rate of exactly 0 must never fire, even when the uniform draw is 0.
    fired = (noise < rate) | ((noise == rate) & (rate > 0))
    spikes = fired.to(dtype) * torch.sign(x)
    if x.requires_grad:
        # Straight-through gradient of the expected spike E[s] = clamp(x, -1, 1), so attacks
        # crafted through the SNN (Sharmin et al. 2020 FGSM) reach the pixels; the forward
        # value is unchanged (e - e.detach() is exactly 0).
        expected = x.clamp(-1.0, 1.0)
        spikes = spikes + (expected - expected.detach())
    return spikes
