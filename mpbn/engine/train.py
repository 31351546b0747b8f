"""The training loop, as importable functions that read top to bottom.

``run(config)`` -> for each seed ``train_seed`` -> for each epoch ``train_one_epoch`` and
``evaluate`` -> checkpoint -> after the last epoch fold MPBN into thresholds and evaluate the
folded model. Layout of a run directory (other tools rely on it)::

    RUN_DIR/config.json             the resolved TrainConfig
    RUN_DIR/summary.json            per-seed accuracies, mean, std, code commit
    RUN_DIR/seed_<s>/metrics.jsonl  one line per epoch
    RUN_DIR/seed_<s>/last.pt        after every epoch (for --resume)
    RUN_DIR/seed_<s>/best.pt        best test accuracy so far
    RUN_DIR/seed_<s>/result.json    the seed's final numbers (marks it finished)
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mpbn.engine.checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from mpbn.engine.config import ConfigError, TrainConfig, config_diff
from mpbn.engine.distributed import (
    DistInfo,
    all_reduce_max,
    all_reduce_sum,
    cleanup_distributed,
    convert_sync_norms,
    setup_distributed,
)
from mpbn.engine.metrics import MetricsWriter, SpikeRateMeter, git_commit, mean_std
from mpbn.layers.fold import SpikeMismatch, spike_mismatch

__all__ = [
    "RunOptions", "SeedResult", "TrainingDiverged", "run", "train_seed", "train_one_epoch",
    "evaluate", "build_model", "build_loaders", "build_optimizer", "build_scheduler",
    "param_groups", "fold_and_evaluate", "check_names", "load_model_from_checkpoint",
]

EVAL_SEED = 12345  # Poisson encoding draws from this fixed stream in evaluation: repeatable


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names epoch and step."""


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
        hooks: Callables ``hook(event, **info)`` called at ``"step"`` (with ``loss``) and
            ``"epoch_end"``; tests use them to inject faults.
    """

    out: str | Path | None = None
    force: bool = False
    resume: bool = False
    quiet: bool = False
    stop_after: int | None = None
    hooks: list[Any] = field(default_factory=list)


@dataclass
class SeedResult:
    """The numbers one seed contributes to the summary."""

    seed: int
    final_test_acc: float
    best_test_acc: float
    folded_test_acc: float | None
    spike_mismatch: int | None
    train_time: float
    epochs: int
    spike_mismatch_rate: float | None = None


# ------------------------------------------------------------------------------------------
# set-up: data, model, optimizer, schedule


def build_loaders(cfg: TrainConfig, seed: int, dist: DistInfo) -> tuple[Any, Any, Any]:
    """Train/test loaders on the device; the global batch is split over ranks."""
    from mpbn.data import create_loaders

    if cfg.batch_size % dist.world_size:
        raise ConfigError(f"batch_size {cfg.batch_size} is not divisible by the "
                          f"{dist.world_size} processes")
    if cfg.data_root is not None and not Path(cfg.data_root).expanduser().exists():
        raise FileNotFoundError(f"data root {cfg.data_root} does not exist; give an existing "
                                f"folder with --data-root (or omit it for $MPBN_DATA/<dataset>)")
    return create_loaders(
        cfg.dataset, cfg.data_root, batch_size=cfg.batch_size // dist.world_size,
        device=dist.device, timesteps=cfg.timesteps, augment=cfg.augment,
        autoaugment=cfg.autoaugment, cutout=cfg.cutout, num_workers=cfg.num_workers, seed=seed,
        download=cfg.download, split=cfg.split, rank=dist.rank, world_size=dist.world_size,
        train_subset=cfg.train_subset, test_subset=cfg.test_subset,
        eval_batch_size=cfg.eval_batch_size,
    )


def build_model(cfg: TrainConfig, info: Any) -> nn.Module:
    """``mpbn.models.create`` with the config's architecture and the dataset's shapes."""
    from mpbn import models

    shape = tuple(info.input_shape)
    kwargs: dict[str, Any] = dict(
        num_classes=info.num_classes, timesteps=cfg.timesteps, norm=cfg.norm,
        mpbn=cfg.mpbn or "none", in_channels=shape[0], encoding=cfg.encoding, decay=cfg.decay,
        v_threshold=cfg.v_threshold, reset=cfg.reset, surrogate=cfg.surrogate,
    )
    if cfg.alpha is not None:
        kwargs["alpha"] = cfg.alpha
    if len(shape) == 3:
        kwargs["input_size"] = shape[1:]
    kwargs.update(cfg.model_kwargs)
    model = models.create(cfg.model, **kwargs)
    if cfg.grad_checkpointing:
        if not hasattr(model, "set_grad_checkpointing"):
            raise ConfigError(f"model {cfg.model!r} does not support grad_checkpointing")
        model.set_grad_checkpointing(every=cfg.grad_checkpointing)
    return model


def param_groups(model: nn.Module, weight_decay: float, decay_params: str) -> list[dict]:
    """Weight decay on conv/linear weights only (ndim > 1), or on everything.

    MPBN's public code decays only weights: decaying BN/MPBN scales and biases pulls them to
    zero, which for MPBN moves the folded thresholds, with no regularizing benefit.
    """
    if decay_params == "all":
        return [{"params": [p for p in model.parameters() if p.requires_grad],
                 "weight_decay": weight_decay}]
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay, cfg.decay_params)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def lr_factor(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Multiplier of ``cfg.lr`` at optimizer step ``step`` (0-based), updated every step."""
    total = cfg.epochs * steps_per_epoch
    warmup = cfg.warmup_epochs * steps_per_epoch
    if step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    if cfg.schedule == "step":
        epoch = step / steps_per_epoch
        passed = sum(epoch >= m * cfg.epochs for m in cfg.milestones)
        return cfg.gamma ** passed
    return 1.0


