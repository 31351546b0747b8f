"""BNTT's gamma through time and temporal early exit (BNTT Sec. 3.4, 4.5-4.6, Figs. 4, 6, 7).

Every :class:`~mpbn.layers.norm.BatchNormThroughTime` layer holds ``gamma`` as ``weight [T, C]``.
The exit rule (Sec. 3.4): average ``gamma_t`` over the channels of each layer; exit at the first
step ``t`` after which every layer's average stays below a threshold (0.1 in the paper), i.e. the
smallest ``t`` with ``max_l gamma_bar[l, s] < threshold`` for every ``s > t``. Steps are counted
from 1; the network then runs only steps ``1..t``. Accuracy at the exit step is measured by
actually running the model for ``t`` steps, not by truncating a full run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from mpbn.analysis import defaults
from mpbn.analysis._common import evaluate, new_figure, save_figure, write_csv, write_json
from mpbn.analysis.style import integer_ticks, place_legend, run_colors, styled, wrap
from mpbn.layers.norm import BatchNormThroughTime

__all__ = ["bntt_layers", "gamma_table", "exit_step", "early_exit_curve", "plot_gamma",
           "plot_early_exit", "early_exit_table", "analyze_gamma", "analyze_early_exit"]


def bntt_layers(model: nn.Module) -> list[tuple[str, BatchNormThroughTime]]:
    """The BNTT layers of ``model`` in definition order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, BatchNormThroughTime)]


def gamma_table(model: nn.Module, absolute: bool = False) -> tuple[list[str], np.ndarray]:
    """Channel-averaged ``gamma_t`` of every BNTT layer: ``(names, table [L, T])``.

    Args:
        absolute: Average ``|gamma|`` instead of ``gamma`` (the paper averages ``gamma``;
            with negative scales the magnitude is what drives spiking).
    """
    layers = bntt_layers(model)
    rows = []
    for _, m in layers:
        w = m.weight.detach().double().cpu()
        rows.append((w.abs() if absolute else w).mean(1).numpy())
    table = np.stack(rows) if rows else np.zeros((0, 0))
    return [n for n, _ in layers], table


def exit_step(table: np.ndarray, threshold: float = 0.1) -> int:
    """The early-exit step of BNTT Sec. 3.4 for a ``[layers, T]`` table of average gammas.

    Returns:
        The smallest ``t`` in ``1..T`` such that every layer's average gamma is below
        ``threshold`` at every step ``s > t``; ``T`` when the last step is not below it. At
        least 1 step always runs.
    """
    table = np.asarray(table, dtype=np.float64)
    steps = table.shape[1]
    below = (table < threshold).all(axis=0)  # [T]: every layer below at step s (0-based)
    t = steps
    # Walk back from the end while steps stay below the threshold.
    while t > 0 and below[t - 1]:
        t -= 1
    return max(t, 1)


def early_exit_curve(model: nn.Module, x: Tensor, y: Tensor, thresholds: Sequence[float], *,
                     absolute: bool = False, batch_size: int = defaults.BATCH_SIZE,
                     seed: int = defaults.SEED) -> dict[str, list[float]]:
    """Exit step and accuracy for each gamma threshold (BNTT Fig. 7).

    Each distinct exit step is evaluated once, by running the model for that many steps.
    """
    _, table = gamma_table(model, absolute)
    steps = [exit_step(table, th) for th in thresholds]
    measured = {t: evaluate(model, x, y, timesteps=t, batch_size=batch_size, seed=seed)
                for t in sorted(set(steps))}
    return {"threshold": [float(th) for th in thresholds], "exit_step": steps,
            "acc": [measured[t]["acc"] for t in steps],
            "loss": [measured[t]["loss"] for t in steps]}


def accuracy_per_step(model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 256,
                      seed: int = 0) -> dict[str, list[float]]:
    """Accuracy when running ``t = 1..T`` steps (each a separate run)."""
    total = int(model.timesteps)
    runs = [evaluate(model, x, y, timesteps=t, batch_size=batch_size, seed=seed)
            for t in range(1, total + 1)]
    return {"steps": list(range(1, total + 1)), "acc": [r["acc"] for r in runs],
            "loss": [r["loss"] for r in runs]}


