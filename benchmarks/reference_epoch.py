"""Time the reference epoch that scales the CPU budget of the ``cifar10-fast-*`` presets.

Issue 18's budget is relative to the machine: "60 minutes where one full-data epoch of
``cifar10-r20narrow-t1-baseline`` takes 70 s", scaled by that epoch's time measured on the same
machine in the same work period. This script measures it: the preset's model, recipe and
training loop (:func:`mpbn.engine.train.train_one_epoch`) over CIFAR-10-sized data, and prints
the epoch time and the budget it implies::

    python benchmarks/reference_epoch.py                       # synthetic 50,000 images
    python benchmarks/reference_epoch.py --data-root DIR       # real CIFAR-10 (same cost)
    python benchmarks/reference_epoch.py --steps 60            # time 60 steps, extrapolate
    python benchmarks/reference_epoch.py --also cifar10-fast-t1-baseline   # + epochs in budget
    python benchmarks/reference_epoch.py --log runs/fast/reference_epochs.jsonl  # keep a record
    python benchmarks/reference_epoch.py --also cifar10-fast-t1-baseline \
        --set 'model.kwargs={"widths": [48, 96, 192, 384]}'   # a variant of the --also presets

The data's content does not change the time (dense convs; the loader does the same gathers and
augmentation either way), so synthetic uint8 images of CIFAR's shape are the default and the
script needs no dataset. ``--steps`` times the first steps after a warm-up and scales to the
391 steps of the epoch; the default times the whole epoch, which is what the budget names.
Run it on an otherwise idle machine, right before or after the timed runs it scales.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

import torch
from _host import allocator

from mpbn.data import DeviceLoader
from mpbn.data.augment import AugmentSpec
from mpbn.engine.config import apply_overrides, parse_set
from mpbn.engine.distributed import DistInfo
from mpbn.engine.loading import build_model
from mpbn.engine.presets import get_preset
from mpbn.engine.train import build_optimizer, build_scheduler, train_one_epoch

#: The preset whose full-data epoch is the unit, and the epoch time that gives 60 minutes.
REFERENCE_PRESET = "cifar10-r20narrow-t1-baseline"
REFERENCE_SECONDS = 70.0
BUDGET_MINUTES = 60.0
TRAIN_IMAGES = 50_000


def budget_minutes(reference_seconds: float) -> float:
    """The scaled budget: 60 minutes times (this machine's reference epoch / 70 s)."""
    return BUDGET_MINUTES * reference_seconds / REFERENCE_SECONDS


class _FirstSteps:
    """The first ``steps`` batches of a loader, with the loader's ``set_epoch``."""

    def __init__(self, loader: DeviceLoader, steps: int) -> None:
        self.loader, self.steps = loader, min(steps, len(loader))

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        for step, batch in enumerate(self.loader):
            if step >= self.steps:
                return
            yield batch


def synthetic_cifar(batch_size: int, seed: int = 0, images_count: int = TRAIN_IMAGES
                    ) -> tuple[DeviceLoader, object]:
    """A training loader over random uint8 images of CIFAR-10's shape, with its augmentation."""
    from mpbn.data import DatasetInfo

    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (images_count, 3, 32, 32), dtype=torch.uint8,
                           generator=generator)
    labels = torch.randint(0, 10, (images_count,), generator=generator)
    loader = DeviceLoader(images, labels, batch_size=batch_size, shuffle=True,
                          augment=AugmentSpec(crop_padding=4, flip=True, cutout=16),
                          mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
                          seed=seed)
    info = DatasetInfo(name="cifar10", num_classes=10, input_shape=(3, 32, 32), mean=None,
                       std=None, kind="static", timesteps=None, split="synthetic",
                       num_train=images_count, num_test=0)
    return loader, info