def build_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR over :func:`lr_factor` (its state dict holds no code)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(cfg, step, steps_per_epoch))


# ------------------------------------------------------------------------------------------
# one epoch of training, one pass of evaluation


def _autocast(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    if cfg.amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _prepare_input(x: Tensor, cfg: TrainConfig) -> Tensor:
    if cfg.channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, unit="step",
                disable=not enabled)


def train_one_epoch(model: nn.Module, loader: Any, optimizer: torch.optim.Optimizer,
                    scheduler: Any, cfg: TrainConfig, dist: DistInfo, *, epoch: int,
                    global_step: int, show_progress: bool,
                    hooks: list[Any] = ()) -> dict[str, float]:
    """Train for one epoch. Returns loss, accuracy, samples and the new global step.

    Losses and correct counts are summed on the device; the host reads them only every
    ``cfg.log_interval`` steps and at the end. A non-finite loss is recorded on the device
    with its step and raised as :class:`TrainingDiverged` at the next read.
    """
    model.train()
    device = dist.device
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.long)
    first_bad = torch.full((), -1, device=device, dtype=torch.long)
    seen = 0
    start = time.perf_counter()
    bar = _progress(len(loader), f"epoch {epoch}/{cfg.epochs}", show_progress)
    step_in_epoch = 0
    for step_in_epoch, (x, y) in enumerate(loader, start=1):
        global_step += 1
        x = _prepare_input(x, cfg)
        with _autocast(cfg, device):
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
        for hook in hooks:
            loss = hook("step", loss=loss, epoch=epoch, global_step=global_step) or loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()

        # Bookkeeping without a host sync.
        bad = ~torch.isfinite(loss.detach())
        first_bad = torch.where(bad & (first_bad < 0), torch.full_like(first_bad, global_step),
                                first_bad)
        loss_sum += loss.detach().double() * y.shape[0]
        correct += (logits.detach().argmax(1) == y).sum()
        seen += y.shape[0]
        if step_in_epoch % cfg.log_interval == 0 or step_in_epoch == len(loader):
            _raise_if_diverged(first_bad, epoch, global_step - step_in_epoch)
            elapsed = time.perf_counter() - start
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}",
                            acc=f"{100 * correct.item() / seen:.1f}%",
                            img_s=f"{seen * dist.world_size / max(elapsed, 1e-9):.0f}")
            bar.update(step_in_epoch - bar.n)
    bar.close()
    _raise_if_diverged(first_bad, epoch, global_step - step_in_epoch)
    totals = torch.stack([loss_sum, correct.double(),
                          torch.tensor(float(seen), device=device, dtype=torch.float64)])
    all_reduce_sum(totals)
    loss_total, correct_total, count = totals.tolist()
    elapsed = time.perf_counter() - start
    return {"train_loss": loss_total / max(count, 1), "train_acc": correct_total / max(count, 1),
            "images_per_s": count / max(elapsed, 1e-9), "global_step": global_step}