@styled
def plot_gamma(names: list[str], table: np.ndarray, weights: list[np.ndarray],
               out_dir: str | Path, threshold: float, label: str = "",
               name: str = "gamma") -> list[Path]:
    """Average gamma per layer over time with the exit step (Fig. 4), and gamma histograms
    per layer and step (Fig. 6): one row per layer, colour = time step."""
    import matplotlib.pyplot as plt

    steps = table.shape[1]
    t_exit = exit_step(table, threshold)
    fig, axes = new_figure(ncols=2, width=5.0, height=3.8)
    ax = axes[0][0]
    for row, layer in zip(table, names, strict=True):
        ax.plot(range(1, steps + 1), row, marker=".", label=layer)
    ax.axhline(threshold, color="k", linestyle="--", linewidth=1, label=f"threshold {threshold}")
    if t_exit < steps:
        ax.axvspan(t_exit + 0.5, steps + 0.5, color="C0", alpha=0.12, label=f"exit at t={t_exit}")
    ax.set_xlabel("time step t")
    ax.set_ylabel("channel-averaged gamma_t (unitless)")
    ax.set_title(wrap(f"{label}: gamma through time (BNTT Fig. 4)", 48) if label
                 else "BNTT gamma through time (BNTT Fig. 4)")
    integer_ticks(ax, "x")
    ax.grid(alpha=0.3)
    legend_ax = ax
    ax = axes[0][1]
    cmap = plt.get_cmap("viridis")
    # Stack per-layer histograms vertically, offset by layer, each normalized to [0, 1] as Fig. 6.
    lo = min((float(w.min()) for w in weights), default=0.0)
    hi = max((float(w.max()) for w in weights), default=1.0)
    bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 31)
    for i, w in enumerate(weights):
        for t in range(w.shape[0]):
            counts, edges = np.histogram(w[t], bins=bins)
            counts = counts / max(counts.max(), 1)
            ax.plot(edges[:-1], 0.9 * counts + len(weights) - 1 - i, drawstyle="steps-post",
                    color=cmap(t / max(steps - 1, 1)), linewidth=0.9)
    ax.set_yticks(range(len(names)), list(reversed(names)), fontsize=8)
    ax.set_xlabel("gamma value")
    ax.set_ylabel("layer (histogram normalized to [0, 1])")
    ax.set_title("gamma histograms, colour = step (BNTT Fig. 6)")
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(1, steps))
    bar = fig.colorbar(sm, ax=ax, label="time step t")
    integer_ticks(bar.ax, "y")
    place_legend(legend_ax)
    return save_figure(fig, out_dir, name)


@styled
def plot_early_exit(curves: dict[str, dict[str, list[float]]], out_dir: str | Path,
                    name: str = "early_exit", colors: dict[str, str] | None = None
                    ) -> list[Path]:
    """BNTT Fig. 7 as two panels: accuracy at the exit step, and the exit step, vs the gamma
    threshold; a model has the same colour (``colors``, ``{label: colour}``) in both."""
    colors = run_colors(curves, colors)
    fig, axes = new_figure(ncols=2, width=5.0, height=3.6)
    acc_ax, step_ax = axes[0]
    for label, c in curves.items():
        acc_ax.plot(c["threshold"], [100 * a for a in c["acc"]], marker="o",
                    color=colors[label], label=label)
        step_ax.plot(c["threshold"], c["exit_step"], marker="s", drawstyle="steps-post",
                     color=colors[label], label=label)
    acc_ax.set_xlabel("gamma threshold")
    acc_ax.set_ylabel("test accuracy at the exit step (%)")
    acc_ax.set_title("Accuracy with temporal early exit (BNTT Fig. 7)")
    step_ax.set_xlabel("gamma threshold")
    step_ax.set_ylabel("exit time step (steps run)")
    step_ax.set_title("Exit step chosen by the threshold")
    top = max((max(c["exit_step"]) for c in curves.values() if c["exit_step"]), default=1)
    step_ax.set_ylim(0.5, top + 0.5)
    integer_ticks(step_ax, "y")
    for ax in (acc_ax, step_ax):
        ax.grid(alpha=0.3)
        place_legend(ax)
    return save_figure(fig, out_dir, name)


