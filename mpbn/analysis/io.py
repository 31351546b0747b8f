"""Reading the run directories written by ``mpbn train``, and rebuilding models from checkpoints.

Layout (see :mod:`mpbn.engine`)::

    RUN_DIR/config.json
    RUN_DIR/summary.json                 {"name", "config", "seeds", "final_test_acc", ...}
    RUN_DIR/seed_<s>/metrics.jsonl       one JSON object per epoch
    RUN_DIR/seed_<s>/result.json         the seed's final numbers, once it finished
    RUN_DIR/seed_<s>/last.pt, best.pt    {"model": state_dict, "config": dict, ...}

Models are rebuilt by the engine's one loader, :func:`mpbn.engine.loading.load_model`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["Run", "load_run", "read_metrics", "model_from_checkpoint", "model_kwargs_from_config",
           "load_test_sample", "find_checkpoint", "checkpoint_config"]


@dataclass
class Run:
    """A finished (or partial) training run.

    Attributes:
        path: The run directory.
        name: ``summary["name"]``, else ``config["name"]``, else the directory name.
        config: ``config.json`` as a nested dict (older flat ones converted; ``{}`` when
            missing).
        summary: ``summary.json`` (``{}`` when missing).
        metrics: ``{seed: [epoch records]}`` from every ``seed_<s>/metrics.jsonl``.
        checkpoints: ``{seed: path}`` of the checkpoint to analyse (``last.pt``, else ``best.pt``).
        results: ``{seed: result.json}`` of the seeds that finished (``summary.json`` is only
            written once every seed has).
    """

    path: Path
    name: str
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    metrics: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    checkpoints: dict[int, Path] = field(default_factory=dict)
    results: dict[int, dict[str, Any]] = field(default_factory=dict)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Epoch records of one ``metrics.jsonl``, sorted by epoch; blank or torn lines are skipped.

    A run killed mid-write can leave a partial last line; the records before it are kept.
    """
    records = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return sorted(records, key=lambda r: r.get("epoch", 0))


def _seed_of(folder: Path) -> int | None:
    try:
        return int(folder.name.split("_", 1)[1])
    except (IndexError, ValueError):
        return None


def find_checkpoint(seed_dir: Path, prefer: str = "last") -> Path | None:
    """``seed_dir/last.pt`` (or ``best.pt`` with ``prefer="best"``), else the other, else None."""
    order = ("last.pt", "best.pt") if prefer == "last" else ("best.pt", "last.pt")
    for name in order:
        if (seed_dir / name).is_file():
            return seed_dir / name
    return None


def load_run(run_dir: str | Path, prefer: str = "last") -> Run:
    """Read config, summary, per-seed metrics and checkpoint paths of a run directory.

    Missing pieces are left empty, so a run still training can be plotted.

    Raises:
        FileNotFoundError: ``run_dir`` is not a directory.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"run directory {path} does not exist")

    def read(name: str) -> dict[str, Any]:
        f = path / name
        return json.loads(f.read_text()) if f.is_file() else {}

    config, summary = read("config.json"), read("summary.json")
    if not config and isinstance(summary.get("config"), dict):
        config = summary["config"]
    config = _nested(config) if config else config
    name = summary.get("name") or config.get("name") or path.name
    run = Run(path=path, name=str(name), config=config, summary=summary)
    for seed_dir in sorted(path.glob("seed_*")):
        seed = _seed_of(seed_dir)
        if seed is None or not seed_dir.is_dir():
            continue
        if (seed_dir / "metrics.jsonl").is_file():
            run.metrics[seed] = read_metrics(seed_dir / "metrics.jsonl")
        result = seed_dir / "result.json"
        if result.is_file():
            try:
                run.results[seed] = json.loads(result.read_text())
            except json.JSONDecodeError:  # written atomically by the engine; a stray copy
                pass
        ckpt = find_checkpoint(seed_dir, prefer)
        if ckpt is not None:
            run.checkpoints[seed] = ckpt
    return run


def _nested(config: dict[str, Any]) -> dict[str, Any]:
    """A saved config in the nested layout (older runs wrote it flat); as is if unreadable."""
    from mpbn.engine.config import ConfigError, TrainConfig

    try:
        return TrainConfig.from_dict(config).to_dict()
    except (ConfigError, TypeError):
        return config


def model_kwargs_from_config(config: dict[str, Any],
                             input_shape: tuple[int, ...] | None = None,
                             num_classes: int | None = None) -> dict[str, Any]:
    """The ``mpbn.models.create`` keyword arguments of a saved training config, with ``name``.

    ``config`` is a :class:`mpbn.engine.config.TrainConfig` dict (nested, or flat from older
    runs); the dataset's shapes come from ``input_shape``/``num_classes``, else the dataset.
    """
    from mpbn.engine.config import TrainConfig
    from mpbn.engine.loading import DataShape, create_kwargs, data_shape_of

    cfg = TrainConfig.from_dict(config)
    shape = (DataShape(int(num_classes), tuple(input_shape))
             if input_shape is not None and num_classes is not None else data_shape_of(cfg))
    return {"name": cfg.model.name, **create_kwargs(cfg, shape)}


def checkpoint_config(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The training config stored in a checkpoint (the engine stores it as a JSON string)."""
    config = ckpt.get("config", {})
    return json.loads(config) if isinstance(config, str) else dict(config)