def _raise_if_diverged(first_bad: Tensor, epoch: int, epoch_start_step: int) -> None:
    # Any rank's NaN stops every rank (the gradients are averaged anyway). The maximum keeps
    # a real step number when several ranks diverge (a sum would not), -1 when none did.
    flag = all_reduce_max(first_bad.clone())
    step = int(flag)
    if step > 0:
        raise TrainingDiverged(
            f"loss became NaN/inf at epoch {epoch}, step {step - epoch_start_step} "
            f"(global step {step}); stopped, the last good checkpoint was kept "
            "(try a lower lr or --set grad_clip=1.0)"
        )


@torch.no_grad()
def evaluate(model: nn.Module, loader: Any, cfg: TrainConfig, dist: DistInfo,
             *, measure_spikes: bool = True) -> dict[str, float]:
    """Test loss, accuracy and mean LIF spike rate, reduced over ranks.

    Runs under a forked RNG with a fixed seed: Poisson encodings are the same for every
    evaluation (folded vs unfolded compare like for like), and evaluating does not move the
    training RNG (so resumed and uninterrupted runs stay identical).
    """
    was_training = model.training
    model.eval()
    device = dist.device
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.float64)
    count = 0
    meter = SpikeRateMeter()
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), \
            (meter.measure(model) if measure_spikes else contextlib.nullcontext()):
        torch.manual_seed(EVAL_SEED + dist.rank)
        for x, y in loader:
            with _autocast(cfg, device):
                logits = model(_prepare_input(x, cfg)).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
            correct += (logits.argmax(1) == y).sum()
            count += y.shape[0]
    spikes = meter.spikes if meter.spikes is not None else torch.zeros((), device=device)
    totals = torch.stack([loss_sum, correct,
                          torch.tensor(float(count), device=device, dtype=torch.float64),
                          spikes.double().to(device),
                          torch.tensor(float(meter.total), device=device, dtype=torch.float64)])
    all_reduce_sum(totals)
    loss_total, correct_total, n, spike_total, neuron_steps = totals.tolist()
    model.train(was_training)
    return {"test_loss": loss_total / max(n, 1), "test_acc": correct_total / max(n, 1),
            "spike_rate": spike_total / neuron_steps if neuron_steps else 0.0}


def fold_and_evaluate(model: nn.Module, test_loader: Any, cfg: TrainConfig,
                      dist: DistInfo) -> tuple[nn.Module, dict[str, float], SpikeMismatch]:
    """Fold MPBN (and foldable BN) away, evaluate the folded copy, compare their spikes.

    The spikes are compared on the first test batch (for the demo set: the whole test set),
    under the same encoder randomness.
    """
    from mpbn.layers.fold import fold

    # Process groups cannot be deep-copied, and a folded model normalizes with running
    # statistics only: detach them for the copy, then restore.
    groups = {m: m.process_group for m in model.modules()
              if getattr(m, "process_group", None) is not None}
    for module in groups:
        module.process_group = None
    try:
        folded = fold(model)
    finally:
        for module, group in groups.items():
            module.process_group = group
    metrics = evaluate(folded, test_loader, cfg, dist, measure_spikes=False)
    x, _ = next(iter(test_loader))
    mismatch = spike_mismatch(model, folded, _prepare_input(x, cfg), seed=EVAL_SEED)
    return folded, metrics, mismatch


# ------------------------------------------------------------------------------------------
# one seed: the epoch loop with checkpoints


