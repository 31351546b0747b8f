"""The training loop, as importable functions that read top to bottom.

``run(config)`` -> for each seed ``train_seed`` -> set-up (data, model, optimizer, schedule,
resume) -> for each epoch ``train_one_epoch`` and ``evaluate`` -> checkpoint -> after the last
epoch fold MPBN into thresholds and evaluate the folded model. The run directory (layout,
``--force``/``--resume`` checks, summary) is :mod:`mpbn.engine.rundir`; evaluation is
:mod:`mpbn.engine.evaluation`; config -> model is :mod:`mpbn.engine.loading`.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mpbn.engine import rundir
from mpbn.engine.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from mpbn.engine.compiling import compile_model
from mpbn.engine.config import ConfigError, TrainConfig
from mpbn.engine.deploy import data_info_record
from mpbn.engine.distributed import (
    DistInfo,
    all_reduce_sum,
    cleanup_distributed,
    convert_sync_norms,
    setup_distributed,
)
from mpbn.engine.divergence import DivergenceCheck, TrainingDiverged, check_payload_finite
from mpbn.engine.ema import WeightEMA
from mpbn.engine.evaluation import (
    FlipAveraged,
    evaluate,
    float64_spike_mismatch,
    fold_and_evaluate,
    prepare_input,
)
from mpbn.engine.loading import build_model, load_model, load_state_or_explain
from mpbn.engine.metrics import MetricsWriter, git_commit
from mpbn.engine.optim import build_optimizer, build_scheduler, lr_factor, param_groups
from mpbn.engine.rundir import SeedResult
from mpbn.layers.fold import SpikeMismatch

__all__ = [
    "RunOptions", "SeedResult", "TrainingDiverged", "run", "train_seed", "train_one_epoch",
    "evaluate", "build_model", "build_loaders", "build_splits", "build_optimizer",
    "build_scheduler", "lr_factor", "param_groups", "fold_and_evaluate", "float64_spike_mismatch",
    "check_names", "resumable_mid_epoch", "autocast",
    "load_model_from_checkpoint",
]


@dataclass
class RunOptions:
    """How to execute a run (not part of the experiment's identity).

    Attributes:
        out: Run directory; default ``runs/<name>-<timestamp>``.
        force: Allow writing into an existing non-empty ``out``.
        resume: Continue the run in ``out`` from its ``last.pt`` checkpoints.
        quiet: No progress bars or per-epoch lines.
        stop_after: Train at most this many epochs in this invocation, then return (used to
            simulate a killed run; the next ``resume`` continues).
        hooks: Callables ``hook(event, **info)`` called at ``"step"`` (with ``loss``, before
            the backward pass; a returned tensor replaces the loss), ``"after_step"`` (with
            ``model``, the plain model, after the optimizer step: an exploration's own weight
            averages) and ``"epoch_end"`` (with ``model``); tests use them to inject faults.
    """

    out: str | Path | None = None
    force: bool = False
    resume: bool = False
    quiet: bool = False
    stop_after: int | None = None
    hooks: list[Any] = field(default_factory=list)


# ------------------------------------------------------------------------------------------
# a run: several seeds, one summary


def run(cfg: TrainConfig, options: RunOptions | None = None) -> dict[str, Any] | None:
    """Train ``cfg.run.seeds`` seeds and write ``summary.json``; returns the summary.

    Returns ``None`` when ``options.stop_after`` stopped the run before the end.
    """
    options = options or RunOptions()
    # The code this process imported: read once, now, since HEAD may move while it trains
    # (a commit made during a long run must not be credited with it).
    commit = git_commit()
    cfg.validate()
    check_names(cfg)
    dist = setup_distributed(cfg.run.device)
    run_dir: Path | None = None
    created = False
    finished = False
    try:
        created = not options.resume and not (
            Path(options.out).exists() if options.out is not None else False)
        run_dir = rundir.prepare_run_dir(cfg, options.out, force=options.force,
                                         resume=options.resume, dist=dist)
        if dist.is_primary and not options.quiet:
            print(run_header(cfg, run_dir, dist), flush=True)
        results: list[SeedResult] = []
        for i in range(cfg.run.seeds):
            seed = cfg.run.seed + i
            result = train_seed(cfg, seed, rundir.seed_dir(run_dir, seed), dist, options,
                                commit=commit)
            if result is None:
                finished = True
                return None
            results.append(result)
        summary = rundir.summarize(cfg, results, commit=commit)
        if dist.is_primary:
            rundir.write_summary(run_dir, summary)
        summary["run_dir"] = str(run_dir)
        finished = True
        return summary
    except (ConfigError, ValueError, FileNotFoundError):
        # A set-up error (bad option, missing data) before any epoch: leave no empty run
        # directory behind, so fixing the option and re-running needs no --force.
        if created and run_dir is not None and dist.is_primary:
            rundir.remove_if_untrained(run_dir)
        raise
    finally:
        cleanup_distributed(synchronize=finished)


def check_names(cfg: TrainConfig) -> None:
    """Import the config's ``imports`` (code of one's own), then one-line errors for an
    unknown model or dataset, before anything is written."""
    import difflib

    from mpbn.data import list_datasets
    from mpbn.engine.loading import check_builder_arguments, import_user_code
    from mpbn.models import list_models

    import_user_code(cfg.imports)
    for kind, name, valid, decorator in (
            ("model", cfg.model.name, list_models(), "@mpbn.models.register_model"),
            ("dataset", cfg.data.name.lower(), list_datasets(),
             '@mpbn.data.registry.register("NAME")')):
        if name not in valid:
            close = difflib.get_close_matches(name, valid, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"unknown {kind} {name!r}{hint}; valid: {', '.join(valid)}; for "
                              f"one of your own, --import the .py file that registers it with "
                              f"{decorator} (docs/OWN_MODEL.md)")
    check_builder_arguments(cfg)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "es" if word.endswith("s") else "s")


def _tensorboard_note() -> str:
    import importlib.util

    if importlib.util.find_spec("tensorboard") is not None:
        return "TensorBoard logs in seed_*/tensorboard"
    return "TensorBoard not installed: pip install mpbn[tensorboard]"


def run_header(cfg: TrainConfig, run_dir: Path | str, dist: DistInfo) -> str:
    """The lines printed when a run starts, built from the effective config.

    A preset's description is fixed text, so it is labelled as the preset's and followed by
    the settings that differ from that preset (``--set``, flags, a resumed config).
    """
    from mpbn.engine.config import flatten
    from mpbn.engine.loading import builder_arguments, dataset_source, user_code_source
    from mpbn.engine.presets import PRESETS, get_preset
    from mpbn.models._registry import model_builder

    m, d, o, r = cfg.model, cfg.data, cfg.optim, cfg.run
    lines = [f"run {cfg.name}"]
    if cfg.name in PRESETS or cfg.name == "default":
        preset = flatten(get_preset(cfg.name).to_dict())
        changed = [f"{k}={v}" for k, v in flatten(cfg.to_dict()).items()
                   if k not in ("name", "description") and preset.get(k) != v]
        base = get_preset(cfg.name)
        if cfg.name == "default" and (m.name, d.name) != (base.model.name, base.data.name):
            # Another model or dataset than the demo's: its description would be wrong.
            lines[0] += " (the demo's settings, changed below)"
        else:
            lines[0] += f" (preset: {base.description})"
        lines.append(f"  overrides  {', '.join(changed) if changed else 'none'}")
    mpbn_text = "no MPBN" if m.mpbn is None else f"MPBN {m.mpbn}"
    subsets = [f"{part} subset {n}" for part, n in (("train", d.train_subset),
                                                    ("test", d.test_subset)) if n is not None]
    if d.holdout is not None:
        subsets.insert(0, f"{d.holdout} training samples held out for validation, test set "
                          "evaluated once at the end")
    data = d.name + (f" from {d.root}" if d.root is not None else "")
    if (source := dataset_source(d.name)) is not None:
        subsets.insert(0, f"your dataset, from {source}")
    data += f" ({', '.join(subsets or ['full splits'])})"
    seeds = ", ".join(str(r.seed + i) for i in range(min(r.seeds, 5)))
    seeds += ", ..." if r.seeds > 5 else ""
    # A model of one's own gets only the settings its builder names (factory_kwargs).
    builder = model_builder(m.name)
    takes = builder_arguments(builder)
    model = ", ".join([m.name + (f" (your model, from {source})"
                                 if (source := user_code_source(builder)) else ""),
                       *(text for arg, text in (("norm", f"norm {m.norm}"), ("mpbn", mpbn_text),
                                                ("timesteps", f"T={m.timesteps}"))
                         if takes is None or arg in takes)])
    lines += [
        f"  model      {model}",
        f"  data       {data}, batch {d.batch_size}",
        f"  training   {_plural(o.epochs, 'epoch')} x {_plural(r.seeds, 'seed')} ({seeds}), "
        f"{o.name} lr {o.lr}",
        f"  device     {dist.device}, {_plural(dist.world_size, 'process')}",
        f"  writing to {run_dir} (metrics.jsonl per seed; {_tensorboard_note()})",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# one seed: set-up, the epoch loop with checkpoints, fold


def train_seed(cfg: TrainConfig, seed: int, seed_dir: Path, dist: DistInfo,
               options: RunOptions, *, commit: str | None = None) -> SeedResult | None:
    """Train one seed (resuming from ``seed_dir/last.pt`` if asked); ``None`` if stopped early.

    ``commit``: the code of this process (:func:`run` reads ``git_commit`` when it starts;
    read here when not given), added to the seed's commit history (every invocation's, kept
    in ``last.pt``).
    """
    if commit is None:
        commit = git_commit()
    primary = dist.is_primary
    log = (lambda *a: print(*a, flush=True)) if primary and not options.quiet else (lambda *a: None)
    if options.resume:
        finished = rundir.finished_result(seed_dir)
        if finished is not None:
            log(f"seed {seed}: finished before, reusing {seed_dir / 'result.json'}")
            return finished
    if primary:
        seed_dir.mkdir(parents=True, exist_ok=True)

    # Same seed -> same initial weights, same data order, same augmentation.
    torch.manual_seed(seed)
    splits = build_splits(cfg, seed, dist)
    train_loader, test_loader, info = splits.train, splits.test, splits.info
    if cfg.run.checkpoint_every and not resumable_mid_epoch(train_loader):
        raise ConfigError(
            f"--checkpoint-every needs a training loader that can resume mid-epoch (with "
            f"state_dict/load_state_dict), and that of dataset {cfg.data.name!r} "
            f"({type(train_loader).__name__}) cannot; drop the option (last.pt is still "
            "written at every epoch end)")
    # The epochs (every run.eval_every-th and the last) are measured on the held-out split
    # when there is one (and the test set only once, after the last epoch): "val_*" keys;
    # without one on the test set: "test_*" keys.
    holdout = splits.holdout is not None
    eval_loader, split_key = (splits.holdout, "val") if holdout else (test_loader, "test")
    model = build_model(cfg, info).to(dist.device)
    if cfg.run.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if dist.enabled:
        # Ranks share initial weights (DDP broadcasts them) but must not share encoder noise.
        torch.manual_seed(seed + 1_000_003 * dist.rank)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer, len(train_loader))
    # With optim.ema_decay the average is what is measured, kept and folded (mpbn.engine.ema).
    ema = WeightEMA(model, cfg.optim.ema_decay) if cfg.optim.ema_decay > 0 else None
    eval_model = model if ema is None else ema.module
    scaler = torch.amp.GradScaler(dist.device.type, enabled=False)  # bf16 needs no scaling
    if options.force and not options.resume and seed == cfg.run.seed:
        # Set-up passed: only now may --force move the previous run's results aside.
        rundir.set_aside_previous(cfg, seed_dir.parent, dist)
        if primary:
            seed_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path = seed_dir / "last.pt", seed_dir / "best.pt"
    writer = MetricsWriter(seed_dir, enabled=primary)
    so_far = _Progress()
    if options.resume and last_path.exists():
        so_far = _resume_from(last_path, cfg, seed, dist, model, ema, optimizer, scheduler,
                              scaler, train_loader)
        writer.truncate_after(so_far.epoch)
        position = so_far.position
        log(f"seed {seed}: resumed from {last_path} after epoch {so_far.epoch}"
            if position is None
            else f"seed {seed}: resumed from {last_path} in epoch {position['epoch']}, after "
                 f"step {position['steps']} of {len(train_loader)}")
    elif options.resume:
        # Killed before the first last.pt: a metrics line (or half of one) of epoch 1 may
        # be there already; epoch 1 is trained again and writes it again.
        writer.truncate_after(0)
    start_epoch, global_step, train_time = so_far.epoch, so_far.global_step, so_far.train_time
    best_acc, test_acc, position = so_far.best_acc, so_far.test_acc, so_far.position
    commits = so_far.commits if so_far.commits[-1:] == [commit] else [*so_far.commits, commit]

    model_for_step = _model_for_step(model, cfg, dist)

    def after_step(global_step: int) -> None:
        if ema is not None:
            ema.update(model)
        for hook in options.hooks:
            hook("after_step", model=model, global_step=global_step)

    epochs, every = cfg.optim.epochs, cfg.run.eval_every
    show_progress = primary and not options.quiet and sys.stderr.isatty()
    progress_lines = primary and not options.quiet and not show_progress
    epochs_done_now = 0

    def save_mid_epoch(progress: dict[str, Any]) -> None:
        """``last.pt`` within ``epoch``: the payload of the last finished epoch (so best.pt,
        metrics and ``epoch`` are untouched) with the model, optimizer, schedule and RNG of
        now, and a ``mid_epoch`` entry saying where the epoch stands on every rank."""
        epoch_time = epoch_time_before + time.perf_counter() - t0
        mine = {"loader": progress["loader"], "loss_sum": progress["loss_sum"],
                "correct": progress["correct"], "seen": progress["seen"],
                "rng": capture_rng_state()}
        payload = _checkpoint_payload(model, optimizer, scheduler, scaler, cfg,
                                      epoch=epoch - 1, global_step=progress["global_step"],
                                      best_acc=best_acc, test_acc=test_acc, seed=seed,
                                      info=info, train_time=train_time + epoch_time, ema=ema,
                                      commits=commits)
        payload["mid_epoch"] = {"epoch": epoch, "steps": progress["steps"],
                                "steps_per_epoch": len(train_loader), "lr": lr,
                                "epoch_time": epoch_time, "ranks": _gather(mine, dist)}
        check_payload_finite(payload, epoch, progress["global_step"], dist)
        if primary:
            save_checkpoint(last_path, payload)

    try:
        for epoch in range(start_epoch + 1, epochs + 1):
            if options.stop_after is not None and epochs_done_now >= options.stop_after:
                log(f"seed {seed}: stopping after epoch {epoch - 1} as asked (resume with "
                    "--resume)")
                return None
            train_loader.set_epoch(epoch)
            lr = optimizer.param_groups[0]["lr"]
            epoch_time_before, resume_at = 0.0, None
            if position is not None:  # continue the epoch a mid-epoch checkpoint stopped in
                resume_at, position = position, None
                train_loader.load_state_dict(resume_at["loader"])
                lr, epoch_time_before = resume_at["lr"], resume_at["epoch_time"]
            t0 = time.perf_counter()
            stats = train_one_epoch(model_for_step, train_loader, optimizer, scheduler, cfg,
                                    dist, epoch=epoch, global_step=global_step,
                                    show_progress=show_progress, hooks=options.hooks,
                                    progress_lines=progress_lines,
                                    checkpoint_every=cfg.run.checkpoint_every,
                                    on_checkpoint=save_mid_epoch, resume=resume_at,
                                    after_step=after_step)
            global_step = int(stats.pop("global_step"))
            measure = epoch == epochs or (every > 0 and epoch % every == 0)
            measured = (_split_metrics(evaluate(eval_model, eval_loader, cfg, dist), split_key)
                        if measure else {})
            epoch_time = epoch_time_before + time.perf_counter() - t0
            train_time += epoch_time
            record = {"epoch": epoch, "lr": lr, **stats, **measured, "epoch_time": epoch_time}
            writer.write(record)
            evaluated = ""
            if measure:
                test_acc = measured[f"{split_key}_acc"]
                evaluated = (f"  {split_key} loss {measured[f'{split_key}_loss']:.4f} acc "
                             f"{100 * test_acc:5.2f}%  spikes {measured['spike_rate']:.3f}")
            log(f"seed {seed} epoch {epoch:>3}/{epochs}  train loss {stats['train_loss']:.4f}"
                f" acc {100 * stats['train_acc']:5.2f}%{evaluated}  {epoch_time:.1f}s "
                f"{stats['images_per_s']:.0f} img/s")
            for hook in options.hooks:
                hook("epoch_end", epoch=epoch, model=model)
            is_best = measure and test_acc > best_acc
            if is_best:
                best_acc = test_acc
            payload = _checkpoint_payload(model, optimizer, scheduler, scaler, cfg,
                                          epoch=epoch, global_step=global_step,
                                          best_acc=best_acc, test_acc=test_acc, seed=seed,
                                          info=info, train_time=train_time, ema=ema,
                                          commits=commits)
            if dist.enabled:  # "rng" is rank 0's; encoder noise and augmentation differ
                payload["rank_rng"] = _gather(capture_rng_state(), dist)
            # Every rank checks (and stops together): no non-finite state is ever written.
            check_payload_finite(payload, epoch, global_step, dist)
            if primary:
                # best.pt first: a kill between the two writes leaves last.pt at the previous
                # epoch, so --resume replays this epoch (bit-identically) and writes both
                # again; the other order could leave best.pt stale for good.
                if is_best:
                    save_checkpoint(best_path, payload)
                save_checkpoint(last_path, payload)
            epochs_done_now += 1
    finally:
        writer.close()

    result = _final_result(cfg, seed, dist, eval_model, test_loader, info, log,
                           holdout=holdout, last_acc=test_acc, best_acc=best_acc,
                           train_time=train_time, commits=commits)
    if primary:
        rundir.write_result(seed_dir, result)
    return result


@dataclass
class _Progress:
    """How far a seed has come: what ``last.pt`` records and a resumed seed continues from."""

    epoch: int = 0  # epochs finished
    global_step: int = 0
    train_time: float = 0.0  # seconds over every invocation (stored in the checkpoint)
    best_acc: float = -1.0  # on the split the epochs are measured on
    test_acc: float = 0.0  # that of the last evaluated epoch (run.eval_every)
    position: dict[str, Any] | None = None  # where a mid-epoch last.pt stopped (this rank's)
    #: The code of each invocation that trained it, in order (``None``: not known).
    commits: list[str | None] = field(default_factory=list)


def _resume_from(last_path: Path, cfg: TrainConfig, seed: int, dist: DistInfo, model: nn.Module,
                 ema: WeightEMA | None, optimizer: Any, scheduler: Any, scaler: Any,
                 train_loader: Any) -> _Progress:
    """Load ``last_path`` into the model, weight average, optimizer, schedule, scaler and RNG
    (one-line errors where it does not fit this run); how far it had come."""
    ckpt = load_checkpoint(last_path, map_location=dist.device)
    rundir.check_resumable(ckpt["config"], cfg, last_path)
    # With an EMA, "model" is the average and "train_model" the weights that train.
    load_state_or_explain(model, ckpt.get("train_model", ckpt["model"]), last_path)
    if ema is not None:
        if "ema_steps" not in ckpt:
            raise ConfigError(f"cannot resume {last_path} with optim.ema_decay: it holds "
                              "no weight average (it was written without one)")
        ema.load(ckpt)
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    scaler.load_state_dict(ckpt["scaler"])
    # Checkpoints written before train_time was stored count from this invocation; those
    # written before the commits were stored were trained by code not known.
    progress = _Progress(epoch=ckpt["epoch"], global_step=ckpt["global_step"],
                         train_time=float(ckpt.get("train_time", 0.0)),
                         best_acc=ckpt["best_acc"], test_acc=ckpt["test_acc"],
                         commits=list(ckpt.get("commits", [None])))
    restore_rng_state(ckpt["rng"])
    if dist.enabled:
        _restore_rank_rng(ckpt, seed, dist)
    if ckpt.get("mid_epoch") is not None:
        progress.position = _mid_epoch_position(ckpt, train_loader, dist, last_path)
        restore_rng_state(progress.position["rng"])  # this rank's (encoder noise differs)
        progress.train_time -= progress.position["epoch_time"]  # counted again at epoch end
    return progress


def _model_for_step(model: nn.Module, cfg: TrainConfig, dist: DistInfo) -> nn.Module:
    """What the training step calls: ``model`` in DDP across processes (with synchronized
    norms if asked), compiled if asked. ``model`` itself stays plain for checkpoints,
    evaluation and folding: the synchronized tree shares its parameters and buffers."""
    model_for_step = model
    if dist.enabled:
        synced = convert_sync_norms(model) if cfg.run.sync_norm else model
        device_ids = [dist.device.index] if dist.device.type == "cuda" else None
        model_for_step = nn.parallel.DistributedDataParallel(synced, device_ids=device_ids)
    if cfg.run.compile:
        model_for_step = compile_model(model_for_step, dist.device)
    return model_for_step


def _final_result(cfg: TrainConfig, seed: int, dist: DistInfo, eval_model: nn.Module,
                  test_loader: Any, info: Any, log: Callable[..., None], *, holdout: bool,
                  last_acc: float, best_acc: float, train_time: float,
                  commits: list[str | None]) -> SeedResult:
    """After the last epoch: the test set (once, when the epochs were measured on a held-out
    split), flip test-time augmentation and the folded model, as asked; the seed's result.

    ``last_acc``/``best_acc``: the last and best epoch's accuracy on the split the epochs were
    measured on.
    """
    final_val_acc = best_val_acc = None
    final_test_acc, best_test_acc = last_acc, best_acc
    if holdout:
        # The one look at the test set: the final model, after the last epoch.
        log(f"seed {seed}: evaluating the final model on the test set "
            f"({info.num_test} samples)")
        final_val_acc, best_val_acc = last_acc, best_acc
        final_test_acc = evaluate(eval_model, test_loader, cfg, dist)["test_acc"]
        best_test_acc = None
    flip_acc: float | None = None
    if cfg.run.tta_flip:
        log(f"seed {seed}: evaluating with flip test-time augmentation")
        flip_acc = evaluate(FlipAveraged(eval_model), test_loader, cfg, dist)["test_acc"]
    folded_acc: float | None = None
    mismatch: SpikeMismatch | None = None
    exact: int | None = None
    if cfg.run.fold:
        log(f"seed {seed}: folding MPBN and BN into the weights and thresholds, evaluating the "
            "folded model on the test set")
        _, folded_metrics, mismatch = fold_and_evaluate(eval_model, test_loader, cfg, dist)
        folded_acc = folded_metrics["test_acc"]
        if mismatch.total_mismatches:
            # A potential within float32 rounding of its threshold fires on one side only:
            # the float64 recount on the same batch tells that from a folding error.
            log(f"seed {seed}: recounting the {mismatch.total_mismatches} float32 spike "
                "mismatches in float64")
            exact = float64_spike_mismatch(eval_model, test_loader, cfg).total_mismatches
    return SeedResult(seed=seed, final_test_acc=final_test_acc, best_test_acc=best_test_acc,
                      folded_test_acc=folded_acc,
                      spike_mismatch=None if mismatch is None else mismatch.total_mismatches,
                      spike_mismatch_rate=None if mismatch is None else mismatch.rate,
                      spike_mismatch_float64=exact,
                      train_time=train_time, epochs=cfg.optim.epochs,
                      final_val_acc=final_val_acc, best_val_acc=best_val_acc,
                      test_acc_flip=flip_acc, commit=commits[-1], commit_history=commits,
                      runtime=rundir.runtime_record(cfg, dist))


def resumable_mid_epoch(loader: Any) -> bool:
    """Whether ``loader`` can continue an epoch mid-way (``state_dict``/``load_state_dict``,
    as :class:`mpbn.data.loaders.DeviceLoader` has): needed by ``run.checkpoint_every``."""
    return all(callable(getattr(loader, name, None)) for name in ("state_dict", "load_state_dict"))


def _gather(value: Any, dist: DistInfo) -> list[Any]:
    """``value`` of every rank, in rank order (``[value]`` in one process)."""
    if not dist.enabled:
        return [value]
    out: list[Any] = [None] * dist.world_size
    torch.distributed.all_gather_object(out, value)
    return out


def _restore_rank_rng(ckpt: dict[str, Any], seed: int, dist: DistInfo) -> None:
    """This rank's RNG from an epoch-end checkpoint of a multi-process run (``rank_rng``), so
    that each rank continues its own encoder noise and augmentation as if never stopped.

    A checkpoint of another number of processes (or one written before ``rank_rng``) cannot be
    continued exactly: rank 0 continues the saved stream, the others draw distinct noise from
    a seed of their rank and the epoch (as at the start, where ranks must not share noise).
    """
    ranks = ckpt.get("rank_rng")
    if ranks is not None and len(ranks) == dist.world_size:
        restore_rng_state(ranks[dist.rank])
    elif dist.rank:
        torch.manual_seed(seed + 1_000_003 * dist.rank + 7_919 * ckpt["epoch"])


def _mid_epoch_position(ckpt: dict[str, Any], loader: Any, dist: DistInfo,
                        path: Path) -> dict[str, Any]:
    """This rank's part of a mid-epoch checkpoint's ``mid_epoch`` entry, with the shared
    fields (``epoch``, ``steps``, ``lr``, ``epoch_time``); one-line errors where it cannot
    continue here."""
    mid = ckpt["mid_epoch"]
    ranks = mid["ranks"]
    if len(ranks) != dist.world_size:
        raise ConfigError(f"{path} stopped mid-epoch in a run of {_plural(len(ranks), 'process')}"
                          f"; resume it with {len(ranks)}, not {dist.world_size}")
    if not resumable_mid_epoch(loader):
        raise ConfigError(f"{path} stopped mid-epoch, but this training loader "
                          f"({type(loader).__name__}) cannot continue an epoch mid-way")
    if mid["epoch"] != ckpt["epoch"] + 1 or mid["steps_per_epoch"] != len(loader):
        raise ConfigError(f"{path} stopped at step {mid['steps']} of {mid['steps_per_epoch']} "
                          f"in epoch {mid['epoch']}, which does not fit this run's "
                          f"{len(loader)} steps per epoch")
    return {key: value for key, value in mid.items() if key != "ranks"} | ranks[dist.rank]


def _checkpoint_payload(model: nn.Module, optimizer: Any, scheduler: Any, scaler: Any,
                        cfg: TrainConfig, *, epoch: int, global_step: int, best_acc: float,
                        test_acc: float, seed: int, info: Any,
                        train_time: float = 0.0, ema: WeightEMA | None = None,
                        commits: list[str | None] | None = None) -> dict[str, Any]:
    payload = {
        # Enough of the dataset's description to rebuild the model without the data, and the
        # preprocessing its deploy files record (mpbn.engine.deploy.preprocessing).
        "data_info": data_info_record(info),
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
        "epoch": epoch, "global_step": global_step, "best_acc": best_acc,
        "test_acc": test_acc, "seed": seed, "rng": capture_rng_state(),
        "train_time": train_time, "commits": list(commits or []),
        "config": cfg.to_dict(), "model_name": cfg.model.name,
    }
    if ema is not None:  # "model" is what loaders deploy: the average
        payload |= {"train_model": payload["model"], **ema.state()}
    return payload


# ------------------------------------------------------------------------------------------
# set-up: data, optimizer, schedule (the model: mpbn.engine.loading.build_model)


def _split_metrics(metrics: dict[str, float], split_key: str) -> dict[str, float]:
    """``evaluate``'s ``test_loss``/``test_acc`` renamed for the split they were measured on."""
    return {(f"{split_key}_{key[5:]}" if key.startswith("test_") else key): value
            for key, value in metrics.items()}


