"""Convergence curves: accuracy and loss per epoch of several runs (MPBN Fig. 2).

A run with several seeds is drawn as its mean with a ±1 std band over seeds. A run trained
with a held-out split (``data.holdout``) logs its epochs on that split (``val_acc``,
``val_loss``) and looks at the test set once, at the end; a run without one logs ``test_acc``
and ``test_loss`` per epoch. By default each panel is one of these splits, so a panel labelled
"test" only ever shows the test set.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mpbn.analysis._common import new_figure, save_figure, write_csv, write_json
from mpbn.analysis.io import Run, load_run
from mpbn.analysis.labels import run_labels
from mpbn.analysis.style import integer_ticks, place_legend, run_colors, styled

__all__ = ["CURVE_METRICS", "aggregate_curve", "run_curves", "plot_curves", "default_keys",
           "analyze_curves"]

#: ``mpbn train`` logs accuracies as fractions in [0, 1]; plots and tables show percent.
ACC_SCALE = 100.0

#: metric key -> (axis label with unit, title)
CURVE_METRICS: dict[str, tuple[str, str]] = {
    "val_acc": ("held-out accuracy (%)", "Held-out accuracy"),
    "val_loss": ("held-out loss (cross-entropy, nats)", "Held-out loss"),
    "test_acc": ("test accuracy (%)", "Test accuracy"),
    "test_loss": ("test loss (cross-entropy, nats)", "Test loss"),
    "train_acc": ("train accuracy (%)", "Train accuracy"),
    "train_loss": ("train loss (cross-entropy, nats)", "Train loss"),
    "spike_rate": ("spikes per neuron and step", "Spike rate"),
}

#: The per-epoch evaluation keys: of the held-out split, else of the test set.
HELDOUT_KEYS = ("val_acc", "val_loss")
TEST_KEYS = ("test_acc", "test_loss")


def aggregate_curve(per_seed: Sequence[Sequence[dict[str, Any]]], key: str,
                    ddof: int = 1) -> dict[str, list[float]]:
    """Mean and std over seeds of ``key`` at every epoch that all seeds reached.

    Args:
        per_seed: One list of epoch records per seed (``metrics.jsonl``).
        key: The metric, e.g. ``"test_acc"``.
        ddof: Delta degrees of freedom of the std (1: sample std, as ``summary.json``'s
            ``std``; a single seed gets std 0).

    Returns:
        ``{"epoch": [...], "mean": [...], "std": [...], "n_seeds": k}``; only epochs present in
        every seed, so a seed still training does not bias the tail of the curve.
    """
    tables = [{r["epoch"]: float(r[key]) for r in records if key in r and r[key] is not None}
              for records in per_seed]
    tables = [t for t in tables if t]
    if not tables:
        return {"epoch": [], "mean": [], "std": [], "n_seeds": 0}
    epochs = sorted(set.intersection(*(set(t) for t in tables)))
    values = np.array([[t[e] for e in epochs] for t in tables], dtype=np.float64)
    if values.size == 0:
        return {"epoch": [], "mean": [], "std": [], "n_seeds": len(tables)}
    std = values.std(axis=0, ddof=ddof) if len(tables) > ddof else np.zeros(len(epochs))
    return {"epoch": epochs, "mean": values.mean(axis=0).tolist(), "std": std.tolist(),
            "n_seeds": len(tables)}


def run_curves(run: Run, keys: Sequence[str] = TEST_KEYS,
               ddof: int = 1) -> dict[str, dict[str, list[float]]]:
    """:func:`aggregate_curve` of every ``key`` for one run."""
    per_seed = [run.metrics[s] for s in sorted(run.metrics)]
    return {key: aggregate_curve(per_seed, key, ddof) for key in keys}


@styled
def plot_curves(curves: dict[str, dict[str, dict[str, list[float]]]], out_dir: str | Path,
                name: str = "curves", keys: Sequence[str] = TEST_KEYS,
                colors: dict[str, str] | None = None) -> list[Path]:
    """One panel per metric, one line (mean) and band (±1 std) per run.

    Args:
        colors: ``{run label: colour}`` (a report's, so a run has one colour on the page);
            missing labels get :func:`mpbn.analysis.style.run_colors`' next colours.
    """
    colors = run_colors(curves, colors)
    ncols = min(len(keys), 2)
    fig, axes = new_figure(ncols=ncols, nrows=-(-len(keys) // ncols), width=5.0, height=3.6)
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    used = []
    for ax, key in zip(axes.flat, keys, strict=False):
        ylabel, title = CURVE_METRICS.get(key, (key, key))
        for label, per_key in curves.items():
            c = per_key.get(key)
            if not c or not c["epoch"]:
                continue
            epochs, mean, std = (np.asarray(c[k]) for k in ("epoch", "mean", "std"))
            if key.endswith("_acc"):
                mean, std = mean * ACC_SCALE, std * ACC_SCALE
            seeds = f" ({c['n_seeds']} seeds)" if c["n_seeds"] > 1 else ""
            ax.plot(epochs, mean, label=f"{label}{seeds}", color=colors[label],
                    marker="." if len(epochs) < 12 else None)
            if c["n_seeds"] > 1:
                ax.fill_between(epochs, mean - std, mean + std, alpha=0.2,
                                color=colors[label], linewidth=0)
        ax.set_xlabel("epoch")
        integer_ticks(ax, "x")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title} per epoch (mean ± std over seeds)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            used.append(ax)
        else:
            ax.text(0.5, 0.5, "no run logged this metric", ha="center", va="center",
                    transform=ax.transAxes)
    for ax in used:
        place_legend(ax)
    return save_figure(fig, out_dir, name)


def default_keys(runs: Sequence[Run]) -> list[str]:
    """The per-epoch evaluation metrics the runs logged: ``val_acc``, ``val_loss`` when some run
    has a held-out split, ``test_acc``, ``test_loss`` when some run evaluated the test set per
    epoch (both pairs for a mix; the test pair when no run logged either yet)."""
    logged = {key for run in runs for records in run.metrics.values() for r in records
              for key in r}
    keys = [k for pair in (HELDOUT_KEYS, TEST_KEYS) if logged & set(pair) for k in pair]
    return keys or list(TEST_KEYS)


def analyze_curves(run_dirs: Sequence[str | Path], out_dir: str | Path,
                   keys: Sequence[str] | None = None, ddof: int = 1,
                   labels: Sequence[str] | None = None,
                   colors: dict[str, str] | None = None) -> dict[str, Any]:
    """Convergence curves of several runs on one plot (MPBN Fig. 2), plus ``curves.json``/csv.

    Args:
        run_dirs: Run directories (``mpbn train`` outputs).
        out_dir: Where ``curves.png``, ``curves.svg``, ``curves.json`` and ``curves.csv`` go.
        keys: Metrics to plot, one panel each; ``None``: :func:`default_keys` (the held-out
            split's accuracy and loss for held-out runs, the test set's otherwise).
        ddof: Std degrees of freedom over seeds.
        labels: Legend labels (default: :func:`mpbn.analysis.labels.run_labels`, the run
            names with the config values that tell them apart where the names do not).
        colors: ``{label: colour}``; default: one palette colour per run, in order.

    Returns:
        ``{"curves": {label: {key: aggregate_curve(...)}}, "keys": [...], "files": [...]}``.
    """
    runs = [load_run(d) for d in run_dirs]
    keys = list(keys) if keys else default_keys(runs)
    names = list(labels) if labels else run_labels(runs)
    curves = {name: run_curves(run, keys, ddof) for name, run in zip(names, runs, strict=True)}
    out = Path(out_dir)
    files = plot_curves(curves, out, keys=keys, colors=colors)
    rows = [{"run": name, "metric": key, "epoch": e, "mean": m, "std": s, "n_seeds": c["n_seeds"]}
            for name, per_key in curves.items() for key, c in per_key.items()
            for e, m, s in zip(c["epoch"], c["mean"], c["std"], strict=True)]
    write_csv(rows, out / "curves.csv")
    write_json(curves, out / "curves.json")
    return {"curves": curves, "keys": keys, "files": [str(p) for p in files]}
