"""Robustness to Gaussian noise and to SNN-crafted FGSM (BNTT Sec. 4.7, Fig. 8).

Perturbation space: pixel space, as BNTT adds ``N(0, sigma^2)`` "to the clean input image".
Loader inputs are normalized, ``x = (p - mean) / std``; given the dataset's ``mean``/``std``,
the perturbation is applied to ``p = x * std + mean`` in ``[0, 1]`` units, the result is
clipped to ``[0, 1]`` and normalized again, so ``sigma`` and ``epsilon`` mean the same for every
dataset. Without ``mean``/``std`` (already un-normalized inputs, or a stand-in) the input space
is used as it is, without clipping. Noise and attack always use the same space.

FGSM (Goodfellow et al. 2014) in its SNN-crafted form (Sharmin et al. 2020):
``p_adv = p + eps * sign(grad_p loss(f(p), y))``, the gradient taken through the SNN itself by
BPTT with its surrogate spike derivative, model in eval mode (running statistics). With Poisson
encoding the gradient passes the encoder straight through (the derivative of the expected
spike, see :func:`mpbn.data.poisson_encode`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mpbn.analysis import defaults
from mpbn.analysis._common import (
    chunks,
    eval_mode,
    evaluate,
    is_sequence,
    new_figure,
    save_figure,
    seeded,
    write_csv,
    write_json,
)
from mpbn.analysis.style import place_legend, run_colors, styled

__all__ = ["InputSpace", "gaussian_noise", "fgsm", "noise_curve", "fgsm_curve",
           "plot_robustness", "analyze_robustness"]


@dataclass(frozen=True)
class InputSpace:
    """Maps model inputs to pixels and back; identity when ``mean``/``std`` are ``None``."""

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    #: Dimensions after the channel axis (2 for images [.., C, H, W]).
    spatial_dims: int = 2

    def _stats(self, x: Tensor) -> tuple[Tensor, Tensor] | None:
        if self.mean is None or self.std is None:
            return None
        # Aligned from the right, so static [B, C, H, W] and sequence [T, B, C, H, W] both work.
        shape = (-1,) + (1,) * self.spatial_dims
        return (torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape),
                torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape))

    def to_pixels(self, x: Tensor) -> Tensor:
        stats = self._stats(x)
        return x if stats is None else x * stats[1] + stats[0]

    def from_pixels(self, p: Tensor) -> Tensor:
        stats = self._stats(p)
        return p if stats is None else (p.clamp(0.0, 1.0) - stats[0]) / stats[1]


def gaussian_noise(x: Tensor, sigma: float, space: InputSpace = InputSpace(),
                   generator: torch.Generator | None = None) -> Tensor:
    """``x`` with ``N(0, sigma^2)`` added in pixel space (clipped to [0, 1] when normalized)."""
    p = space.to_pixels(x)
    noise = torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
    return space.from_pixels(p + sigma * noise)


def fgsm(model: nn.Module, x: Tensor, y: Tensor, epsilon: float,
         space: InputSpace = InputSpace(), seed: int | None = 0) -> Tensor:
    """SNN-crafted FGSM: one signed-gradient step of size ``epsilon`` in pixel space.

    The gradient flows through the spiking network by BPTT and its surrogate derivative; the
    model is in eval mode, its parameters receive no gradient.
    """
    if epsilon == 0:
        return x.detach().clone()
    with eval_mode(model), seeded(seed), torch.enable_grad():
        p = space.to_pixels(x.detach()).requires_grad_(True)
        loss = F.cross_entropy(model(space.from_pixels(p)), y)
        (grad,) = torch.autograd.grad(loss, p)
    return space.from_pixels(p.detach() + epsilon * grad.sign())


def noise_curve(model: nn.Module, x: Tensor, y: Tensor, sigmas: Sequence[float], *,
                space: InputSpace = InputSpace(), batch_size: int = 256,
                seed: int = 0) -> dict[str, list[float]]:
    """Accuracy and loss under Gaussian noise of each ``sigma`` (BNTT Fig. 8A)."""
    result: dict[str, list[float]] = {"sigma": [], "acc": [], "loss": []}
    for sigma in sigmas:
        gen = torch.Generator().manual_seed(seed)
        x_noisy = gaussian_noise(x, float(sigma), space, gen)
        m = evaluate(model, x_noisy, y, batch_size=batch_size, seed=seed)
        result["sigma"].append(float(sigma))
        result["acc"].append(m["acc"])
        result["loss"].append(m["loss"])
    return result


def fgsm_curve(model: nn.Module, x: Tensor, y: Tensor, epsilons: Sequence[float], *,
               space: InputSpace = InputSpace(), batch_size: int = 256,
               seed: int = 0) -> dict[str, list[float]]:
    """Accuracy and loss under FGSM of each ``epsilon`` (BNTT Fig. 8B), crafted per batch."""
    result: dict[str, list[float]] = {"epsilon": [], "acc": [], "loss": []}
    for eps in epsilons:
        xs_adv = [fgsm(model, xb, yb, float(eps), space, seed)
                  for xb, yb in chunks(x, y, model, batch_size)]
        x_adv = torch.cat(xs_adv, dim=1 if is_sequence(x, model) else 0)
        m = evaluate(model, x_adv, y, batch_size=batch_size, seed=seed)
        result["epsilon"].append(float(eps))
        result["acc"].append(m["acc"])
        result["loss"].append(m["loss"])
    return result


@styled
def plot_robustness(noise: dict[str, dict[str, list[float]]],
                    attack: dict[str, dict[str, list[float]]], out_dir: str | Path,
                    pixel_space: bool, name: str = "robustness",
                    colors: dict[str, str] | None = None) -> list[Path]:
    """Accuracy vs noise sigma and vs FGSM epsilon, several models per panel (BNTT Fig. 8);
    a model has the same colour (``colors``, ``{label: colour}``) in both panels."""
    colors = run_colors([*noise, *attack], colors)
    unit = "pixel units, images in [0, 1]" if pixel_space else "input units"
    fig, axes = new_figure(ncols=2, width=5.0, height=3.6)
    for ax, curves, key, title in ((axes[0][0], noise, "sigma", "Gaussian noise (BNTT Fig. 8A)"),
                                   (axes[0][1], attack, "epsilon", "FGSM (BNTT Fig. 8B)")):
        for label, c in curves.items():
            ax.plot(c[key], [100 * a for a in c["acc"]], marker="o", label=label,
                    color=colors[label])
        ax.set_xlabel(f"{'noise std sigma' if key == 'sigma' else 'attack epsilon'} ({unit})")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    for ax in axes[0]:
        place_legend(ax)
    return save_figure(fig, out_dir, name)


def analyze_robustness(models: dict[str, nn.Module], x: Tensor, y: Tensor, out_dir: str | Path,
                       *, sigmas: Sequence[float] = defaults.SIGMAS,
                       epsilons: Sequence[float] = defaults.EPSILONS,
                       mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                       batch_size: int = defaults.BATCH_SIZE, seed: int = defaults.SEED,
                       colors: dict[str, str] | None = None) -> dict[str, Any]:
    """Noise and FGSM curves of several models on one figure, plus json/csv."""
    shape = getattr(next(iter(models.values()), None), "input_shape", (0, 0, 0))
    space = InputSpace(tuple(mean) if mean is not None else None,
                       tuple(std) if std is not None else None, spatial_dims=len(shape) - 1)
    noise = {label: noise_curve(m, x, y, sigmas, space=space, batch_size=batch_size, seed=seed)
             for label, m in models.items()}
    attack = {label: fgsm_curve(m, x, y, epsilons, space=space, batch_size=batch_size, seed=seed)
              for label, m in models.items()}
    out = Path(out_dir)
    files = plot_robustness(noise, attack, out, pixel_space=space.mean is not None,
                            colors=colors)
    write_json({"pixel_space": space.mean is not None, "noise": noise, "fgsm": attack},
               out / "robustness.json")
    rows = [{"model": label, "perturbation": "noise", "strength": s, "acc": a}
            for label, c in noise.items() for s, a in zip(c["sigma"], c["acc"], strict=True)]
    rows += [{"model": label, "perturbation": "fgsm", "strength": e, "acc": a}
             for label, c in attack.items() for e, a in zip(c["epsilon"], c["acc"], strict=True)]
    write_csv(rows, out / "robustness.csv")
    return {"noise": noise, "fgsm": attack, "files": [str(p) for p in files]}