def _checkpoint_payload(model: nn.Module, optimizer: Any, scheduler: Any, scaler: Any,
                        cfg: TrainConfig, *, epoch: int, global_step: int, best_acc: float,
                        test_acc: float, seed: int, info: Any) -> dict[str, Any]:
    return {
        # Enough of the dataset's description to rebuild the model without the data.
        "data_info": {"num_classes": int(info.num_classes),
                      "input_shape": [int(s) for s in info.input_shape]},
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
        "epoch": epoch, "global_step": global_step, "best_acc": best_acc,
        "test_acc": test_acc, "seed": seed, "rng": capture_rng_state(),
        "config": cfg.to_dict(), "model_name": cfg.model,
    }


def load_state_or_explain(model: nn.Module, state: dict[str, Tensor], path: Path) -> None:
    """``load_state_dict`` with a one-line error when the checkpoint is of another model."""
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).splitlines()[0:2]
        raise CheckpointError(f"checkpoint {path} does not fit this model: "
                              f"{' '.join(s.strip() for s in first)[:240]}") from None


def train_seed(cfg: TrainConfig, seed: int, seed_dir: Path, dist: DistInfo,
               options: RunOptions) -> SeedResult | None:
    """Train one seed (resuming from ``seed_dir/last.pt`` if asked); ``None`` if stopped early."""
    primary = dist.is_primary
    log = (lambda *a: print(*a, flush=True)) if primary and not options.quiet else (lambda *a: None)
    result_path = seed_dir / "result.json"
    if options.resume and result_path.exists():
        log(f"seed {seed}: finished before, reusing {result_path}")
        return SeedResult(**json.loads(result_path.read_text()))
    if primary:
        seed_dir.mkdir(parents=True, exist_ok=True)

    # Same seed -> same initial weights, same data order, same augmentation.
    torch.manual_seed(seed)
    train_loader, test_loader, info = build_loaders(cfg, seed, dist)
    model = build_model(cfg, info).to(dist.device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if dist.enabled:
        # Ranks share initial weights (DDP broadcasts them) but must not share encoder noise.
        torch.manual_seed(seed + 1_000_003 * dist.rank)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer, len(train_loader))
    scaler = torch.amp.GradScaler(dist.device.type, enabled=False)  # bf16 needs no scaling
    start_epoch, global_step, best_acc, test_acc = 0, 0, -1.0, 0.0
    last_path, best_path = seed_dir / "last.pt", seed_dir / "best.pt"
    writer = MetricsWriter(seed_dir, enabled=primary)

    if options.resume and last_path.exists():
        ckpt = load_checkpoint(last_path, map_location=dist.device)
        diff = config_diff(ckpt["config"], cfg.to_dict())
        if diff:
            raise ConfigError(f"cannot resume {last_path} with a changed config "
                              f"({'; '.join(diff)}); start a new run with --out, or drop the "
                              "changed options")
        load_state_or_explain(model, ckpt["model"], last_path)
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        start_epoch, global_step = ckpt["epoch"], ckpt["global_step"]
        best_acc, test_acc = ckpt["best_acc"], ckpt["test_acc"]
        restore_rng_state(ckpt["rng"])
        writer.truncate_after(start_epoch)
        log(f"seed {seed}: resumed from {last_path} after epoch {start_epoch}")

    model_for_step: nn.Module = model
    if dist.enabled:
        if cfg.sync_norm:
            convert_sync_norms(model)
        device_ids = [dist.device.index] if dist.device.type == "cuda" else None
        model_for_step = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if cfg.compile:
        model_for_step = torch.compile(model_for_step)

    show_progress = primary and not options.quiet and sys.stderr.isatty()
    train_time = 0.0
    epochs_done_now = 0
    try:
        for epoch in range(start_epoch + 1, cfg.epochs + 1):
            if options.stop_after is not None and epochs_done_now >= options.stop_after:
                log(f"seed {seed}: stopping after epoch {epoch - 1} as asked (resume with "
                    "--resume)")
                return None
            train_loader.set_epoch(epoch)
            lr = optimizer.param_groups[0]["lr"]
            t0 = time.perf_counter()
            stats = train_one_epoch(model_for_step, train_loader, optimizer, scheduler, cfg,
                                    dist, epoch=epoch, global_step=global_step,
                                    show_progress=show_progress, hooks=options.hooks)
            global_step = int(stats.pop("global_step"))
            test = evaluate(model, test_loader, cfg, dist)
            epoch_time = time.perf_counter() - t0
            train_time += epoch_time
            test_acc = test["test_acc"]
            record = {"epoch": epoch, "lr": lr, **stats, **test, "epoch_time": epoch_time}
            writer.write(record)
            log(f"seed {seed} epoch {epoch:>3}/{cfg.epochs}  train loss {stats['train_loss']:.4f}"
                f" acc {100 * stats['train_acc']:5.2f}%  test loss {test['test_loss']:.4f} "
                f"acc {100 * test_acc:5.2f}%  spikes {test['spike_rate']:.3f}  "
                f"{epoch_time:.1f}s {stats['images_per_s']:.0f} img/s")
            for hook in options.hooks:
                hook("epoch_end", epoch=epoch, model=model)
            is_best = test_acc > best_acc
            best_acc = max(best_acc, test_acc)
            if primary:
                payload = _checkpoint_payload(model, optimizer, scheduler, scaler, cfg,
                                              epoch=epoch, global_step=global_step,
                                              best_acc=best_acc, test_acc=test_acc, seed=seed,
                                              info=info)
                save_checkpoint(last_path, payload)
                if is_best:
                    save_checkpoint(best_path, payload)
            epochs_done_now += 1
    finally:
        writer.close()

    folded_acc: float | None = None
    mismatch: SpikeMismatch | None = None
    if cfg.fold:
        _, folded_metrics, mismatch = fold_and_evaluate(model, test_loader, cfg, dist)
        folded_acc = folded_metrics["test_acc"]
    result = SeedResult(seed=seed, final_test_acc=test_acc, best_test_acc=best_acc,
                        folded_test_acc=folded_acc,
                        spike_mismatch=None if mismatch is None else mismatch.total_mismatches,
                        spike_mismatch_rate=None if mismatch is None else mismatch.rate,
                        train_time=train_time, epochs=cfg.epochs)
    if primary:
        result_path.write_text(json.dumps(asdict(result), indent=2))
    return result


