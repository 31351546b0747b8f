"""The ``mpbn`` command: parses arguments and calls :mod:`mpbn.engine`. Nothing else lives here.

    mpbn train [PRESET] [--set path=value ...] [--epochs N --lr X ...] [--seeds N] [--out DIR]
               [--import MODULE_OR_FILE.py ...]
    mpbn presets [-v]
    mpbn eval CKPT|RUN_DIR
    mpbn fold CKPT|RUN_DIR -o OUT_DIR [--nir [--nir-target nir|snntorch|norse]]

``--import`` brings a model or dataset of one's own (docs/OWN_MODEL.md): the config records
it, and ``eval``/``fold``/``--resume`` import it again (``--import`` there replaces it).

Bad input prints ``mpbn: error: ...`` (one line, what was wrong and what is valid) and exits
with status 2; a diverged run exits with status 1. ``MPBN_DEBUG=1`` shows tracebacks instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["main", "build_parser"]

# Explicit flags for the common fields (flat shorthands of config paths, parsed as text like
# --set values); everything else goes through --set path=value.
_FLAGS: list[tuple[str, str, str]] = [
    ("--model", "model", "model name (see mpbn.models.list_models())"),
    ("--dataset", "dataset", "dataset name (digits, cifar10, cifar100, ...)"),
    ("--data-root", "data_root", "dataset folder (default $MPBN_DATA/<dataset>)"),
    ("--epochs", "epochs", "training epochs"),
    ("--lr", "lr", "peak learning rate"),
    ("--batch-size", "batch_size", "global batch size"),
    ("--timesteps", "timesteps", "time steps T"),
    ("--norm", "norm", "norm after conv/linear layers: {model.norm}"),
    ("--mpbn", "mpbn", "membrane potential BN: {model.mpbn}"),
    ("--seeds", "seeds", "repeats (seed, seed+1, ...); mean and std are reported"),
    ("--seed", "seed", "base seed"),
    ("--device", "device", "auto, cpu, cuda, cuda:N"),
    ("--train-subset", "train_subset", "train on a stratified subset of this size"),
    ("--test-subset", "test_subset", "test on a stratified subset of this size"),
    ("--grad-checkpointing", "grad_checkpointing",
     "recompute the body in backward, N blocks per segment (0: off; saves memory at long T)"),
    ("--checkpoint-every", "checkpoint_every",
     "also write last.pt every N optimizer steps, from which --resume continues mid-epoch "
     "exactly (0: at epoch ends only)"),
]
_SWITCHES: list[tuple[str, str, str]] = [
    ("--amp", "amp", "bf16 autocast of training (CUDA or CPU; evaluation stays float32)"),
    ("--compile", "compile", "torch.compile the model"),
    ("--channels-last", "channels_last", "channels-last memory format"),
    ("--sync-norm", "sync_norm", "synchronize norm and MPBN statistics across DDP ranks"),
    ("--download", "download", "download missing dataset files"),
]


def _add_import_flag(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument("--import", dest="imports", action="append", default=None,
                        metavar="MODULE_OR_FILE.py", help=text)


_IMPORT_HELP = ("import a module or .py file of your own first: the models and datasets it "
                "registers (@mpbn.models.register_model, @mpbn.data.registry.register) become "
                "valid model.name / data.name values; may repeat; recorded in the run's config "
                "(docs/OWN_MODEL.md)")
_REIMPORT_HELP = ("a module or .py file of your own to import instead of those the run "
                  "recorded (e.g. the file moved); may repeat")


def _import_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``{"imports": [...]}`` for ``--import`` (files as absolute paths), else ``{}``."""
    from mpbn.engine.loading import resolve_imports

    imports = getattr(args, "imports", None)
    return {"imports": resolve_imports(imports)} if imports else {}


def _choices_text(path: str) -> str:
    from mpbn.engine.config import choices

    return ", ".join("none" if v is None else str(v) for v in choices()[path])


