"""Fold report: what folding MPBN into the firing threshold did (MPBN Sec. 4.2, Eq. 10, 13).

Per MPBN neuron: the distribution of folded thresholds ``V~`` (channel- or element-wise), how
many ``lambda`` were negative (the neuron then fires below ``V~``) or zero (constant output,
``V~ = +-inf``), and the spike mismatch between the folded and unfolded models
(:func:`mpbn.spike_mismatch`; zero for an exact fold).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mpbn.analysis._common import new_figure, save_figure, write_csv, write_json
from mpbn.analysis.style import PALETTE, styled
from mpbn.functional.fold import fold_membrane_threshold
from mpbn.layers.fold import FoldWarning, fold, spike_mismatch
from mpbn.layers.neuron import LIF

__all__ = ["folded_thresholds", "fold_summary", "plot_fold", "analyze_fold"]


def folded_thresholds(model: nn.Module) -> list[dict[str, Any]]:
    """Folded threshold, sign and lambda of every MPBN neuron of ``model`` (not modified)."""
    layers = []
    for name, m in model.named_modules():
        if not isinstance(m, LIF) or m.membrane_norm is None:
            continue
        norm = m.membrane_norm
        threshold, sign = fold_membrane_threshold(m.v_threshold, norm.weight, norm.bias,
                                                  norm.running_mean, norm.running_var, norm.eps)
        lam = norm.weight.detach()
        layers.append({"name": name, "granularity": norm.granularity,
                       "threshold": threshold.cpu(), "sign": sign.cpu(),
                       "n": int(lam.numel()), "negative_lambda": int((lam < 0).sum()),
                       "zero_lambda": int((lam == 0).sum())})
    return layers


def fold_summary(layers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-layer statistics of the finite folded thresholds (for tables and json)."""
    rows = []
    for layer in layers:
        th = layer["threshold"].double()
        finite = th[torch.isfinite(th)]
        rows.append({
            "layer": layer["name"], "granularity": layer["granularity"], "n": layer["n"],
            "negative_lambda": layer["negative_lambda"], "zero_lambda": layer["zero_lambda"],
            "infinite_threshold": int((~torch.isfinite(th)).sum()),
            "threshold_mean": float(finite.mean()) if finite.numel() else float("nan"),
            "threshold_std": float(finite.std(unbiased=False)) if finite.numel() else float("nan"),
            "threshold_min": float(finite.min()) if finite.numel() else float("nan"),
            "threshold_max": float(finite.max()) if finite.numel() else float("nan"),
        })
    return rows


@styled
def plot_fold(layers: list[dict[str, Any]], out_dir: str | Path, label: str = "",
              name: str = "fold", color: str | None = None) -> list[Path]:
    """Histograms of the folded thresholds, one panel per MPBN layer, in the run's ``color``."""
    n = max(len(layers), 1)
    ncols = min(n, 3)
    nrows = -(-n // ncols)
    fig, axes = new_figure(ncols=ncols, nrows=nrows, width=3.3, height=2.8)
    flat = [ax for row in axes for ax in row]
    for ax, layer in zip(flat, layers, strict=False):
        th = layer["threshold"].double().flatten().numpy()
        ax.hist(th[np.isfinite(th)], bins=30, color=color or PALETTE[0])
        ax.set_title(f"{layer['name']} ({layer['granularity']})\n"
                     f"lambda<0: {layer['negative_lambda']}, =0: {layer['zero_lambda']} "
                     f"of {layer['n']}", fontsize=9)
        ax.set_xlabel("folded threshold V~ (membrane units)")
        ax.set_ylabel("count (neurons or channels)")
    for ax in flat[len(layers):]:
        ax.set_axis_off()
    fig.suptitle(f"{label} folded MPBN thresholds (MPBN Eq. 10/13)".strip())
    return save_figure(fig, out_dir, name)


def analyze_fold(model: nn.Module, x: Tensor | None, out_dir: str | Path, *,
                 label: str = "", color: str | None = None) -> dict[str, Any]:
    """Fold report of one model; ``{"available": False}`` when it has no MPBN neuron.

    Args:
        x: Input batch for the spike mismatch (skipped when ``None``).
    """
    layers = folded_thresholds(model)
    if not layers:
        return {"available": False, "reason": "the model has no MPBN neurons"}
    out = Path(out_dir)
    files = plot_fold(layers, out, label, color=color)
    rows = fold_summary(layers)
    result: dict[str, Any] = {"available": True, "layers": rows}
    if x is not None:
        # Time-varying norms staying unfolded is expected here; keep the note, not the warning.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", FoldWarning)
            folded = fold(model)
        result["notes"] = [str(w.message) for w in caught if issubclass(w.category, FoldWarning)]
        report = spike_mismatch(model, folded, x)
        result["mismatch"] = {"layers": report.layers, "mismatches": report.mismatches,
                              "totals": report.totals, "rate": report.rate,
                              "total_mismatches": report.total_mismatches,
                              "max_output_diff": report.max_output_diff}
    write_json(result, out / "fold.json")
    write_csv(rows, out / "fold.csv")
    return {**result, "files": [str(p) for p in files]}
