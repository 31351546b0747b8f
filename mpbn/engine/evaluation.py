"""The one evaluation pass: test loss, accuracy (a fraction in [0, 1]) and spike rate.

The training loop, ``mpbn eval`` and every analysis call :func:`evaluate`; accuracies are
fractions everywhere in the library and in the files it writes (``metrics.jsonl``,
``summary.json``, analysis JSON/CSV), and become percent only where text is printed.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mpbn.engine.distributed import DistInfo, all_reduce_sum
from mpbn.engine.metrics import SpikeRateMeter
from mpbn.layers.fold import SpikeMismatch, fold, spike_mismatch

__all__ = ["evaluate", "EVAL_SEED", "FlipAveraged", "float64_spike_mismatch",
           "fold_and_evaluate", "prepare_input"]

EVAL_SEED = 12345  # Poisson encoding draws from this fixed stream in evaluation: repeatable


def prepare_input(x: Tensor, cfg: Any) -> Tensor:
    """The input in the memory format of the config (channels-last for 4-d images)."""
    if cfg is not None and cfg.run.channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def _device_of(model: nn.Module) -> torch.device:
    tensor = next(model.parameters(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], cfg: Any = None,
             dist: DistInfo | None = None, *, measure_spikes: bool = True,
             seed: int | None = EVAL_SEED) -> dict[str, float]:
    """Test loss, accuracy and mean LIF spike rate of ``model`` in eval mode, over ranks.

    Runs under a forked RNG seeded with ``seed + rank``: Poisson encodings are the same for
    every evaluation (folded vs unfolded compare like for like), and evaluating does not move
    the caller's RNG (so resumed and uninterrupted runs stay identical).

    Args:
        batches: ``(x, y)`` pairs: a test loader, or chunks of a fixed sample.
        cfg: The :class:`~mpbn.engine.config.TrainConfig` (channels-last); None: as stored.
            ``run.amp`` does not apply: evaluation runs in the weights' dtype (float32), since
            a spike is a threshold test and bf16 rounding flips the potentials near it (a
            fastnet trained in bf16: 83.16% on the CIFAR-10 test set evaluated in bf16, 83.66%
            in float32; docs/PERFORMANCE.md).
        dist: Process group information; None: one process on the model's device.
        measure_spikes: Count spikes with LIF forward hooks (``spike_rate``; 0 when off).
        seed: Seed of the RNG during the pass; None: the caller's RNG, untouched.

    Returns:
        ``{"test_loss": mean cross-entropy, "test_acc": fraction correct in [0, 1],
        "spike_rate": spikes per neuron and step}``.
    """
    dist = dist or DistInfo(device=_device_of(model))
    was_training = model.training
    model.eval()
    device = dist.device
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.float64)
    count = 0
    meter = SpikeRateMeter()
    devices = [device] if device.type == "cuda" else []
    rng = (contextlib.nullcontext() if seed is None
           else torch.random.fork_rng(devices=devices))
    with rng, (meter.measure(model) if measure_spikes else contextlib.nullcontext()):
        if seed is not None:
            torch.manual_seed(seed + dist.rank)
        for x, y in batches:
            logits = model(prepare_input(x, cfg)).float()
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


class FlipAveraged(nn.Module):
    """Test-time flip: the mean of the logits of a batch and of its horizontal mirror."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return 0.5 * (self.model(x) + self.model(x.flip(-1)))


# ------------------------------------------------------------------------------------------
# the folded model: MPBN and BN folded into thresholds and weights


def fold_and_evaluate(model: nn.Module, test_loader: Any, cfg: Any,
                      dist: DistInfo) -> tuple[nn.Module, dict[str, float], SpikeMismatch]:
    """Fold MPBN (and foldable BN) away, evaluate the folded copy, compare their spikes.

    The spikes are compared on the first test batch (for the demo set: the whole test set),
    under the same encoder randomness.
    """
    # ``model`` is the plain tree (synchronized norms wrap a converted copy that shares its
    # tensors: mpbn.layers.sync), so it deep-copies and folds as is.
    folded = fold(model)
    metrics = evaluate(folded, test_loader, cfg, dist, measure_spikes=False)
    x, _ = next(iter(test_loader))
    mismatch = spike_mismatch(model, folded, prepare_input(x, cfg), seed=EVAL_SEED)
    return folded, metrics, mismatch


def float64_spike_mismatch(model: nn.Module, test_loader: Any, cfg: Any) -> SpikeMismatch:
    """The fold's spike mismatch recomputed in float64, on the batch :func:`fold_and_evaluate`
    compares (the first test batch): 0 means the float32 mismatches are rounding at the
    threshold (a potential within float32 rounding of ``V~`` fires on one side only), not a
    folding error. Copies the model; ``model`` is left as it is.
    """
    reference = copy.deepcopy(model).double()
    folded = fold(reference)
    x, _ = next(iter(test_loader))
    return spike_mismatch(reference, folded, prepare_input(x, cfg).double(), seed=EVAL_SEED)
