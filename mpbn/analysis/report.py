"""``mpbn report``: one markdown page gathering every analysis of finished runs.

The page (``report.md``) has a results table (mean ± std over seeds, as the papers' tables
read), then one section per analysis with its images embedded. A piece that cannot be produced
(no checkpoint, no BNTT layer for the gamma section, no MPBN neuron for the fold report, a
dataset not on this machine) becomes a one-line note instead of an error.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from mpbn.analysis import defaults
from mpbn.analysis.compare import (
    comparison_table,
    has_holdout,
    mean_std_text,
    mismatch_text,
    seed_records,
    seed_values,
    seeds_table,
)
from mpbn.analysis.curves import ACC_SCALE, HELDOUT_KEYS, analyze_curves
from mpbn.analysis.energy import E_AC_PJ, E_MAC_PJ, analyze_energy
from mpbn.analysis.fold_report import analyze_fold
from mpbn.analysis.gamma import analyze_early_exit, analyze_gamma
from mpbn.analysis.io import Run, load_run, load_test_sample, model_from_checkpoint
from mpbn.analysis.labels import comparison_warnings, config_differences, run_labels, slug
from mpbn.analysis.landscape import analyze_landscape
from mpbn.analysis.robustness import analyze_robustness
from mpbn.analysis.spikes import analyze_spikes
from mpbn.analysis.style import run_colors

__all__ = ["SECTIONS", "ReportOptions", "results_table", "heldout_results_table",
           "mean_std_text", "build_report"]

SECTIONS = ("curves", "landscape", "spikes", "energy", "gamma", "early-exit", "robustness",
            "fold")


@dataclass
class ReportOptions:
    """Cost knobs of the model-based sections (all evaluate on one test-set sample).

    The defaults are :mod:`mpbn.analysis.defaults`, the same as ``mpbn analyze``'s.
    """

    n_samples: int = defaults.N_SAMPLES
    batch_size: int = defaults.BATCH_SIZE
    seed: int = defaults.SEED
    landscape_points: int = defaults.LANDSCAPE_POINTS
    alpha_range: tuple[float, float] = defaults.ALPHA_RANGE
    gamma_threshold: float = defaults.GAMMA_THRESHOLD
    thresholds: Sequence[float] = defaults.EXIT_THRESHOLDS
    sigmas: Sequence[float] = defaults.SIGMAS
    epsilons: Sequence[float] = defaults.EPSILONS
    e_ac: float = E_AC_PJ
    e_mac: float = E_MAC_PJ
    checkpoint: str = defaults.CHECKPOINT
    device: str = defaults.DEVICE
    sections: Sequence[str] = SECTIONS
    #: Config overrides for rebuilding models and loading data, e.g. ``{"data.root": DIR}``.
    overrides: dict[str, Any] = field(default_factory=dict)
    #: Add a comparison of every run against the first (the baseline): final test accuracy
    #: mean ± std and the difference with a Welch interval, and a per-seed table.
    compare: bool = False
    #: The config paths the comparison is about (``["model.mpbn"]``): a variant that differs
    #: from the baseline in any other path gets a warning. ``None``: warn when a variant
    #: differs in more than one path.
    variables: Sequence[str] | None = None


def _final_accs(run: Run, key: str) -> list[float]:
    """Per-seed test accuracies: ``final``, ``best`` (best epoch; runs without a held-out split
    only) or ``folded``; see :func:`mpbn.analysis.compare.seed_values` for seeds still training."""
    return seed_values(run, {"final": "final_test_acc", "best": "best_test_acc",
                             "folded": "folded_test_acc"}[key])


def results_table(runs: Sequence[Run], labels: Sequence[str]) -> str:
    """Markdown table: one row per run, test accuracy (%) mean ± std over seeds.

    When some run has a held-out split, the table is :func:`heldout_results_table` instead.
    """
    if any(has_holdout(run) for run in runs):
        return heldout_results_table(runs, labels)
    lines = ["| run | model | norm | MPBN | T | dataset | seeds | final acc (%) | best acc (%) "
             "| folded acc (%) |", "|" + " --- |" * 10]
    for run, label in zip(runs, labels, strict=True):
        model, data = run.config.get("model") or {}, run.config.get("data") or {}
        seeds = len(run.summary.get("seeds") or run.metrics) or "-"
        lines.append(
            f"| {label} | {model.get('name', '-')} | {model.get('norm', '-')} | "
            f"{model.get('mpbn') or 'none'} | {model.get('timesteps', '-')} | "
            f"{data.get('name', '-')} | "
            f"{seeds} | {mean_std_text(_final_accs(run, 'final'), scale=ACC_SCALE)} | "
            f"{mean_std_text(_final_accs(run, 'best'), scale=ACC_SCALE)} | "
            f"{mean_std_text(_final_accs(run, 'folded'), scale=ACC_SCALE)} |")
    return "\n".join(lines)


def heldout_results_table(runs: Sequence[Run], labels: Sequence[str]) -> str:
    """Markdown table for runs with a held-out split: the final model's test accuracy (the
    test set looked at once), the held-out accuracy after the last and at the best epoch,
    flip test-time augmentation in its own column, the folded model and its spike mismatch."""
    lines = ["| run | model | norm | MPBN | T | dataset | seeds | test acc (%) | "
             "held-out acc, final (%) | held-out acc, best epoch (%) | "
             "test acc, flip TTA (%) | folded test acc (%) | spike mismatch |",
             "|" + " --- |" * 13]
    for run, label in zip(runs, labels, strict=True):
        model, data = run.config.get("model") or {}, run.config.get("data") or {}
        seeds = len([r for r in seed_records(run).values() if r.finished]) or "-"
        lines.append(
            f"| {label} | {model.get('name', '-')} | {model.get('norm', '-')} | "
            f"{model.get('mpbn') or 'none'} | {model.get('timesteps', '-')} | "
            f"{data.get('name', '-')} | {seeds} | "
            + " | ".join(mean_std_text(seed_values(run, key), scale=ACC_SCALE) for key in (
                "final_test_acc", "final_val_acc", "best_val_acc", "test_acc_flip",
                "folded_test_acc"))
            + f" | {mismatch_text(run)} |")
    return "\n".join(lines)


@dataclass
class _Page:
    out: Path
    lines: list[str] = field(default_factory=list)

    def add(self, *text: str) -> None:
        self.lines.extend(text)

    def image(self, path: str | Path, caption: str) -> None:
        rel = Path(path).relative_to(self.out)
        self.add(f"![{caption}]({rel.as_posix()})", "")

    def note(self, text: str) -> None:
        self.add(f"> {text}", "")


def _section(page: _Page, title: str, body: Callable[[], None]) -> None:
    page.add(f"## {title}", "")
    # One line per section as it starts and ends: a landscape or robustness sweep of a large
    # model takes minutes, and a silent terminal looks hung.
    print(f"report: {title} ...", flush=True)
    start = time.perf_counter()
    try:
        body()
    except Exception as error:  # a report must survive one broken piece
        where = traceback.extract_tb(error.__traceback__)[-1]
        page.note(f"Not available: {type(error).__name__}: {error} "
                  f"({Path(where.filename).name}:{where.lineno}).")
        print(f"report: {title} not available ({type(error).__name__}), "
              f"{time.perf_counter() - start:.1f} s", flush=True)
        return
    print(f"report: {title} done, {time.perf_counter() - start:.1f} s", flush=True)


def _png(files: Sequence[str]) -> str:
    return next(f for f in files if f.endswith(".png"))


def _load_models(runs: Sequence[Run], labels: Sequence[str],
                 page: _Page, device: str, overrides: dict[str, Any] | None = None
                 ) -> dict[str, tuple[nn.Module, dict[str, Any]]]:
    models = {}
    for run, label in zip(runs, labels, strict=True):
        if not run.checkpoints:
            page.note(f"{label}: no checkpoint in {run.path}; model-based sections skip it.")
            continue
        seed = min(run.checkpoints)
        try:
            models[label] = model_from_checkpoint(run.checkpoints[seed], device, overrides)
        except Exception as error:
            page.note(f"{label}: cannot rebuild the model ({type(error).__name__}: {error}).")
    return models


def build_report(run_dirs: Sequence[str | Path], out_dir: str | Path,
                 options: ReportOptions | None = None) -> Path:
    """Write ``out_dir/report.md`` (and ``out_dir/images/*``) for the runs in ``run_dirs``.

    Model-based sections use the first seed's checkpoint of every run and a fixed sample of
    ``options.n_samples`` test images of the first run's dataset (runs on another dataset are
    left out of those sections with a note).

    Returns:
        The path of ``report.md``.
    """
    opts = options or ReportOptions()
    out = Path(out_dir)
    images = out / "images"
    runs = [load_run(d, prefer=opts.checkpoint) for d in run_dirs]
    labels = run_labels(runs)
    colors = run_colors(labels)  # one colour per run in every figure of the page
    page = _Page(out)
    page.add("# SNN analysis report", "",
             "Runs: " + ", ".join(f"`{r.path}`" for r in runs), "")
    differing = config_differences([r.config for r in runs])
    if len(runs) > 1:
        page.add("The runs' configs differ in: "
                 + (", ".join(f"`{p}`" for p in differing) if differing else "nothing")
                 + " (runtime fields such as `data.root`, the device and the seeds not "
                 "counted); labels name these values where the run names do not.", "")
    if opts.compare:
        for line in comparison_warnings(runs, labels, opts.variables):
            print(f"warning: {line}", flush=True)
            page.note(f"**Warning**: {line}")
    page.add("## Results", "")
    if any(has_holdout(r) for r in runs):
        page.add("Accuracy in %, mean ± std (sample std) over finished seeds. *test* is the "
                 "official test set, evaluated once with the final model; *held-out* is the "
                 "validation split taken out of the training set, on which every epoch was "
                 "measured; *flip TTA* is the test accuracy with horizontal-flip test-time "
                 "augmentation, reported apart; *folded* is the model with MPBN folded into "
                 "thresholds (MPBN Sec. 4.2), on the test set; spike mismatch: per seed, "
                 "spikes that differ between the folded and unfolded model.", "")
    else:
        page.add("Test accuracy in %, mean ± std (sample std) over seeds; *folded* is the "
                 "model with MPBN folded into thresholds (MPBN Sec. 4.2).", "")
    page.add(results_table(runs, labels), "")
    if opts.compare and len(runs) > 1:
        _comparison(page, runs, labels)
    wanted = set(opts.sections)

    if "curves" in wanted:
        def curves() -> None:
            res = analyze_curves([r.path for r in runs], images, labels=labels, colors=colors)
            heldout = set(HELDOUT_KEYS) <= set(res["keys"])
            split = ("Held-out accuracy and loss per epoch (the validation split taken out of "
                     "the training set; the test set is not looked at during training)"
                     if heldout else "Test accuracy and loss per epoch")
            if heldout and len(res["keys"]) > len(HELDOUT_KEYS):
                split += "; runs without a held-out split: test accuracy and loss per epoch"
            page.add(f"{split} (MPBN Fig. 2); bands: ±1 std over seeds.", "")
            page.image(_png(res["files"]), "convergence curves")
        _section(page, "Convergence", curves)

    model_sections = wanted - {"curves"}
    if not model_sections:
        return _write(page, out)
    page.add("## Models", "")
    loaded = _load_models(runs, labels, page, opts.device, opts.overrides)
    x, y, info = _sample(loaded, page, opts)
    models = {k: m for k, (m, c) in loaded.items()
              if x is not None and c["data"]["name"] == info.name}
    for label, (_, c) in loaded.items():
        if label not in models and x is not None:
            page.note(f"{label}: trained on {c['data']['name']}, not {info.name}; "
                      "skipped below.")
    if not models:
        page.note("No model could be evaluated; model-based sections are skipped.")
        return _write(page, out)
    page.add(f"Model-based sections use the first seed's `{opts.checkpoint}` checkpoint, in "
             f"eval mode, on {int(y.shape[0])} test samples of `{info.name}`.", "")
    _model_sections(page, models, x, y, info, images, opts, wanted, colors)
    return _write(page, out)


def _model_sections(page: _Page, models: dict[str, nn.Module], x: Tensor, y: Tensor, info: Any,
                    images: Path, opts: ReportOptions, wanted: set[str],
                    colors: dict[str, str]) -> None:
    common = {"batch_size": opts.batch_size, "seed": opts.seed, "colors": colors}
    if "landscape" in wanted:
        def landscape() -> None:
            res = analyze_landscape(models, x, y, images, n_points=opts.landscape_points,
                                    alpha_range=opts.alpha_range, **common)
            page.add("Loss along one random filter-normalized direction (Li et al. 2018; MPBN "
                     "Fig. 3). Norm parameters and running statistics are not perturbed; "
                     "eval mode.", "")
            page.image(_png(res["files"]), "1D loss landscape")
        _section(page, "Loss landscape", landscape)

    spikes_result: dict[str, Any] = {}
    if wanted & {"spikes", "energy"}:
        def spikes() -> None:
            res = analyze_spikes(models, x, images, **common)
            spikes_result.update(res)
            page.add("Spikes per neuron per sample at each step (BNTT Fig. 1; every map on one "
                     "colour scale) and spike rate per layer, total spikes over T / neurons "
                     "(BNTT Fig. 5).", "")
            page.image(_png(res["files"]), "spike activity")
            page.add("| model | mean spike rate over layers | SOPs per sample |",
                     "| --- | --- | --- |")
            for label, d in res["activity"].items():
                rates = [layer["spike_rate"] for layer in d["layers"]]
                page.add(f"| {label} | {np.mean(rates) if rates else 0:.3f} | "
                         f"{d['total_sops_per_sample']:.3g} |")
            page.add("")
        _section(page, "Spike activity", spikes)

    if "energy" in wanted:
        def energy() -> None:
            res = analyze_energy(models, x, images, e_ac=opts.e_ac, e_mac=opts.e_mac,
                                 activities=spikes_result.get("activities"), **common)
            page.add(f"SOPs x {opts.e_ac} pJ + analog first-layer MACs x {opts.e_mac} pJ vs "
                     f"the ANN's MACs x {opts.e_mac} pJ (45 nm, BNTT Supp. E), per sample.", "")
            page.image(_png(res["files"]), "energy")
            page.add("| model | SOPs | SNN energy (µJ) | ANN energy (µJ) | ANN / SNN |",
                     "| --- | --- | --- | --- | --- |")
            for label, t in res["tables"].items():
                tot = t["total"]
                page.add(f"| {label} | {tot['sops']:.3g} | {tot['snn_pj'] / 1e6:.4g} | "
                         f"{tot['ann_pj'] / 1e6:.4g} | {tot['ratio']:.2f} |")
            page.add("")
        _section(page, "Energy", energy)

    if "gamma" in wanted:
        def gamma() -> None:
            any_bntt = False
            for label, model in models.items():
                res = analyze_gamma(model, images / slug(label), threshold=opts.gamma_threshold,
                                    label=label)
                if res["available"]:
                    any_bntt = True
                    page.add(f"**{label}**: exit step {res['exit_step']} of "
                             f"{res['timesteps']} at threshold {opts.gamma_threshold}.", "")
                    page.image(_png(res["files"]), f"{label} gamma")
            if not any_bntt:
                page.note("No model has BNTT layers: gamma section skipped.")
        _section(page, "BNTT gamma through time", gamma)

    if "early-exit" in wanted:
        def early_exit() -> None:
            res = analyze_early_exit(models, x, y, images, thresholds=opts.thresholds, **common)
            if not res["available"]:
                page.note("No model has BNTT layers: early exit skipped.")
                return
            page.add("Accuracy when running only up to the exit step chosen by each gamma "
                     "threshold (BNTT Sec. 3.4, Fig. 7).", "")
            page.image(_png(res["files"]), "early exit")
            page.add(res["table"], "")
        _section(page, "Temporal early exit", early_exit)

    if "robustness" in wanted:
        def robustness() -> None:
            res = analyze_robustness(models, x, y, images, sigmas=opts.sigmas,
                                     epsilons=opts.epsilons, mean=info.mean, std=info.std,
                                     **common)
            space = "pixel space ([0, 1] images)" if info.mean is not None else "input space"
            page.add(f"Gaussian noise and SNN-crafted FGSM (surrogate gradients, eval mode) in "
                     f"{space} (BNTT Sec. 4.7, Fig. 8).", "")
            page.image(_png(res["files"]), "robustness")
        _section(page, "Robustness", robustness)

    if "fold" in wanted:
        def fold_section() -> None:
            any_mpbn = False
            for label, model in models.items():
                xb = x[:, :opts.batch_size] if x.dim() == len(info.input_shape) + 2 \
                    else x[:opts.batch_size]
                res = analyze_fold(model, xb, images / slug(label), label=label,
                                   color=colors.get(label))
                if not res["available"]:
                    continue
                any_mpbn = True
                mm = res["mismatch"]
                page.add(f"**{label}**: spike mismatch folded vs unfolded "
                         f"{mm['total_mismatches']} of {sum(mm['totals'])} "
                         f"(max logit difference {mm['max_output_diff']:.2e}).", "",
                         "| layer | kind | neurons/channels | lambda < 0 | lambda = 0 | "
                         "V~ mean ± std |", "| --- | --- | --- | --- | --- | --- |")
                for r in res["layers"]:
                    page.add(f"| {r['layer']} | {r['granularity']} | {r['n']} | "
                             f"{r['negative_lambda']} | {r['zero_lambda']} | "
                             f"{r['threshold_mean']:.3f} ± {r['threshold_std']:.3f} |")
                page.add("")
                page.image(_png(res["files"]), f"{label} folded thresholds")
            if not any_mpbn:
                page.note("No model has MPBN neurons: fold report skipped.")
        _section(page, "MPBN fold report", fold_section)


def _comparison(page: _Page, runs: Sequence[Run], labels: Sequence[str]) -> None:
    pairs = [(labels[0], runs[0], label, run)
             for run, label in zip(runs[1:], labels[1:], strict=True)]
    page.add("## Comparison with the baseline", "",
             f"Final test accuracy, variant − baseline (`{labels[0]}`), over the finished "
             "seeds: mean ± sample std (n seeds) of each run, the difference in points and its "
             "95% confidence interval by Welch's t (unequal variances, Welch–Satterthwaite "
             "degrees of freedom).", "",
             comparison_table(pairs), "",
             "Spike rate (spikes per neuron and step, measured in the last epoch's evaluation "
             "on the held-out split, or on the test set for runs without one), the same way:",
             "", comparison_table(pairs, key="spike_rate"), "",
             "Per seed (train time is the seed's training time in minutes, summed over "
             "resumes; the commit is the code that trained it, each in order where a resumed "
             "seed ran under several):", "",
             seeds_table(runs, labels), "")


def _sample(loaded: dict[str, tuple[nn.Module, dict[str, Any]]], page: _Page,
            opts: ReportOptions) -> tuple[Tensor | None, Tensor | None, Any]:
    for label, (_, config) in loaded.items():
        try:
            return load_test_sample(config, opts.n_samples, opts.seed, opts.device,
                                    opts.overrides)
        except Exception as error:
            page.note(f"{label}: test data unavailable ({type(error).__name__}: {error}).")
    return None, None, None


def _write(page: _Page, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.md"
    path.write_text("\n".join(page.lines).rstrip() + "\n")
    return path