def early_exit_table(curves: dict[str, dict[str, list[float]]],
                     timesteps: dict[str, int] | None = None) -> str:
    """Markdown table of :func:`early_exit_curve` results: one row per model and threshold,
    the exit step (of ``timesteps[label]`` when given) and the accuracy there (%)."""
    lines = ["| model | gamma threshold | exit step | accuracy at exit (%) |",
             "| --- | --- | --- | --- |"]
    for label, c in curves.items():
        total = (timesteps or {}).get(label)
        for th, step, acc in zip(c["threshold"], c["exit_step"], c["acc"], strict=True):
            of = f" of {total}" if total else ""
            lines.append(f"| {label} | {th:g} | {step}{of} | {100 * acc:.2f} |")
    return "\n".join(lines)


def analyze_gamma(model: nn.Module, out_dir: str | Path, *,
                  threshold: float = defaults.GAMMA_THRESHOLD,
                  absolute: bool = False, label: str = "") -> dict[str, Any]:
    """Gamma table, exit step and plots of one BNTT model; ``{"available": False}`` without BNTT."""
    names, table = gamma_table(model, absolute)
    if not names:
        return {"available": False, "reason": "the model has no BNTT layers"}
    weights = [m.weight.detach().double().cpu().numpy() for _, m in bntt_layers(model)]
    out = Path(out_dir)
    files = plot_gamma(names, table, weights, out, threshold, label)
    result = {"available": True, "layers": names, "mean_gamma": table,
              "threshold": threshold, "exit_step": exit_step(table, threshold),
              "timesteps": int(table.shape[1])}
    write_json(result, out / "gamma.json")
    write_csv([{"layer": n, **{f"t{t + 1}": v for t, v in enumerate(row)}}
               for n, row in zip(names, table, strict=True)], out / "gamma.csv")
    return {**result, "files": [str(p) for p in files]}


def analyze_early_exit(models: dict[str, nn.Module], x: Tensor, y: Tensor, out_dir: str | Path,
                       *, thresholds: Sequence[float] = defaults.EXIT_THRESHOLDS,
                       absolute: bool = False, batch_size: int = defaults.BATCH_SIZE,
                       seed: int = defaults.SEED,
                       colors: dict[str, str] | None = None) -> dict[str, Any]:
    """Accuracy vs threshold/exit step for every model with BNTT layers; others are skipped.

    Returns:
        ``{"available", "curves": {label: early_exit_curve(...)}, "timesteps": {label: T},
        "table": early_exit_table(...) (markdown), "skipped", "files"}``.
    """
    curves = {label: early_exit_curve(m, x, y, thresholds, absolute=absolute,
                                      batch_size=batch_size, seed=seed)
              for label, m in models.items() if bntt_layers(m)}
    skipped = [label for label, m in models.items() if not bntt_layers(m)]
    if not curves:
        return {"available": False, "reason": "no model has BNTT layers", "skipped": skipped}
    timesteps = {label: int(models[label].timesteps) for label in curves
                 if hasattr(models[label], "timesteps")}
    out = Path(out_dir)
    files = plot_early_exit(curves, out, colors=colors)
    write_json({"curves": curves, "timesteps": timesteps, "skipped": skipped},
               out / "early_exit.json")
    write_csv([{"model": label, "threshold": th, "exit_step": t, "acc": a}
               for label, c in curves.items()
               for th, t, a in zip(c["threshold"], c["exit_step"], c["acc"], strict=True)],
              out / "early_exit.csv")
    return {"available": True, "curves": curves, "timesteps": timesteps,
            "table": early_exit_table(curves, timesteps), "skipped": skipped,
            "files": [str(p) for p in files]}
