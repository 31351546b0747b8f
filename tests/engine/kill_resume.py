"""Kill a tiny run at seeded random instants, resume it, compare with an uninterrupted run.

Shared by ``tests/engine/test_kill_resume.py`` (a few trials in CI) and
``scripts/kill_resume_trials.py`` (many): the same code path.

A "kill" is a ``KeyboardInterrupt`` raised at the k-th call of one of these points:

- ``save_before`` / ``save_after``: ``mpbn.engine.train.save_checkpoint``, before or after
  the (atomic) write of ``last.pt`` or ``best.pt``;
- ``replace``: ``os.replace``, the rename of every atomic write (checkpoints, config.json,
  result.json, summary.json, the metrics rewrite of a resume);
- ``metrics_before`` / ``metrics_half`` / ``metrics_after``: ``MetricsWriter.write``, before
  the line, after half of it, after all of it;
- ``step``: a training step (a ``RunOptions`` hook), mid-epoch.

The interrupted run is then resumed (``--resume`` when its ``config.json`` exists, else
started again with ``--force``), and may be killed again. The result must equal the
uninterrupted run bit for bit on CPU: every tensor of ``last.pt`` and ``best.pt``, every
metrics line and ``result.json`` (timing fields and the commit aside).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from mpbn.engine import train as train_module
from mpbn.engine.checkpoint import load_checkpoint
from mpbn.engine.config import TrainConfig, apply_overrides
from mpbn.engine.metrics import MetricsWriter
from mpbn.engine.train import RunOptions, run

#: Kill points and the call counter each one uses.
POINTS = {"save_before": "save", "save_after": "save", "replace": "replace",
          "metrics_before": "metrics", "metrics_half": "metrics", "metrics_after": "metrics",
          "step": "step"}
#: Fields that measure time (or name the code), not what was computed.
TIMING = {"epoch_time", "images_per_s", "train_time", "commit"}


class Killed(KeyboardInterrupt):
    """The simulated kill (a KeyboardInterrupt, as Ctrl-C or the CLI's handler sees it)."""


def tiny_config(checkpoint_every: int = 0, epochs: int = 3) -> TrainConfig:
    """tests/engine/conftest.py's ``tiny_config`` (4 steps an epoch), ``epochs`` long."""
    return apply_overrides(TrainConfig(), dict(
        epochs=epochs, train_subset=256, test_subset=128, batch_size=64, eval_batch_size=128,
        timesteps=2, log_interval=2, fold=False, checkpoint_every=checkpoint_every))


class Killer:
    """Counts the calls of every point; raises :class:`Killed` at the ``k``-th of ``point``."""

    def __init__(self, point: str | None = None, k: int = 0) -> None:
        self.point, self.k = point, k
        self.counts: Counter[str] = Counter()

    def due(self, counter: str, *modes: str) -> str | None:
        """Count a call of ``counter``; the kill mode (one of ``modes``) when it is due."""
        self.counts[counter] += 1
        if (self.point is not None and POINTS[self.point] == counter
                and self.counts[counter] == self.k):
            return next(m for m in modes if self.point == m)
        return None

    def die(self, where: str) -> None:
        raise Killed(f"killed at {self.point} #{self.k} ({where})")

    @contextlib.contextmanager
    def armed(self) -> Iterator[list[Any]]:
        """Patch the points for the duration; yields the hooks to give ``RunOptions``."""
        real_save, real_replace = train_module.save_checkpoint, os.replace
        real_write = MetricsWriter.write
        killer = self

        def save(path: Any, payload: dict[str, Any]) -> Any:
            mode = killer.due("save", "save_before", "save_after")
            if mode == "save_before":
                killer.die(str(path))
            result = real_save(path, payload)
            if mode == "save_after":
                killer.die(str(path))
            return result

        def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
            if killer.due("replace", "replace"):
                # A real kill leaves the temporary file (atomic_write removes it on an
                # exception): keep a copy under a name of the same pattern.
                if Path(src).is_file():
                    os.link(src, f"{src}.killed.tmp")
                killer.die(str(dst))
            real_replace(src, dst, *args, **kwargs)

        def write(self: MetricsWriter, record: dict[str, Any]) -> None:
            mode = killer.due("metrics", "metrics_before", "metrics_half", "metrics_after")
            if mode == "metrics_before":
                killer.die(str(self.path))
            if mode == "metrics_half":
                line = json.dumps(record)
                with open(self.path, "a") as handle:
                    handle.write(line[: len(line) // 2])
                killer.die(str(self.path))
            real_write(self, record)
            if mode == "metrics_after":
                killer.die(str(self.path))

        def step_hook(event: str, **_: Any) -> None:
            if event == "step" and killer.due("step", "step"):
                killer.die("a training step")

        train_module.save_checkpoint, os.replace = save, replace
        MetricsWriter.write = write  # type: ignore[method-assign]
        try:
            yield [step_hook]
        finally:
            train_module.save_checkpoint, os.replace = real_save, real_replace
            MetricsWriter.write = real_write  # type: ignore[method-assign]


def reference_run(cfg: TrainConfig, out: Path) -> Counter[str]:
    """The uninterrupted run into ``out``; returns how often each counter was called."""
    killer = Killer()
    with killer.armed() as hooks:
        run(cfg, RunOptions(out=out, quiet=True, hooks=hooks))
    return killer.counts


def kill_resume_trial(cfg: TrainConfig, out: Path, counts: Counter[str], rng: random.Random,
                      *, max_kills: int = 3) -> list[str]:
    """Run ``cfg`` into ``out``, killed at a random point at least once and up to
    ``max_kills`` times (each time resumed), to the end. Returns the kills that happened."""
    kills: list[str] = []
    while True:
        killer = Killer()
        if len(kills) < max_kills and (not kills or rng.random() < 0.5):
            point = rng.choice(sorted(POINTS))
            killer = Killer(point, rng.randint(1, counts[POINTS[point]]))
        resume = (out / "config.json").exists()
        force = not resume and out.exists() and any(out.iterdir())
        try:
            with killer.armed() as hooks:
                run(cfg, RunOptions(out=out, quiet=True, resume=resume, force=force,
                                    hooks=hooks))
        except Killed as kill:
            kills.append(str(kill))
            continue
        return kills


def _assert_same(a: Any, b: Any, where: str) -> None:
    """Every tensor ``torch.equal``, every other leaf ``==``; timing fields skipped."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            if key not in TIMING:
                _assert_same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_run(out: Path, reference: Path) -> None:
    """``out`` holds what the uninterrupted ``reference`` run holds, bit for bit."""
    for seed_dir in sorted(reference.glob("seed_*")):
        mine = out / seed_dir.name
        for name in ("last.pt", "best.pt"):
            _assert_same(load_checkpoint(mine / name), load_checkpoint(seed_dir / name),
                         str(mine / name))
        for name in ("metrics.jsonl",):
            lines = [json.loads(x) for x in (mine / name).read_text().splitlines()]
            expected = [json.loads(x) for x in (seed_dir / name).read_text().splitlines()]
            _assert_same(lines, expected, str(mine / name))
        _assert_same(json.loads((mine / "result.json").read_text()),
                     json.loads((seed_dir / "result.json").read_text()),
                     str(mine / "result.json"))
    summary = json.loads((out / "summary.json").read_text())
    expected = json.loads((reference / "summary.json").read_text())
    for key in ("final_test_acc", "best_test_acc", "config", "seeds"):
        assert summary[key] == expected[key], f"{out / 'summary.json'}: {key}"
    left = [p for p in out.rglob("*.tmp")]
    assert not left, f"temporary files left: {left}"