# ------------------------------------------------------------------------------------------
# a run: several seeds, one summary


def default_run_dir(cfg: TrainConfig) -> Path:
    return Path("runs") / f"{cfg.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def prepare_run_dir(cfg: TrainConfig, options: RunOptions, dist: DistInfo) -> Path:
    """Create the run directory and write ``config.json``; refuse to clobber anything."""
    run_dir = Path(options.out) if options.out is not None else default_run_dir(cfg)
    config_path = run_dir / "config.json"
    if options.resume:
        if not config_path.exists():
            raise ConfigError(f"cannot resume: {config_path} does not exist (is {run_dir} a "
                              "run directory written by `mpbn train`?)")
        diff = config_diff(json.loads(config_path.read_text()), cfg.to_dict())
        if diff:
            raise ConfigError(f"cannot resume {run_dir} with a changed config "
                              f"({'; '.join(diff)}); start a new run with a new --out")
        if dist.is_primary:  # runtime fields (e.g. more seeds) may have changed
            config_path.write_text(cfg.to_json() + "\n")
        return run_dir
    occupied = run_dir.exists() and any(run_dir.iterdir())
    if dist.enabled:
        # Every rank looks before rank 0 writes, so all ranks take the same decision.
        torch.distributed.barrier()
    if occupied and not options.force:
        raise ConfigError(f"output folder {run_dir} exists and is not empty; use --force to "
                          "overwrite, --resume to continue it, or another --out")
    if dist.is_primary:
        run_dir.mkdir(parents=True, exist_ok=True)
        if options.force:
            for stale in (run_dir / "summary.json", *run_dir.glob("seed_*/metrics.jsonl"),
                          *run_dir.glob("seed_*/result.json")):
                stale.unlink(missing_ok=True)
        config_path.write_text(cfg.to_json() + "\n")
    return run_dir


