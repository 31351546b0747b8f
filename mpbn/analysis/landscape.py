"""1D loss landscape along a filter-normalized random direction (MPBN Fig. 3; Li et al. 2018).

``L(alpha) = loss(theta + alpha * d)`` for ``alpha`` in ``[alpha_min, alpha_max]``, where ``d``
is a Gaussian direction rescaled filter by filter (Li et al., Sec. 4): for every filter ``i`` of
a conv/linear weight (one output channel / one output neuron),
``d_i <- d_i / ||d_i|| * ||theta_i||``.

Normalization layers are handled as Li et al. do (their ``ignore='biasbn'`` setting): the
direction is zero on every parameter of a norm layer (BN, tdBN, TEBN, BNTT's ``gamma_t``, LN,
MPBN's ``lambda``/``beta``) and on biases, and the running statistics (buffers) are never
perturbed. The loss is evaluated in eval mode with the trained running statistics, so a
point of the curve depends only on the weights, not on the batch it is computed on.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mpbn.analysis import defaults
from mpbn.analysis._common import evaluate, new_figure, save_figure, write_csv, write_json
from mpbn.analysis.style import place_legend, run_colors, styled
from mpbn.layers.neuron import MembraneBN
from mpbn.layers.norm import SeqNorm

__all__ = ["is_norm_module", "filter_normalized_direction", "perturbed", "loss_landscape_1d",
           "plot_landscape", "analyze_landscape"]

_TORCH_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def is_norm_module(module: nn.Module) -> bool:
    """Whether ``module`` is a normalization layer (its parameters get a zero direction)."""
    return isinstance(module, (SeqNorm, MembraneBN, *_TORCH_NORMS))


def _norm_parameter_names(model: nn.Module) -> set[str]:
    names = set()
    for prefix, module in model.named_modules():
        if is_norm_module(module):
            for pname, _ in module.named_parameters(recurse=False):
                names.add(f"{prefix}.{pname}" if prefix else pname)
    return names


def filter_normalized_direction(model: nn.Module,
                                generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """A random direction over ``model``'s parameters, filter-normalized (Li et al. Sec. 4).

    Returns:
        ``{parameter name: tensor}`` for every parameter. Weights with ``dim >= 2`` outside
        norm layers: Gaussian, each filter (slice along dim 0) rescaled to the norm of the same
        filter of the weight. Biases, other 1-d parameters and all norm-layer parameters: zero.
    """
    skip = _norm_parameter_names(model)
    direction = {}
    for name, p in model.named_parameters():
        if name in skip or p.dim() <= 1:
            direction[name] = torch.zeros_like(p)
            continue
        d = torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
        d_norm = d.flatten(1).norm(dim=1)
        w_norm = p.detach().flatten(1).norm(dim=1)
        scale = w_norm / d_norm.clamp_min(1e-12)
        direction[name] = d * scale.view(-1, *([1] * (p.dim() - 1)))
    return direction


@contextmanager
def perturbed(model: nn.Module, direction: dict[str, Tensor], alpha: float) -> Iterator[nn.Module]:
    """Temporarily set ``theta <- theta + alpha * d``; the exact original weights are restored."""
    saved = {name: p.detach().clone() for name, p in model.named_parameters()}
    try:
        with torch.no_grad():
            for name, p in model.named_parameters():
                d = direction.get(name)
                if d is not None and alpha != 0:
                    p.add_(d, alpha=alpha)
        yield model
    finally:
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(saved[name])


def loss_landscape_1d(model: nn.Module, x: Tensor, y: Tensor, alphas: Sequence[float], *,
                      direction: dict[str, Tensor] | None = None, seed: int = 0,
                      batch_size: int = 256) -> dict[str, list[float]]:
    """Loss and accuracy along ``theta + alpha * d`` (eval mode, trained running statistics).

    Args:
        x, y: The evaluation sample (a fixed subset of the test set bounds the cost).
        alphas: Step sizes; 0 is the trained model.
        direction: A direction from :func:`filter_normalized_direction`; drawn with ``seed``
            when ``None``.
        seed: Seed of the direction and of stochastic encoders.

    Returns:
        ``{"alpha": [...], "loss": [...], "acc": [...]}``.
    """
    if direction is None:
        direction = filter_normalized_direction(model, torch.Generator().manual_seed(seed))
    result: dict[str, list[float]] = {"alpha": [], "loss": [], "acc": []}
    for alpha in alphas:
        with perturbed(model, direction, float(alpha)):
            metrics = evaluate(model, x, y, batch_size=batch_size, seed=seed)
        result["alpha"].append(float(alpha))
        result["loss"].append(metrics["loss"])
        result["acc"].append(metrics["acc"])
    return result


@styled
def plot_landscape(curves: dict[str, dict[str, list[float]]], out_dir: str | Path,
                   name: str = "landscape", colors: dict[str, str] | None = None) -> list[Path]:
    """Loss vs alpha, one line per model (MPBN Fig. 3); ``colors``: ``{label: colour}``."""
    colors = run_colors(curves, colors)
    fig, axes = new_figure(width=6.0, height=3.8)
    ax = axes[0][0]
    for label, c in curves.items():
        ax.plot(c["alpha"], c["loss"], marker=".", label=label, color=colors[label])
    ax.set_xlabel("alpha (step along filter-normalized direction, x ||filter||)")
    ax.set_ylabel("test loss (cross-entropy, nats)")
    ax.set_title("1D loss landscape (Li et al. 2018)")
    ax.grid(alpha=0.3)
    place_legend(ax)
    return save_figure(fig, out_dir, name)


def analyze_landscape(models: dict[str, nn.Module], x: Tensor, y: Tensor, out_dir: str | Path,
                      *, n_points: int = defaults.LANDSCAPE_POINTS,
                      alpha_range: tuple[float, float] = defaults.ALPHA_RANGE,
                      seed: int = defaults.SEED, batch_size: int = defaults.BATCH_SIZE,
                      colors: dict[str, str] | None = None) -> dict[str, Any]:
    """1D landscapes of several models on one plot, plus ``landscape.json``/csv.

    Each model gets its own direction drawn with the same seed (the directions differ in shape
    between architectures, and filter normalization makes their scales comparable).
    """
    lo, hi = alpha_range
    # Python floats, so a symmetric odd grid holds exactly 0.0 (the trained weights).
    alphas = [lo + (hi - lo) * i / max(n_points - 1, 1) for i in range(n_points)]
    if 0.0 not in alphas:
        alphas = sorted([*alphas, 0.0])
    curves = {label: loss_landscape_1d(m, x, y, alphas, seed=seed, batch_size=batch_size)
              for label, m in models.items()}
    out = Path(out_dir)
    files = plot_landscape(curves, out, colors=colors)
    write_json({"n_samples": int(y.shape[0]), "seed": seed, "curves": curves},
               out / "landscape.json")
    write_csv([{"model": label, "alpha": a, "loss": lo, "acc": ac}
               for label, c in curves.items()
               for a, lo, ac in zip(c["alpha"], c["loss"], c["acc"], strict=True)],
              out / "landscape.csv")
    return {"curves": curves, "files": [str(p) for p in files]}