class CLIError(Exception):
    """A usage error; printed as ``mpbn: error: ...`` with exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mpbn", description="Spiking neural networks with Membrane Potential BN: train, "
        "evaluate and fold. `mpbn train` with no arguments runs the demo.")
    # From the leaf module mpbn.version (cli.py may not import the top-level package,
    # ARCHITECTURE.md; the installed metadata is absent when run from a source tree).
    from mpbn.version import __version__

    parser.add_argument("--version", action="version", version=f"mpbn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = sub.add_parser("train", help="train a preset or the default demo run",
                           description="Train PRESET (see `mpbn presets`), or the demo run "
                           "(small spiking CNN with MPBN on bundled digits) when none is given.")
    train.add_argument("preset", nargs="?", default=None, help="preset name (default: demo)")
    # action="extend": every --set counts, in order, so a later value wins per key.
    train.add_argument("--set", nargs="+", action="extend", default=[], metavar="PATH=VALUE",
                       help="override any config field by its path or flat name, e.g. --set "
                       "optim.lr=0.05 model.neuron.decay=0.5 epochs=2 (`mpbn presets -v` "
                       "lists them); may repeat, the later value wins")
    for flag, dest, text in _FLAGS:
        for path in ("model.norm", "model.mpbn"):
            text = text.replace("{" + path + "}", _choices_text(path)) if "{" in text else text
        train.add_argument(flag, dest=dest, default=None, metavar="VALUE", help=text)
    for flag, dest, text in _SWITCHES:
        train.add_argument(flag, dest=dest, action="store_true", default=None, help=text)
    train.add_argument("--no-fold", dest="fold", action="store_false", default=None,
                       help="skip folding MPBN and evaluating the folded model")
    train.add_argument("--out", default=None, help="run directory (default runs/<name>-<time>)")
    train.add_argument("--force", action="store_true", help="write into a non-empty --out")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its last checkpoints")
    train.add_argument("--quiet", action="store_true", help="no progress bars or epoch lines")
    train.add_argument("--stop-after", type=int, default=None, metavar="N",
                       help="stop after N epochs in this invocation (continue with --resume)")
    _add_import_flag(train, _IMPORT_HELP)

    presets = sub.add_parser("presets", help="list the experiment presets")
    presets.add_argument("-v", "--verbose", action="store_true",
                         help="document every --set path and show each preset's settings")

    evaluate = sub.add_parser("eval", help="evaluate a checkpoint, unfolded and folded")
    evaluate.add_argument("checkpoint", help="checkpoint file, run folder (its seed's last.pt) "
                          "or folded model folder")
    evaluate.add_argument("--data-root", default=None)
    evaluate.add_argument("--device", default="cpu")
    evaluate.add_argument("--set", nargs="+", action="extend", default=[],
                          metavar="PATH=VALUE",
                          help="override data fields (e.g. data.test_subset=1000); may repeat")
    evaluate.add_argument("--fold-check", choices=("float64",), default=None,
                          help="also recompute the fold's spike mismatch in float64 (0 there: "
                          "the float32 mismatches are rounding at the threshold)")
    _add_import_flag(evaluate, _REIMPORT_HELP)

    fold = sub.add_parser("fold", help="write the folded deploy model of a checkpoint")
    fold.add_argument("checkpoint", help="checkpoint file or run folder (its seed's last.pt)")
    fold.add_argument("-o", "--out", required=True, help="output folder")
    fold.add_argument("--force", action="store_true", help="overwrite existing files")
    fold.add_argument("--nir", action="store_true", help="also export NIR (needs mpbn.export)")
    fold.add_argument("--nir-target", default="nir", choices=("nir", "snntorch", "norse"),
                      help="the NIR importer the graph is written for (docs/MODELS.md)")
    _add_import_flag(fold, _REIMPORT_HELP)

    try:  # analysis commands plug in here when that package is present
        from mpbn.analysis.cli import register
    except ImportError:
        pass
    else:
        register(sub)
    return parser


# ------------------------------------------------------------------------------------------


def _train_config(args: argparse.Namespace) -> Any:
    from mpbn.engine.config import TrainConfig, apply_overrides, parse_set
    from mpbn.engine.presets import get_preset

    # Flags are text like --set values and are parsed by the same one function (which is
    # where "none" becomes None); flags win over --set.
    flags = [f"{dest}={getattr(args, dest)}" for _, dest, _ in _FLAGS
             if getattr(args, dest) is not None]
    flags += [f"{dest}=true" for _, dest, _ in _SWITCHES if getattr(args, dest)]
    if args.fold is False:
        flags.append("fold=false")
    overrides = {**parse_set(args.set), **parse_set(flags), **_import_overrides(args)}
    if args.resume and args.preset is None:
        # Resuming without a preset continues exactly the saved configuration.
        import json

        if args.out is None:
            raise CLIError("--resume needs --out RUN_DIR, the run directory to continue")
        saved = Path(args.out) / "config.json"
        if not saved.exists():
            raise CLIError(f"cannot resume: {saved} does not exist")
        base = TrainConfig.from_dict(json.loads(saved.read_text()))
    else:
        base = get_preset(args.preset)
    return apply_overrides(base, overrides)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _mismatch_note(summary: dict[str, Any]) -> str:
    """What the float32 spike mismatches under the summary table mean, and where a seed
    recorded no float64 recount (records from before the engine made one), how to get it."""
    counts = summary["spike_mismatch"]
    recounts = summary.get("spike_mismatch_float64") or [None] * len(counts)
    recounted = all(exact is not None for count, exact in zip(counts, recounts, strict=True)
                    if count)
    return ("spike mismatches of the folded model are counted in float32, where a potential "
            "within rounding of its threshold can fire on one side only; "
            + ("0 in float64 means the fold is exact" if recounted else
               "`mpbn eval RUN --fold-check float64` recomputes them in float64"))


def format_summary(summary: dict[str, Any]) -> str:
    """The short table printed after training: unfolded/folded accuracy, mismatch, time."""
    from mpbn.analysis.compare import mismatch_cell
    from mpbn.engine.metrics import mean_std

    count = len(summary["seeds"])
    # With a held-out split the per-epoch column is the held-out accuracy (the test set was
    # evaluated once, at the end); older summaries have no such key.
    held_out = any(v is not None for v in summary.get("final_val_acc", [None] * count))
    best_key, best_label = (("best_val_acc", "best held-out") if held_out
                            else ("best_test_acc", "best acc"))
    flip = summary.get("test_acc_flip", [None] * count)
    rows = [("seed", "acc unfolded", "acc folded", best_label, "spike mismatch", "time")]
    if any(v is not None for v in flip):
        rows[0] = (*rows[0][:3], "flip TTA", *rows[0][3:])
    for i, seed in enumerate(summary["seeds"]):
        mismatch = summary["spike_mismatch"][i]
        rate = summary.get("spike_mismatch_rate", [None] * count)[i]
        exact = summary.get("spike_mismatch_float64", [None] * count)[i]
        row = [str(seed), _percent(summary["final_test_acc"][i]),
               _percent(summary["folded_test_acc"][i]), _percent(summary[best_key][i]),
               mismatch_cell(mismatch, exact, rate), f"{summary['train_time'][i]:.1f} s"]
        if len(rows[0]) == 7:
            row.insert(3, _percent(flip[i]))
        rows.append(tuple(row))
    if len(summary["seeds"]) > 1:
        folded = [v for v in summary["folded_test_acc"] if v is not None]
        fm, fs = mean_std(folded) if folded else (None, None)
        rows.append(("mean±std", f"{100 * summary['mean']:.2f} ± {100 * summary['std']:.2f}",
                     "-" if fm is None else f"{100 * fm:.2f} ± {100 * fs:.2f}",
                     *([""] * (len(rows[0]) - 3))))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    return "\n".join(lines)


def cmd_train(args: argparse.Namespace) -> int:
    from mpbn.engine.train import RunOptions, run

    cfg = _train_config(args)
    options = RunOptions(out=args.out, force=args.force, resume=args.resume, quiet=args.quiet,
                         stop_after=args.stop_after)
    summary = run(cfg, options)
    if summary is None:
        return 0
    if int(os.environ.get("RANK", "0")) == 0:
        print(format_summary(summary))
        if any(summary.get("spike_mismatch") or []):
            print(_mismatch_note(summary))
        print(f"summary: {Path(summary['run_dir']) / 'summary.json'}")
    return 0


def _value_text(value: Any) -> str:
    return "none" if value is None else str(value)


def _print_config_paths() -> None:
    from mpbn.engine.config import config_fields

    print("--set paths (PATH [flat name]  TYPE = DEFAULT: meaning; * may change on --resume):")
    for f in config_fields():
        short = f" [{f.shorthand}]" if f.shorthand else ""
        valid = (f" One of: {', '.join(_value_text(v) for v in f.choices)}."
                 if f.choices else "")
        print(f"  {f.path}{short}{' *' if f.runtime else ''}  {f.type} = "
              f"{_value_text(f.default)}: {f.doc}{valid}")
    print()


def cmd_presets(args: argparse.Namespace) -> int:
    from mpbn.engine.config import flatten
    from mpbn.engine.presets import PRESETS, get_preset

    if args.verbose:
        _print_config_paths()
    default = flatten(get_preset(None).to_dict())
    width = max(len(name) for name in PRESETS)
    print(f"{'(none)':<{width}}  {get_preset(None).description}")
    for name in sorted(PRESETS):
        print(f"{name:<{width}}  {PRESETS[name]['description']}")
        if args.verbose:
            values = flatten(get_preset(name).to_dict())
            print("    " + ", ".join(f"{k}={_value_text(v)}" for k, v in values.items()
                                     if k not in ("name", "description") and v != default[k]))
    return 0


def _checkpoint_path(text: str) -> Path:
    """The file to load for a CHECKPOINT argument: as given, or a run folder's one checkpoint.

    A run folder (what `mpbn train` prints) stands for its seed's ``last.pt``, the model its
    summary's final and folded accuracies are of (``best.pt`` where no ``last.pt`` is left);
    a folder with several seeds is an error listing them. Folded model folders pass through.
    """
    path = Path(text)
    if not path.is_dir() or (path / "model.json").is_file():
        return path
    found = [next((d / n for n in ("last.pt", "best.pt") if (d / n).is_file()), None)
             for d in sorted(path.glob("seed_*")) if d.is_dir()]
    found = [f for f in found if f is not None]
    if len(found) == 1:
        return found[0]
    if not found:
        raise CLIError(f"{path} is a folder with no checkpoint: give a checkpoint file, a run "
                       "folder (with seed_*/last.pt) or a folder written by `mpbn fold`")
    raise CLIError(f"run folder {path} has {len(found)} seeds; give one checkpoint: "
                   f"{', '.join(str(f) for f in found)}")


def cmd_eval(args: argparse.Namespace) -> int:
    from mpbn.analysis.compare import mismatch_cell
    from mpbn.engine.config import parse_set
    from mpbn.engine.distributed import DistInfo, pick_device
    from mpbn.engine.evaluation import evaluate
    from mpbn.engine.loading import load_model
    from mpbn.engine.train import build_loaders, float64_spike_mismatch, fold_and_evaluate

    overrides = {**parse_set(args.set), **_import_overrides(args)}
    if args.data_root is not None:
        overrides["data.root"] = args.data_root
    device = pick_device(args.device, 0)
    checkpoint = _checkpoint_path(args.checkpoint)
    model, cfg, ckpt = load_model(checkpoint, device, overrides)
    dist = DistInfo(device=device)
    _, test_loader, info = build_loaders(cfg, int(ckpt.get("seed", cfg.run.seed)), dist)
    unfolded = evaluate(model, test_loader, cfg, dist)
    _, folded, mismatch = fold_and_evaluate(model, test_loader, cfg, dist)
    mid = ckpt.get("mid_epoch")
    when = (f"epoch {ckpt['epoch']}" if mid is None else
            f"mid-epoch: epoch {mid['epoch']} at step {mid['steps']} of "
            f"{mid['steps_per_epoch']}, written by --checkpoint-every")
    print(f"checkpoint      {checkpoint} ({when}, {cfg.model.name} on "
          f"{cfg.data.name}, {info.num_test} test samples)")
    print(f"acc unfolded    {_percent(unfolded['test_acc'])}")
    print(f"acc folded      {_percent(folded['test_acc'])}")
    print(f"spike mismatch  {mismatch_cell(mismatch.total_mismatches, rate=mismatch.rate)} of "
          f"{sum(mismatch.totals):,} spike entries on the first test batch (float32)")
    if args.fold_check == "float64":
        exact = float64_spike_mismatch(model, test_loader, cfg)
        verdict = ("the float32 mismatches are rounding at the threshold, not a folding error"
                   if exact.total_mismatches == 0 else "the fold is not exact for this model")
        print(f"in float64      {exact.total_mismatches} of {sum(exact.totals):,}: {verdict}")
    elif mismatch.total_mismatches:
        print("                (float32 rounding at the threshold? `--fold-check float64` "
              "recomputes them in float64)")
    print(f"spike rate      {unfolded['spike_rate']:.4f}")
    return 0


def _nir_model(folded: Any, data_info: dict[str, Any]) -> tuple[Any, tuple[int, ...] | None]:
    """What ``to_nir`` walks and its ``input_shape``: a zoo model as it is; a model of one's
    own with the per-step sample shape (``to_nir`` starts its graph after a leading
    ``DirectEncoding``: the input is then the image at every step, as for direct encoding)."""
    from mpbn.models import SpikingNet

    if isinstance(folded, SpikingNet):
        return folded, None
    return folded, tuple(int(s) for s in data_info["input_shape"])  # to_nir skips DirectEncoding


def cmd_fold(args: argparse.Namespace) -> int:
    from mpbn.engine.deploy import export_folded, preprocessing
    from mpbn.engine.loading import load_model
    from mpbn.layers.fold import fold

    out = Path(args.out)
    targets = [out / "model.safetensors", out / "model.json"] + ([out / "model.nir"]
                                                                 if args.nir else [])
    if any(t.exists() for t in targets) and not args.force:
        raise CLIError(f"{out} already holds a folded model; use --force to overwrite")
    checkpoint = _checkpoint_path(args.checkpoint)
    model, cfg, ckpt = load_model(checkpoint, overrides=_import_overrides(args))
    folded = fold(model)
    graph = None
    if args.nir:  # before writing anything, so a model NIR cannot express leaves no files
        from mpbn.export import NIRExportError, to_nir

        try:
            walked, input_shape = _nir_model(folded, ckpt["data_info"])
            graph = to_nir(walked, args.nir_target, input_shape=input_shape,
                           preprocessing=preprocessing(cfg, ckpt["data_info"]))
        except NIRExportError as exc:
            raise CLIError(f"cannot export to NIR: {exc}") from None
        except ImportError as exc:
            raise CLIError(f"--nir needs the nir package: pip install 'mpbn[export]' ({exc})"
                           ) from None
    try:
        weights, meta = export_folded(folded, cfg, ckpt["data_info"], out,
                                      extra={"source_checkpoint": str(checkpoint),
                                             "epoch": ckpt["epoch"]})
        print(f"wrote {weights} and {meta}")
        if graph is not None:
            from mpbn.export import write_nir

            write_nir(graph, out / "model.nir")
            print(f"wrote {out / 'model.nir'}")
    except OSError as error:
        where = error.filename if error.filename is not None else out
        raise CLIError(f"cannot write the output folder {out}: {error.strerror or error} "
                       f"({where}); choose another -o") from None
    return 0


COMMANDS = {"train": cmd_train, "presets": cmd_presets, "eval": cmd_eval, "fold": cmd_fold}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mpbn`` script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    handler = COMMANDS.get(args.command) or getattr(args, "func", None)
    if handler is None:
        parser.error(f"unknown command {args.command!r}")
    from mpbn.data.download import DownloadError
    from mpbn.engine.checkpoint import CheckpointError
    from mpbn.engine.train import TrainingDiverged

    try:
        if getattr(args, "imports", None):
            # Any command that takes --import runs it first (eval/fold/train record it too).
            from mpbn.engine.loading import import_user_code

            import_user_code(_import_overrides(args)["imports"])
        return int(handler(args) or 0)
    except TrainingDiverged as error:
        print(f"mpbn: error: {error}", file=sys.stderr)
        return 1
    except (CLIError, ValueError, FileNotFoundError, CheckpointError, KeyError,
            DownloadError) as error:
        if os.environ.get("MPBN_DEBUG"):
            raise
        message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        if isinstance(error, KeyError):
            message = f"missing entry {message}"
        print(f"mpbn: error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `mpbn presets | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("mpbn: interrupted (resume with `mpbn train --resume --out RUN_DIR`)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