def model_from_checkpoint(path: str | Path, map_location: str = "cpu",
                          overrides: dict[str, Any] | None = None
                          ) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a checkpoint and load its weights: :func:`mpbn.engine.load_model`.

    Args:
        path: A checkpoint file (or a folder written by ``mpbn fold``).
        map_location: Where the model is put.
        overrides: Config overrides (``{"data.root": DIR}`` when the data moved), applied to
            the returned config too.

    Returns:
        ``(model in eval mode, training config as a nested dict)``.
    """
    from mpbn.engine.loading import load_model

    model, cfg, _ = load_model(path, map_location, overrides)
    return model, cfg.to_dict()


def load_test_sample(config: dict[str, Any], n_samples: int = 512, seed: int = 0,
                     device: str = "cpu", overrides: dict[str, Any] | None = None
                     ) -> tuple[Tensor, Tensor, Any]:
    """A fixed, class-stratified sample of the test set of a run's dataset.

    ``config`` is a training config dict (nested, or flat from older runs); ``overrides``
    (``{"data.root": DIR}`` when the data moved) are applied to it first.

    Returns:
        ``(x, y, info)``: ``x`` is ``[N, ...]`` (static) or ``[T, N, ...]`` (sequence), normalized
        as in training; ``info`` is the :class:`mpbn.data.DatasetInfo`.
    """
    from mpbn.data import create_loaders
    from mpbn.engine.config import TrainConfig, apply_overrides

    cfg = TrainConfig.from_dict(config)
    cfg = apply_overrides(cfg, overrides) if overrides else cfg
    name, root = cfg.data.name, cfg.data.root
    # Event datasets need the run's T; Sequential MNIST fixes its own; static sets ignore it.
    steps = None if name == "smnist" else cfg.model.timesteps
    kwargs = dict(batch_size=max(n_samples, 1), eval_batch_size=max(n_samples, 1),
                  augment=False, num_workers=0, device=device, seed=seed,
                  split=cfg.data.split, timesteps=steps)
    try:
        _, test_loader, info = create_loaders(name, root, test_subset=n_samples, **kwargs)
    except ValueError:  # asked for more samples than the test set holds: take all of it
        _, test_loader, info = create_loaders(name, root, **kwargs)
    xs, ys = [], []
    for xb, yb in test_loader:
        xs.append(xb)
        ys.append(yb)
    seq = info.kind == "sequence"
    x = torch.cat(xs, dim=1 if seq else 0)
    y = torch.cat(ys)
    return (x[:, :n_samples] if seq else x[:n_samples]), y[:n_samples], info
