"""Helpers shared by the analyses: running a model on a sample, time-step overrides, output files.

Every analysis evaluates in eval mode with the trained running statistics, on a fixed sample
of the test set, in chunks so memory stays bounded, and with a fixed seed so stochastic
encoders (Poisson) give the same spikes for every evaluation.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["with_timesteps", "evaluate", "forward_logits", "seeded", "eval_mode", "save_figure",
           "write_json", "write_csv", "new_figure"]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for the block; the previous training flag is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Fork the global RNG and seed it, so a Poisson encoder draws the same spikes each time."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextmanager
def with_timesteps(model: nn.Module, timesteps: int | None) -> Iterator[nn.Module]:
    """Temporarily set ``model.timesteps`` (the number of steps a static input is encoded over).

    The model zoo reads ``self.timesteps`` at forward time; per-step norms (BNTT, TEBN) accept
    fewer steps than they were built for and use the first ones, which is what running "up to
    the exit step" (BNTT Sec. 3.4) needs.
    """
    if timesteps is None:
        yield model
        return
    if not hasattr(model, "timesteps"):
        raise AttributeError(f"{type(model).__name__} has no `timesteps` attribute to override")
    old = model.timesteps
    if not 1 <= int(timesteps) <= int(old):
        raise ValueError(f"timesteps must be in [1, {old}], got {timesteps}")
    model.timesteps = int(timesteps)
    try:
        yield model
    finally:
        model.timesteps = old


def truncate_sequence(x: Tensor, model: nn.Module, timesteps: int | None) -> Tensor:
    """The first ``timesteps`` steps of a sequence input ``[T, B, ...]``; static inputs pass."""
    return x[:timesteps] if timesteps is not None and is_sequence(x, model) else x


def forward_logits(model: nn.Module, x: Tensor, timesteps: int | None = None) -> Tensor:
    """Logits of ``model`` on ``x``, run for only ``timesteps`` steps when given."""
    with with_timesteps(model, timesteps):
        return model(truncate_sequence(x, model, timesteps))


def is_sequence(x: Tensor, model: nn.Module) -> bool:
    """Whether ``x`` is a time-first sequence ``[T, B, *input_shape]`` for ``model``."""
    shape = getattr(model, "input_shape", None)
    return shape is not None and x.dim() == len(shape) + 2


def batch_size_of(x: Tensor, model: nn.Module) -> int:
    """Number of samples in ``x`` (dim 0 for a static batch, dim 1 for a sequence)."""
    return x.shape[1] if is_sequence(x, model) else x.shape[0]


def chunks(x: Tensor, y: Tensor, model: nn.Module,
           batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Split a sample into batches along its batch axis (dim 1 for sequences)."""
    seq = is_sequence(x, model)
    for i in range(0, int(y.shape[0]), batch_size):
        yield (x[:, i:i + batch_size] if seq else x[i:i + batch_size]), y[i:i + batch_size]


def evaluate(model: nn.Module, x: Tensor, y: Tensor, *, timesteps: int | None = None,
             batch_size: int = 256, seed: int | None = 0) -> dict[str, float]:
    """Mean cross-entropy and accuracy (a fraction) of ``model`` in eval mode on ``(x, y)``.

    The sample-in-chunks form of the engine's one :func:`mpbn.engine.evaluation.evaluate`.

    Args:
        timesteps: Run only the first ``timesteps`` steps (early exit); ``None``: all.
        batch_size: Chunk size (memory bound).
        seed: Seed of the global RNG during the run (Poisson encoding); ``None``: untouched.

    Returns:
        ``{"loss": mean cross-entropy, "acc": fraction correct in [0, 1]}``.
    """
    from mpbn.engine.evaluation import evaluate as evaluate_batches

    with with_timesteps(model, timesteps):
        batches = ((truncate_sequence(xb, model, timesteps), yb)
                   for xb, yb in chunks(x, y, model, batch_size))
        result = evaluate_batches(model, batches, measure_spikes=False, seed=seed)
    return {"loss": result["test_loss"], "acc": result["test_acc"]}


# --- output files ----------------------------------------------------------------------------

def new_figure(ncols: int = 1, nrows: int = 1, width: float = 5.0, height: float = 3.6) -> Any:
    """A matplotlib figure on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows),
                             squeeze=False, constrained_layout=True)
    return fig, axes


def save_figure(fig: Any, out_dir: str | Path, name: str,
                formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """Save ``fig`` as ``out_dir/name.{png,svg}`` and close it; returns the paths."""
    import matplotlib.pyplot as plt

    from mpbn.analysis.style import DPI

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out / f"{name}.{fmt}"
        fig.savefig(path, dpi=DPI)
        paths.append(path)
    plt.close(fig)
    return paths


def _jsonable(value: Any) -> Any:
    if isinstance(value, Tensor):
        return _jsonable(value.tolist())
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no inf/nan
    return value


def write_json(data: Any, path: str | Path) -> Path:
    """Write ``data`` as indented JSON (tensors and arrays become lists, inf becomes "inf")."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(data), indent=2) + "\n")
    return path


def write_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write a list of flat dicts as CSV; columns are the union of the rows' keys, in order
    (models with different ``T`` have different per-step columns; missing cells are empty)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="") as f:
        if rows:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _jsonable(v) for k, v in row.items()})
    return path
