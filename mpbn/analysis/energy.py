"""Energy estimate: SNN accumulates vs ANN multiply-accumulates (BNTT Supp. E).

``E_SNN = sum_l SOPs_l * E_AC + sum_{analog l} MACs_l * E_MAC`` and
``E_ANN = sum_l MACs_l * E_MAC``, per sample, with the 45 nm CMOS figures (Horowitz 2014) that
BNTT uses: ``E_AC = 0.9 pJ`` (32-bit float add), ``E_MAC = 4.6 pJ`` (32-bit float mult + add).

The first layer of a direct-encoded SNN receives the analog image, so it does MACs: it is
counted as MACs with ``E_MAC`` (once per application; ``mpbn`` applies the stem conv once to a
static image, since its input is the same at every step). Only synaptic operations are
counted (no neuron updates, norms or memory traffic), as in BNTT.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from mpbn.analysis import defaults
from mpbn.analysis._common import new_figure, save_figure, write_csv, write_json
from mpbn.analysis.spikes import Activity, measure_activity
from mpbn.analysis.style import ANN_COLOR, place_legend, run_colors, styled, wrap

__all__ = ["E_AC_PJ", "E_MAC_PJ", "energy_table", "plot_energy", "analyze_energy"]

#: 45 nm CMOS energy per 32-bit accumulate and multiply-accumulate, in picojoules.
E_AC_PJ = defaults.E_AC_PJ
E_MAC_PJ = defaults.E_MAC_PJ


def energy_table(activity: Activity, e_ac: float = E_AC_PJ,
                 e_mac: float = E_MAC_PJ) -> dict[str, Any]:
    """Per-layer and total energy per sample (pJ) of the SNN and of the equivalent ANN.

    Returns:
        ``{"layers": [{name, sops, macs_snn, ann_macs, snn_pj, ann_pj}], "total": {...},
        "e_ac_pj", "e_mac_pj"}``; ``total["ratio"]`` is ``ann_pj / snn_pj``.
    """
    n = max(activity.n_samples, 1)
    layers = []
    for s in activity.synapses:
        sops = sum(s.sops_per_step) / n
        macs = s.macs / n
        layers.append({"name": s.name, "analog_input": s.analog_input, "sops": sops,
                       "macs_snn": macs, "ann_macs": s.ann_macs_per_sample,
                       "snn_pj": sops * e_ac + macs * e_mac,
                       "ann_pj": s.ann_macs_per_sample * e_mac})
    total = {key: float(sum(layer[key] for layer in layers))
             for key in ("sops", "macs_snn", "ann_macs", "snn_pj", "ann_pj")}
    total["ratio"] = total["ann_pj"] / total["snn_pj"] if total["snn_pj"] else float("inf")
    return {"e_ac_pj": e_ac, "e_mac_pj": e_mac, "n_samples": activity.n_samples,
            "layers": layers, "total": total}


@styled
def plot_energy(tables: dict[str, dict[str, Any]], out_dir: str | Path, name: str = "energy",
                colors: dict[str, str] | None = None) -> list[Path]:
    """Per-layer energy bars (log scale) of each SNN and its ANN, and the totals; a run has the
    same colour (``colors``, ``{label: colour}``) in both panels, the ANN is grey."""
    colors = run_colors(tables, colors)
    fig, axes = new_figure(ncols=2, width=5.0, height=3.8)
    ax = axes[0][0]
    n_bars = len(tables) + 1
    width = 0.8 / n_bars
    first = next(iter(tables.values()), None)
    if first is not None:
        x = np.arange(len(first["layers"]))
        ax.bar(x, [lay["ann_pj"] for lay in first["layers"]], width=width, label="ANN (MACs)",
               color=ANN_COLOR)
        for i, (label, table) in enumerate(tables.items(), start=1):
            ax.bar(np.arange(len(table["layers"])) + i * width,
                   [max(lay["snn_pj"], 1e-3) for lay in table["layers"]], width=width,
                   label=f"{label} (SNN)", color=colors[label])
        names = [lay["name"] for lay in first["layers"]]
        ax.set_xticks(x + width * (n_bars - 1) / 2, names, fontsize=8,
                      rotation=30 if len(names) > 4 else 0,
                      ha="right" if len(names) > 4 else "center")
    ax.set_yscale("log")
    ax.set_ylabel("energy per sample (pJ, log scale)")
    ax.set_xlabel("conv / linear layer")
    ax.set_title("Energy per layer (45 nm: AC 0.9 pJ, MAC 4.6 pJ)" if first and
                 first["e_ac_pj"] == E_AC_PJ and first["e_mac_pj"] == E_MAC_PJ
                 else "Energy per layer")
    ax.grid(alpha=0.3, axis="y")
    legend_ax = ax
    ax = axes[0][1]
    labels = ["ANN"] + [wrap(f"{k} (SNN)", 18) for k in tables]
    values = ([first["total"]["ann_pj"] / 1e6] if first else [0.0]) + \
        [t["total"]["snn_pj"] / 1e6 for t in tables.values()]
    ax.bar(range(len(values)), values, color=[ANN_COLOR] + [colors[k] for k in tables])
    ax.set_xticks(range(len(values)), labels, fontsize=8)
    ax.set_ylabel("total energy per sample (µJ)")
    ax.set_title("Total inference energy")
    ax.grid(alpha=0.3, axis="y")
    place_legend(legend_ax)
    return save_figure(fig, out_dir, name)


def analyze_energy(models: dict[str, nn.Module], x: Tensor, out_dir: str | Path, *,
                   e_ac: float = E_AC_PJ, e_mac: float = E_MAC_PJ,
                   batch_size: int = defaults.BATCH_SIZE, seed: int = defaults.SEED,
                   activities: dict[str, Activity] | None = None,
                   colors: dict[str, str] | None = None) -> dict[str, Any]:
    """Energy of several SNNs vs the ANN of the first: ``energy.png``/svg/json/csv.

    Args:
        activities: Reuse measurements of :func:`mpbn.analysis.spikes.measure_activity`.
    """
    if activities is None:
        activities = {label: measure_activity(m, x, batch_size=batch_size, seed=seed)
                      for label, m in models.items()}
    tables = {label: energy_table(a, e_ac, e_mac) for label, a in activities.items()}
    out = Path(out_dir)
    files = plot_energy(tables, out, colors=colors)
    write_json(tables, out / "energy.json")
    write_csv([{"model": label, **layer} for label, t in tables.items() for layer in t["layers"]],
              out / "energy.csv")
    return {"tables": tables, "files": [str(p) for p in files]}