def build_loaders(cfg: TrainConfig, seed: int, dist: DistInfo) -> tuple[Any, Any, Any]:
    """Train/test loaders on the device; the global batch is split over ranks."""
    splits = build_splits(cfg, seed, dist, holdout=False)
    return splits.train, splits.test, splits.info


def build_splits(cfg: TrainConfig, seed: int, dist: DistInfo, *, holdout: bool = True) -> Any:
    """Train, held-out (``cfg.data.holdout``; None without) and test loaders, and the info.

    Args:
        holdout: Take ``cfg.data.holdout`` samples out of the training set; False ignores
            it (no held-out loader, the whole training set), for callers that need only the
            test set.
    """
    from mpbn.data import create_splits

    data = cfg.data
    if data.batch_size % dist.world_size:
        raise ConfigError(f"batch_size {data.batch_size} is not divisible by the "
                          f"{dist.world_size} processes")
    if data.root is not None and Path(data.root).expanduser().is_file():
        raise FileNotFoundError(f"data root {data.root} is a file, not a folder; give the folder "
                                "that holds the dataset files with --data-root")
    if data.root is not None and not Path(data.root).expanduser().exists():
        raise FileNotFoundError(f"data root {data.root} does not exist; give an existing "
                                f"folder with --data-root (or omit it for $MPBN_DATA/<dataset>)")
    return create_splits(
        data.name, data.root, holdout=data.holdout if holdout else None,
        batch_size=data.batch_size // dist.world_size,
        device=dist.device, timesteps=cfg.model.timesteps, augment=data.augment,
        autoaugment=data.autoaugment, cutout=data.cutout, num_workers=data.num_workers,
        seed=seed, download=data.download, split=data.split, rank=dist.rank,
        world_size=dist.world_size, train_subset=data.train_subset,
        test_subset=data.test_subset, eval_batch_size=data.eval_batch_size,
    )