def run(cfg: TrainConfig, options: RunOptions | None = None) -> dict[str, Any] | None:
    """Train ``cfg.seeds`` seeds and write ``summary.json``; returns the summary.

    Returns ``None`` when ``options.stop_after`` stopped the run before the end.
    """
    options = options or RunOptions()
    cfg.validate()
    check_names(cfg)
    dist = setup_distributed(cfg.device)
    run_dir: Path | None = None
    created = False
    finished = False
    try:
        created = not options.resume and not (
            Path(options.out).exists() if options.out is not None else False)
        run_dir = prepare_run_dir(cfg, options, dist)
        if dist.is_primary and not options.quiet:
            print(f"run {cfg.name}: {cfg.description}\n  writing to {run_dir}  "
                  f"(device {dist.device}, {dist.world_size} process(es))", flush=True)
        results: list[SeedResult] = []
        for i in range(cfg.seeds):
            seed = cfg.seed + i
            result = train_seed(cfg, seed, run_dir / f"seed_{seed}", dist, options)
            if result is None:
                finished = True
                return None
            results.append(result)
        summary = summarize(cfg, results)
        if dist.is_primary:
            (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        summary["run_dir"] = str(run_dir)
        finished = True
        return summary
    except (ConfigError, ValueError, FileNotFoundError):
        # A set-up error (bad option, missing data) before any epoch: leave no empty run
        # directory behind, so fixing the option and re-running needs no --force.
        if created and run_dir is not None and dist.is_primary:
            _remove_if_untrained(run_dir)
        raise
    finally:
        cleanup_distributed(synchronize=finished)


def _remove_if_untrained(run_dir: Path) -> None:
    if any(run_dir.glob("seed_*/*.pt")):
        return
    (run_dir / "config.json").unlink(missing_ok=True)
    for path in sorted(run_dir.glob("seed_*/metrics.jsonl")):
        path.unlink()
    for folder in [*run_dir.glob("seed_*"), run_dir]:
        with contextlib.suppress(OSError):
            folder.rmdir()


def check_names(cfg: TrainConfig) -> None:
    """One-line errors for an unknown model or dataset, before anything is written."""
    from mpbn.data import list_datasets
    from mpbn.models import list_models

    if cfg.model not in list_models():
        raise ConfigError(f"unknown model {cfg.model!r}; valid: {', '.join(list_models())}")
    if cfg.dataset.lower() not in list_datasets():
        raise ConfigError(f"unknown dataset {cfg.dataset!r}; valid: {', '.join(list_datasets())}")


def summarize(cfg: TrainConfig, results: list[SeedResult]) -> dict[str, Any]:
    """airbench-style summary: per-seed accuracies, their mean and std, the code commit."""
    final = [r.final_test_acc for r in results]
    mean, std = mean_std(final)
    folded = [r.folded_test_acc for r in results]
    return {
        "name": cfg.name, "config": cfg.to_dict(), "seeds": [r.seed for r in results],
        "final_test_acc": final, "best_test_acc": [r.best_test_acc for r in results],
        "mean": mean, "std": std, "commit": git_commit(),
        "folded_test_acc": folded, "spike_mismatch": [r.spike_mismatch for r in results],
        "spike_mismatch_rate": [r.spike_mismatch_rate for r in results],
        "train_time": [r.train_time for r in results],
    }


def load_model_from_checkpoint(path: str | Path, device: str | torch.device = "cpu",
                               overrides: dict[str, Any] | None = None
                               ) -> tuple[nn.Module, TrainConfig, dict[str, Any]]:
    """Rebuild the model of a checkpoint from its stored config and load its weights."""
    from types import SimpleNamespace

    ckpt = load_checkpoint(path, map_location=device)
    try:
        cfg = TrainConfig.from_dict(ckpt["config"])
    except (ConfigError, TypeError) as error:
        raise CheckpointError(f"checkpoint {path} has an unusable config: {error}") from None
    if overrides:
        from mpbn.engine.config import apply_overrides

        cfg = apply_overrides(cfg, overrides)
    data_info = ckpt.get("data_info")
    if not isinstance(data_info, dict):
        raise CheckpointError(f"checkpoint {path} lacks data_info (num_classes, input_shape)")
    info = SimpleNamespace(num_classes=data_info["num_classes"],
                           input_shape=tuple(data_info["input_shape"]))
    model = build_model(cfg, info).to(device)
    load_state_or_explain(model, ckpt["model"], Path(path))
    return model.eval(), cfg, ckpt
