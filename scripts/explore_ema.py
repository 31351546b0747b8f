"""Several weight averages (EMA decays) of one training run, measured on the held-out split.

Issue 18 asks for an EMA of the weights to be tried on the held-out split. One run keeps an
average per decay side by side (``mpbn.engine.ema.WeightEMA``, updated after every optimizer
step through the engine's ``"after_step"`` hook, so each equals what ``--set
optim.ema_decay=D`` keeps) and evaluates each on the held-out split at the chosen epochs, next
to the raw weights' ``val_acc`` of the same epoch. The test set is not looked at for the
averages; the run itself is an ordinary ``mpbn train`` run directory.

Usage::

    python scripts/explore_ema.py cifar10-fast-t1-baseline --data-root DIR --out OUT \\
        --decays 0.99 0.995 0.998 0.999 --set optim.epochs=14 run.seeds=1 run.tta_flip=false

writes ``OUT/ema_heldout.jsonl`` (one line per epoch and decay: ``epoch``, ``decay``,
``val_acc``, ``val_loss``, ``raw_val_acc``) and prints the table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from mpbn.engine.config import TrainConfig, apply_overrides, parse_set
from mpbn.engine.distributed import DistInfo
from mpbn.engine.ema import WeightEMA
from mpbn.engine.evaluation import evaluate
from mpbn.engine.presets import get_preset
from mpbn.engine.train import RunOptions, build_splits, run


class Averages:
    """The ``hook`` that keeps one :class:`WeightEMA` per decay and measures them."""

    def __init__(self, cfg: TrainConfig, decays: list[float], eval_epochs: set[int],
                 log: Path) -> None:
        self.cfg, self.decays, self.eval_epochs, self.log = cfg, decays, eval_epochs, log
        self.averages: dict[float, WeightEMA] = {}
        self.rows: list[dict[str, Any]] = []
        self._holdout = None

    def holdout(self, device: torch.device) -> Any:
        if self._holdout is None:
            splits = build_splits(self.cfg, self.cfg.run.seed, DistInfo(device=device))
            if splits.holdout is None:
                raise SystemExit("explore_ema: the run has no held-out split; set data.holdout")
            self._holdout = splits.holdout
        return self._holdout

    def __call__(self, event: str, model: Any = None, epoch: int = 0, **_: Any) -> None:
        if event == "after_step":
            if not self.averages:
                self.averages = {d: WeightEMA(model, d) for d in self.decays}
            for average in self.averages.values():
                average.update(model)
        elif event == "epoch_end" and epoch in self.eval_epochs:
            for decay, average in self.averages.items():
                device = next(average.module.parameters()).device
                measured = evaluate(average.module, self.holdout(device), self.cfg)
                row = {"epoch": epoch, "decay": decay, "val_acc": measured["test_acc"],
                       "val_loss": measured["test_loss"]}
                self.rows.append(row)
                with self.log.open("a") as f:
                    f.write(json.dumps(row) + "\n")


def explore(cfg: TrainConfig, decays: list[float], out: Path,
            eval_epochs: set[int] | None = None) -> list[dict[str, Any]]:
    """Train ``cfg`` into ``out`` with the averages; their rows with the raw ``val_acc``."""
    if cfg.run.seeds != 1:
        raise SystemExit("explore_ema: one seed per exploration (set run.seeds=1)")
    epochs = eval_epochs or {cfg.optim.epochs}
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"explore_ema: {out} is not empty; give a new --out (nothing there is "
                         "overwritten)")
    out.mkdir(parents=True, exist_ok=True)
    log = out / "ema_heldout.jsonl"
    averages = Averages(cfg, decays, epochs, log)
    run(cfg, RunOptions(out=out, quiet=True, hooks=[averages]))
    raw = {line["epoch"]: line["val_acc"] for line in map(
        json.loads, (out / f"seed_{cfg.run.seed}" / "metrics.jsonl").read_text().splitlines())}
    rows = [row | {"raw_val_acc": raw[row["epoch"]]} for row in averages.rows]
    log.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--decays", nargs="+", type=float, required=True)
    parser.add_argument("--eval-epochs", nargs="+", type=int, default=None,
                        help="epochs at which the averages are measured (default: the last)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    bad = [d for d in args.decays if not 0 < d < 1]
    if bad:
        parser.error(f"--decays must each be in (0, 1), got {', '.join(map(str, bad))}")
    cfg = apply_overrides(get_preset(args.preset),
                          {**parse_set(args.set), "data.root": args.data_root}).validate()
    rows = explore(cfg, args.decays, args.out,
                   None if args.eval_epochs is None else set(args.eval_epochs))
    print("| epoch | decay | held-out acc of the average (%) | raw weights (%) |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['epoch']} | {row['decay']} | {100 * row['val_acc']:.2f} | "
              f"{100 * row['raw_val_acc']:.2f} |")


if __name__ == "__main__":
    main()