# ------------------------------------------------------------------------------------------
# one epoch of training


#: Devices whose autocast runs convolutions and matmuls in bf16 (CPU: oneDNN, fastest where the
#: CPU has native bf16 instructions, e.g. AVX512-BF16 or AMX).
AUTOCAST_DEVICES = ("cuda", "cpu")


def autocast(cfg: Any, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast of the training step where the config asks for it (``run.amp``); else
    nothing. Evaluation never runs under it (:func:`mpbn.engine.evaluation.evaluate`).

    Raises:
        ValueError: ``run.amp`` on a device without bf16 autocast here.
    """
    if cfg is None or not cfg.run.amp:
        return contextlib.nullcontext()
    if device.type not in AUTOCAST_DEVICES:
        raise ValueError(f"run.amp: bf16 autocast runs on {' or '.join(AUTOCAST_DEVICES)}, "
                         f"not on {device.type}; set run.amp=false")
    return torch.autocast(device.type, dtype=torch.bfloat16)


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, unit="step",
                disable=not enabled)


#: Seconds between progress lines when the output is not a terminal (a log file, nohup).
PROGRESS_LINE_SECONDS = 60.0


def train_one_epoch(model: nn.Module, loader: Any, optimizer: torch.optim.Optimizer,
                    scheduler: Any, cfg: TrainConfig, dist: DistInfo, *, epoch: int,
                    global_step: int, show_progress: bool,
                    hooks: list[Any] = (), progress_lines: bool = False,
                    checkpoint_every: int = 0, on_checkpoint: Any = None,
                    resume: dict[str, Any] | None = None,
                    after_step: Callable[[int], None] | None = None) -> dict[str, float]:
    """Train for one epoch. Returns loss, accuracy, samples and the new global step.

    Losses and correct counts are summed on the device; the host reads them only every
    ``cfg.run.log_interval`` steps and at the end. A non-finite loss is recorded on the device
    with its step and raised as :class:`TrainingDiverged` at the next read.

    Args:
        show_progress: A tqdm bar (a terminal).
        progress_lines: Without a bar, print a plain line at the first host read after
            every :data:`PROGRESS_LINE_SECONDS` (a log file shows progress between epochs).
        checkpoint_every: Call ``on_checkpoint(position)`` after every global step that is a
            multiple of it (except the epoch's last: the epoch-end checkpoint follows), once
            the steps so far are checked finite. ``position``: ``steps`` (done in this epoch),
            ``global_step``, the sums ``loss_sum`` and ``correct`` (CPU tensors), ``seen`` and
            the loader's ``state_dict()``.
        resume: Such a position, with ``epoch_time`` (seconds of the epoch so far), to
            continue the epoch after its ``steps`` (the loader already holds its state).
        after_step: Called with the global step after every optimizer and schedule step (the
            weight EMA's update, the ``"after_step"`` hooks).
    """
    model.train()
    device = dist.device
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen, steps_done, elapsed_before = 0, 0, 0.0
    if resume is not None:
        loss_sum = resume["loss_sum"].to(device, torch.float64).clone()
        correct = resume["correct"].to(device, torch.long).clone()
        seen, steps_done = int(resume["seen"]), int(resume["steps"])
        elapsed_before = float(resume["epoch_time"])
    # Loss, parameters, buffers and gradients checked finite at every host read (every
    # ``log_interval`` steps, before a mid-epoch checkpoint and at the epoch's end).
    divergence = DivergenceCheck(model, device)
    start = last_line = time.perf_counter()
    start -= elapsed_before  # images/s over the whole epoch, without the time it was stopped
    bar = _progress(len(loader), f"epoch {epoch}/{cfg.optim.epochs}", show_progress)
    step_in_epoch = steps_done
    for step_in_epoch, (x, y) in enumerate(loader, start=steps_done + 1):
        global_step += 1
        x = prepare_input(x, cfg)
        with autocast(cfg, device):
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.optim.label_smoothing)
        for hook in hooks:
            loss = hook("step", loss=loss, epoch=epoch, global_step=global_step) or loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        scheduler.step()
        if after_step is not None:
            after_step(global_step)

        # Bookkeeping without a host sync.
        divergence.record_loss(loss, global_step)
        loss_sum += loss.detach().double() * y.shape[0]
        correct += (logits.detach().argmax(1) == y).sum()
        seen += y.shape[0]
        if step_in_epoch % cfg.run.log_interval == 0 or step_in_epoch == len(loader):
            divergence.check(epoch, global_step, global_step - step_in_epoch)
            elapsed = time.perf_counter() - start
            loss_now, acc_now = loss_sum.item() / seen, 100 * correct.item() / seen
            img_s = seen * dist.world_size / max(elapsed, 1e-9)
            bar.set_postfix(loss=f"{loss_now:.3f}", acc=f"{acc_now:.1f}%", img_s=f"{img_s:.0f}")
            bar.update(step_in_epoch - bar.n)
            if progress_lines and time.perf_counter() - last_line >= PROGRESS_LINE_SECONDS:
                last_line = time.perf_counter()
                print(f"  epoch {epoch} step {step_in_epoch}/{len(loader)}  train loss "
                      f"{loss_now:.4f} acc {acc_now:5.2f}%  {img_s:.0f} img/s", flush=True)
        if (checkpoint_every and on_checkpoint is not None
                and global_step % checkpoint_every == 0 and step_in_epoch < len(loader)):
            # No checkpoint after a bad step: the check of a log interval first.
            divergence.check(epoch, global_step, global_step - step_in_epoch)
            on_checkpoint({"steps": step_in_epoch, "global_step": global_step,
                           "loss_sum": loss_sum.detach().cpu().clone(),
                           "correct": correct.detach().cpu().clone(), "seen": seen,
                           "loader": loader.state_dict()})
    bar.close()
    divergence.check(epoch, global_step, global_step - step_in_epoch)
    totals = torch.stack([loss_sum, correct.double(),
                          torch.tensor(float(seen), device=device, dtype=torch.float64)])
    all_reduce_sum(totals)
    loss_total, correct_total, count = totals.tolist()
    elapsed = time.perf_counter() - start
    return {"train_loss": loss_total / max(count, 1), "train_acc": correct_total / max(count, 1),
            "images_per_s": count / max(elapsed, 1e-9), "global_step": global_step}


def load_model_from_checkpoint(path: str | Path, device: str | torch.device = "cpu",
                               overrides: dict[str, Any] | None = None
                               ) -> tuple[nn.Module, TrainConfig, dict[str, Any]]:
    """Older name of :func:`mpbn.engine.loading.load_model`: ``(model, config, checkpoint)``."""
    return load_model(path, device, overrides)
