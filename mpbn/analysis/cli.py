"""``mpbn analyze ...`` and ``mpbn report``: thin wrappers over :mod:`mpbn.analysis`.

    mpbn analyze curves RUN_DIR... --out DIR
    mpbn analyze landscape RUN_DIR... --out DIR [--n-samples N --n-points K --alpha-min A ...]
    mpbn analyze spikes|energy|early-exit|robustness RUN_DIR... --out DIR
    mpbn analyze gamma|fold-report RUN_DIR... --out DIR
    mpbn report RUN_DIR... --out DIR [--compare]

Every command but ``curves`` takes ``--data-root DIR`` for data that moved since training.
``RUN_DIR`` is an ``mpbn train`` output folder (its first seed's checkpoint is used) or a
checkpoint file ``*.pt``. ``mpbn.cli`` calls :func:`register`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from mpbn.analysis import defaults

__all__ = ["register"]


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _common(p: argparse.ArgumentParser, models: bool = True) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (or .pt checkpoints)")
    p.add_argument("-o", "--out", required=True, help="output folder for plots and numbers")
    if models:
        p.add_argument("--n-samples", type=int, default=defaults.N_SAMPLES,
                       help="test samples to evaluate on (bounds the cost; default "
                       "%(default)s)")
        p.add_argument("--batch-size", type=int, default=defaults.BATCH_SIZE,
                       help="samples per forward pass (default %(default)s)")
        p.add_argument("--checkpoint", choices=("last", "best"), default=defaults.CHECKPOINT)
        p.add_argument("--device", default=defaults.DEVICE)
        p.add_argument("--seed", type=int, default=defaults.SEED,
                       help="seed of the sample, directions, noise, encoders")
        p.add_argument("--data-root", default=None, metavar="DIR",
                       help="dataset folder, instead of the one the run recorded (data moved)")
        p.add_argument("--import", dest="imports", action="append", default=None,
                       metavar="MODULE_OR_FILE.py",
                       help="a module or .py file of your own to import instead of those the "
                       "run recorded (e.g. the file moved); may repeat (docs/OWN_MODEL.md)")


def run_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Config overrides from ``--data-root`` and ``--import`` (files as absolute paths)."""
    from mpbn.engine.loading import resolve_imports

    overrides = data_overrides(args.data_root)
    if getattr(args, "imports", None):
        overrides["imports"] = resolve_imports(args.imports)
    return overrides


def data_overrides(data_root: str | None) -> dict[str, Any]:
    """``{"data.root": DIR}`` for ``--data-root`` (checked to be a folder), else ``{}``."""
    if data_root is None:
        return {}
    root = Path(data_root).expanduser()
    if root.is_file():
        raise FileNotFoundError(f"--data-root {data_root} is a file, not a folder; give the "
                                "folder that holds the dataset files")
    if not root.is_dir():
        raise FileNotFoundError(f"--data-root {data_root} does not exist; give the folder the "
                                "dataset files are in now")
    return {"data.root": str(root)}


def _load(args: argparse.Namespace) -> tuple[dict[str, nn.Module], Tensor, Tensor, Any]:
    """Models of every RUN_DIR and a test sample of the first one's dataset; models are
    labelled as in ``mpbn report`` (:func:`mpbn.analysis.labels.run_labels`)."""
    from mpbn.analysis.io import load_run, load_test_sample, model_from_checkpoint
    from mpbn.analysis.labels import run_labels

    overrides = run_overrides(args)
    models: dict[str, nn.Module] = {}
    configs = []
    folders = [load_run(Path(e), prefer=args.checkpoint) for e in args.runs
               if not Path(e).is_file()]
    folder_labels = iter(run_labels(folders))
    for entry in args.runs:
        path = Path(entry)
        if path.is_file():
            label, ckpt = path.parent.parent.name or path.stem, path
        else:
            run, label = folders.pop(0), next(folder_labels)
            if not run.checkpoints:
                raise FileNotFoundError(f"no checkpoint under {path}/seed_*/")
            ckpt = run.checkpoints[min(run.checkpoints)]
        if label in models:
            label = f"{label} ({path})"
        models[label], config = model_from_checkpoint(ckpt, args.device, overrides)
        configs.append(config)
    try:
        x, y, info = load_test_sample(configs[0], args.n_samples, args.seed, args.device,
                                      overrides)
    except FileNotFoundError as error:
        if "data.root" in overrides:
            raise
        raise FileNotFoundError(f"{str(error).strip().splitlines()[0]} (the data root the run "
                                "recorded); if the data moved, give its folder with --data-root"
                                ) from None
    return models, x, y, info


def _announced(name: str, command: Any) -> Any:
    """``command`` with a line when it starts (what it loads and computes) and one with its
    time when it ends: a landscape or robustness sweep of a large model takes minutes."""
    def run(args: argparse.Namespace) -> int:
        runs = ", ".join(str(r) for r in args.runs)
        print(f"analyze {name}: {runs} ...", flush=True)
        start = time.perf_counter()
        status = command(args)
        print(f"analyze {name}: done in {time.perf_counter() - start:.1f} s", flush=True)
        return status

    return run