def epoch_seconds(preset: str, *, data_root: str | None, steps: int | None,
                  warmup: int, overrides: dict | None = None) -> dict:
    """One training epoch of ``preset`` (with ``overrides``, as ``--set`` gives them) over all
    CIFAR-10 training images it trains on (the 50,000, minus its ``data.holdout``, ignoring
    any ``train_subset``): measured seconds."""
    cfg = apply_overrides(get_preset(preset), overrides or {})
    cfg.data.train_subset = None
    cfg.run.log_interval = 10**9  # no host reads inside the timed steps but the epoch's last
    count = TRAIN_IMAGES - (cfg.data.holdout or 0)
    if data_root:
        from mpbn.data import create_splits

        cfg.data.root = data_root
        splits = create_splits("cifar10", data_root, holdout=cfg.data.holdout,
                               batch_size=cfg.data.batch_size, cutout=cfg.data.cutout, seed=0)
        loader, info = splits.train, splits.info
    else:
        loader, info = synthetic_cifar(cfg.data.batch_size, images_count=count)
    dist = DistInfo(device=torch.device("cpu"))
    torch.manual_seed(0)
    model = build_model(cfg, info)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer, len(loader))
    full_steps = len(loader)

    def timed(count_steps: int, epoch: int) -> float:
        start = time.perf_counter()
        train_one_epoch(model, _FirstSteps(loader, count_steps), optimizer, scheduler, cfg,
                        dist, epoch=epoch, global_step=0, show_progress=False)
        return time.perf_counter() - start

    timed(warmup, epoch=1)
    timed_steps = full_steps if steps is None else max(1, min(steps, full_steps))
    seconds = timed(timed_steps, epoch=2)
    return {"preset": preset, "images": info.num_train, "steps_timed": timed_steps,
            "steps_per_epoch": full_steps, "seconds_timed": seconds,
            "epoch_seconds": seconds * full_steps / timed_steps, "epochs": cfg.optim.epochs}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", help="real CIFAR-10 folder (default: synthetic images)")
    parser.add_argument("--steps", type=int, default=None,
                        help="time only this many steps after the warm-up and extrapolate")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--also", nargs="+", default=[], metavar="PRESET",
                        help="also time these presets' epochs and say how many fit the budget")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="config overrides for the --also presets (as `mpbn train --set`); "
                        "the reference epoch is always the preset as defined")
    parser.add_argument("--json", help="also write the result to this file")
    parser.add_argument("--log", help="append the result as one JSON line to this file (a "
                        "record of every work period's reference epoch)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    reference = epoch_seconds(REFERENCE_PRESET, data_root=args.data_root, steps=args.steps,
                              warmup=args.warmup)
    seconds = reference["epoch_seconds"]
    budget = budget_minutes(seconds)
    overrides = parse_set(args.overrides)
    others = [epoch_seconds(name, data_root=args.data_root, steps=args.steps,
                            warmup=args.warmup, overrides=overrides) for name in args.also]
    for other in others:
        other["epochs_in_budget"] = budget * 60.0 / other["epoch_seconds"]
    result = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "reference_preset": REFERENCE_PRESET,
        **{k: reference[k] for k in ("steps_timed", "steps_per_epoch", "images",
                                     "seconds_timed", "epoch_seconds")},
        "data": args.data_root or "synthetic", "budget_minutes": budget, "also": others,
        "overrides": overrides,
        "threads": torch.get_num_threads(), "allocator": allocator(), "torch": torch.__version__,
        "cpus": os.cpu_count(), "host": platform.processor() or platform.machine(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"allocator: {allocator()}, load average {result['load_average']}")
    full = reference["steps_timed"] == reference["steps_per_epoch"]
    what = "the whole epoch" if full else (f"{reference['steps_timed']} of "
                                            f"{reference['steps_per_epoch']} steps")
    print(f"reference epoch ({REFERENCE_PRESET}, {reference['images']} images, {what}): "
          f"{seconds:.1f} s")
    print(f"budget: {BUDGET_MINUTES:.0f} min x {seconds:.1f} s / {REFERENCE_SECONDS:.0f} s "
          f"= {budget:.1f} min of train_time")
    for other in others:
        label = other["preset"] + (f" with {' '.join(args.overrides)}" if overrides else "")
        print(f"{label}: {other['epoch_seconds']:.1f} s per epoch "
              f"({other['images']} images; {other['epoch_seconds'] / seconds:.2f} reference "
              f"epochs): {other['epochs_in_budget']:.1f} epochs fit the budget (preset: "
              f"{other['epochs']}; evaluation of the held-out split not included)")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
    if args.log:
        with open(args.log, "a") as handle:
            handle.write(json.dumps(result) + "\n")
    if not math.isfinite(seconds):
        sys.exit(1)
    return result


if __name__ == "__main__":
    main()