def _done(result: dict[str, Any], out: str) -> int:
    files = result.get("files", [])
    print(f"wrote {len(files)} plot file(s) and the numbers to {out}")
    return 0


def _curves(args: argparse.Namespace) -> int:
    from mpbn.analysis.curves import analyze_curves

    return _done(analyze_curves(args.runs, args.out, keys=args.keys), args.out)


def _landscape(args: argparse.Namespace) -> int:
    from mpbn.analysis.landscape import analyze_landscape

    models, x, y, _ = _load(args)
    return _done(analyze_landscape(models, x, y, args.out, n_points=args.n_points,
                                   alpha_range=(args.alpha_min, args.alpha_max), seed=args.seed,
                                   batch_size=args.batch_size), args.out)


def _spikes(args: argparse.Namespace) -> int:
    from mpbn.analysis.spikes import analyze_spikes

    models, x, _, _ = _load(args)
    return _done(analyze_spikes(models, x, args.out, batch_size=args.batch_size,
                                seed=args.seed), args.out)


def _energy(args: argparse.Namespace) -> int:
    from mpbn.analysis.energy import analyze_energy

    models, x, _, _ = _load(args)
    result = analyze_energy(models, x, args.out, e_ac=args.e_ac, e_mac=args.e_mac,
                            batch_size=args.batch_size, seed=args.seed)
    for label, table in result["tables"].items():
        t = table["total"]
        print(f"{label}: SOPs {t['sops']:.4g}, SNN {t['snn_pj'] / 1e6:.4g} uJ, "
              f"ANN {t['ann_pj'] / 1e6:.4g} uJ per sample (ANN/SNN {t['ratio']:.2f})")
    return _done(result, args.out)


def _gamma(args: argparse.Namespace) -> int:
    from mpbn.analysis.gamma import analyze_gamma
    from mpbn.analysis.labels import slug

    args.n_samples = 1
    models, _, _, _ = _load(args)
    for label, model in models.items():
        out = Path(args.out) / slug(label) if len(models) > 1 else Path(args.out)
        result = analyze_gamma(model, out, threshold=args.threshold, absolute=args.abs,
                               label=label)
        if not result["available"]:
            print(f"{label}: {result['reason']}; nothing to plot")
            continue
        print(f"{label}: exit step {result['exit_step']} of {result['timesteps']} at gamma "
              f"threshold {args.threshold}")
    return 0


def _early_exit(args: argparse.Namespace) -> int:
    from mpbn.analysis.gamma import analyze_early_exit

    models, x, y, _ = _load(args)
    result = analyze_early_exit(models, x, y, args.out, thresholds=args.thresholds,
                                absolute=args.abs, batch_size=args.batch_size, seed=args.seed)
    if not result["available"]:
        print(f"{result['reason']}; nothing to plot")
        return 0
    print(result["table"])
    for label in result["skipped"]:
        print(f"{label}: no BNTT layers; skipped")
    return _done(result, args.out)


def _robustness(args: argparse.Namespace) -> int:
    from mpbn.analysis.robustness import analyze_robustness

    models, x, y, info = _load(args)
    space = {} if args.input_space else {"mean": info.mean, "std": info.std}
    return _done(analyze_robustness(models, x, y, args.out, sigmas=args.sigmas,
                                    epsilons=args.epsilons, batch_size=args.batch_size,
                                    seed=args.seed, **space), args.out)


def _fold(args: argparse.Namespace) -> int:
    from mpbn.analysis.fold_report import analyze_fold
    from mpbn.analysis.labels import slug

    models, x, _, info = _load(args)
    # The spike mismatch runs on one batch, as in `mpbn report`: the first --batch-size samples.
    xb = x[:, :args.batch_size] if x.dim() == len(info.input_shape) + 2 else x[:args.batch_size]
    for label, model in models.items():
        out = Path(args.out) / slug(label) if len(models) > 1 else Path(args.out)
        result = analyze_fold(model, xb, out, label=label)
        if not result["available"]:
            print(f"{label}: {result['reason']}; nothing to fold")
            continue
        mm = result["mismatch"]
        print(f"{label}: {len(result['layers'])} MPBN layer(s), "
              f"{sum(r['negative_lambda'] for r in result['layers'])} negative and "
              f"{sum(r['zero_lambda'] for r in result['layers'])} zero lambdas, spike mismatch "
              f"{mm['total_mismatches']} of {sum(mm['totals'])}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from mpbn.analysis.report import SECTIONS, ReportOptions, build_report

    skip = set(args.skip or [])
    unknown = skip - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown section(s) {sorted(unknown)}; valid: {', '.join(SECTIONS)}")
    options = ReportOptions(n_samples=args.n_samples, batch_size=args.batch_size,
                            seed=args.seed, checkpoint=args.checkpoint, device=args.device,
                            landscape_points=args.n_points,
                            alpha_range=(args.alpha_min, args.alpha_max),
                            sigmas=args.sigmas, epsilons=args.epsilons,
                            overrides=run_overrides(args), compare=args.compare,
                            variables=args.vary,
                            sections=[s for s in SECTIONS if s not in skip])
    path = build_report(args.runs, args.out, options)
    print(f"wrote {path}")
    return 0


def _csv(values: Any) -> str:
    return ",".join(f"{v:g}" for v in values)


def _landscape_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-points", type=int, default=defaults.LANDSCAPE_POINTS,
                   help="landscape points (default %(default)s)")
    p.add_argument("--alpha-min", type=float, default=defaults.ALPHA_RANGE[0])
    p.add_argument("--alpha-max", type=float, default=defaults.ALPHA_RANGE[1])


def _robustness_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sigmas", type=_floats, default=list(defaults.SIGMAS),
                   help=f"comma-separated noise std in pixel units (default "
                   f"{_csv(defaults.SIGMAS)})")
    p.add_argument("--epsilons", type=_floats, default=list(defaults.EPSILONS),
                   help=f"comma-separated FGSM epsilons in pixel units (default "
                   f"{_csv(defaults.EPSILONS)})")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``analyze`` (with its sub-commands) and ``report`` to the ``mpbn`` parser."""
    analyze = subparsers.add_parser("analyze", help="plots and numbers of trained runs",
                                    description="Analyses of MPBN/BNTT runs; each writes "
                                    "PNG/SVG plots and JSON/CSV numbers to --out.")
    sub = analyze.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True)

    p = sub.add_parser("curves", help="held-out (or test) accuracy/loss per epoch, mean ± std "
                       "(MPBN Fig. 2)")
    _common(p, models=False)
    p.add_argument("--keys", nargs="+", default=None,
                   help="metrics.jsonl fields to plot (default: val_acc val_loss for runs with "
                   "a held-out split, test_acc test_loss for runs without)")
    p.set_defaults(func=_announced("curves", _curves))

    p = sub.add_parser("landscape", help="1D filter-normalized loss landscape (MPBN Fig. 3)")
    _common(p)
    _landscape_options(p)
    p.set_defaults(func=_announced("landscape", _landscape))

    p = sub.add_parser("spikes", help="spike rate per layer and step, SOPs (BNTT Figs. 1, 5)")
    _common(p)
    p.set_defaults(func=_announced("spikes", _spikes))

    p = sub.add_parser("energy", help="SNN accumulates vs ANN MACs energy (BNTT Supp. E)")
    _common(p)
    p.add_argument("--e-ac", type=float, default=defaults.E_AC_PJ,
                   help="pJ per accumulate (45 nm: %(default)s)")
    p.add_argument("--e-mac", type=float, default=defaults.E_MAC_PJ,
                   help="pJ per MAC (45 nm: %(default)s)")
    p.set_defaults(func=_announced("energy", _energy))

    p = sub.add_parser("gamma", help="BNTT gamma through time and exit step (BNTT Figs. 4, 6)")
    _common(p)
    p.add_argument("--threshold", type=float, default=defaults.GAMMA_THRESHOLD,
                   help="exit threshold on the channel-averaged gamma (default %(default)s)")
    p.add_argument("--abs", action="store_true", help="average |gamma| instead of gamma")
    p.set_defaults(func=_announced("gamma", _gamma))

    p = sub.add_parser("early-exit", help="accuracy vs gamma threshold / exit step (BNTT Fig. 7)")
    _common(p)
    p.add_argument("--thresholds", type=_floats, default=list(defaults.EXIT_THRESHOLDS),
                   help="comma-separated gamma thresholds (default "
                   f"{_csv(defaults.EXIT_THRESHOLDS)})")
    p.add_argument("--abs", action="store_true", help="average |gamma| instead of gamma")
    p.set_defaults(func=_announced("early-exit", _early_exit))

    p = sub.add_parser("robustness", help="Gaussian noise and FGSM accuracy (BNTT Fig. 8)")
    _common(p)
    _robustness_options(p)
    p.add_argument("--input-space", action="store_true",
                   help="perturb the normalized model input instead of pixels")
    p.set_defaults(func=_announced("robustness", _robustness))

    p = sub.add_parser("fold-report", help="folded MPBN thresholds and spike mismatch")
    _common(p)
    p.set_defaults(func=_announced("fold", _fold))

    p = subparsers.add_parser("report", help="one markdown page with every analysis of runs")
    _common(p)
    _landscape_options(p)
    _robustness_options(p)
    p.add_argument("--compare", action="store_true",
                   help="compare every run with the first (the baseline): final test accuracy "
                   "mean ± std, the difference with a 95%% Welch interval, a per-seed table; "
                   "warns when a variant differs from the baseline in more than one config "
                   "value (or than --vary)")
    p.add_argument("--vary", nargs="+", default=None, metavar="CONFIG_PATH",
                   help="the config paths the comparison is about (e.g. model.mpbn): a variant "
                   "that differs from the baseline in any other path gets a warning")
    p.add_argument("--skip", nargs="+", action="extend", metavar="SECTION",
                   help="sections to leave out: curves, landscape, spikes, energy, gamma, "
                   "early-exit, robustness, fold (may be given more than once)")
    p.set_defaults(func=_report)
