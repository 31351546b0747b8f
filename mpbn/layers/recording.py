"""Record what every :class:`~mpbn.layers.neuron.LIF` of a model emits, with forward hooks.

One helper for every reader of spikes: the training loop's mean firing rate
(:class:`mpbn.engine.metrics.SpikeRateMeter`), the fold check (:func:`mpbn.spike_mismatch`) and
the per-layer, per-step activity of :mod:`mpbn.analysis.spikes`. ``keep`` says what is kept per
LIF call, so each reader pays only for what it reads::

    with record_spikes(model, keep="counts") as record:
        for x in batches:
            model(x)
    record.spikes_per_step["body.1"]  # float64 [T]: spikes of that layer at each step

Hooks are removed when the ``with`` block ends, also on an error.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from mpbn.layers.neuron import LIF

__all__ = ["KEEP", "SpikeRecord", "record_spikes"]

#: What :func:`record_spikes` keeps of each LIF call.
KEEP = ("tensors", "counts", "total")


@dataclass
class SpikeRecord:
    """What :func:`record_spikes` collected; the fields of other ``keep`` modes stay empty.

    Attributes:
        keep: ``"tensors"``, ``"counts"`` or ``"total"``.
        names: Names (as in ``model.named_modules()``; ``""`` for the model itself) of the
            hooked LIF modules, in module order.
        outputs: ``keep="tensors"``: ``(name, spikes)`` of every LIF call in call order, the
            detached output ``[T, B, ...]`` itself (a LIF called twice appears twice). Memory:
            every spike tensor of the run.
        spikes_per_step: ``keep="counts"``: per LIF, the sum of ``|spikes|`` at each step over
            the batch and all calls, float64 ``[T]`` on the model's device (zero-padded where
            calls had fewer steps); in order of first call. Memory: ``T`` numbers per layer.
        neurons: ``keep="counts"``: per LIF, neurons per step and sample (``prod(shape[2:])``).
        total_spikes: ``keep="total"``: the sum of all spikes of all LIF calls, a 0-dim float32
            tensor on the device (no host sync while recording); ``None`` before any call.
        neuron_steps: ``keep="total"``: the number of spike entries summed into
            ``total_spikes`` (neurons x steps x samples).
    """

    keep: str = "counts"
    names: list[str] = field(default_factory=list)
    outputs: list[tuple[str, Tensor]] = field(default_factory=list)
    spikes_per_step: dict[str, Tensor] = field(default_factory=dict)
    neurons: dict[str, int] = field(default_factory=dict)
    total_spikes: Tensor | None = None
    neuron_steps: int = 0

    @property
    def rate(self) -> float:
        """``keep="total"``: the mean firing rate, spikes per neuron-step (0 before any call)."""
        if self.total_spikes is None or self.neuron_steps == 0:
            return 0.0
        return float(self.total_spikes) / self.neuron_steps

    def _add(self, name: str, spikes: Tensor) -> None:
        spikes = spikes.detach()
        if self.keep == "tensors":
            self.outputs.append((name, spikes))
        elif self.keep == "counts":
            per_step = spikes.abs().flatten(1).sum(1).double()
            old = self.spikes_per_step.get(name)
            if old is None:
                self.neurons[name] = math.prod(spikes.shape[2:])
                self.spikes_per_step[name] = per_step
                return
            steps = per_step.numel()
            if old.numel() < steps:
                old = self.spikes_per_step[name] = F.pad(old, (0, steps - old.numel()))
            old[:steps] += per_step
        else:
            total = spikes.float().sum()
            self.total_spikes = total if self.total_spikes is None else self.total_spikes + total
            self.neuron_steps += spikes.numel()


@contextmanager
def record_spikes(model: nn.Module, keep: str = "counts", *,
                  into: SpikeRecord | None = None) -> Iterator[SpikeRecord]:
    """Hook every LIF of ``model`` and collect its spikes while the ``with`` block runs.

    Args:
        model: Any module; every :class:`~mpbn.layers.neuron.LIF` in it (``model`` itself
            included) is recorded.
        keep: ``"tensors"`` (every output, in call order: compare two models spike by spike),
            ``"counts"`` (running per-layer, per-step sums: activity maps over many batches) or
            ``"total"`` (one running sum and count: a mean firing rate). See
            :class:`SpikeRecord`.
        into: Continue accumulating into this record (several ``with`` blocks, one total);
            its ``keep`` must equal ``keep``.

    Yields:
        The :class:`SpikeRecord`, filled as the model runs.

    Raises:
        ValueError: Unknown ``keep``, or ``into`` kept something else.
    """
    if keep not in KEEP:
        raise ValueError(f"unknown keep {keep!r}; valid: {', '.join(KEEP)}")
    if into is not None and into.keep != keep:
        raise ValueError(f"cannot record keep={keep!r} into a record of keep={into.keep!r}")
    record = into if into is not None else SpikeRecord(keep=keep)
    handles = []
    try:
        for name, module in model.named_modules():
            if isinstance(module, LIF):
                if name not in record.names:
                    record.names.append(name)
                handles.append(module.register_forward_hook(_hook(record, name)))
        yield record
    finally:
        for handle in handles:
            handle.remove()


def _hook(record: SpikeRecord, name: str) -> Any:
    def hook(module: nn.Module, inputs: Any, output: Tensor) -> None:
        record._add(name, output)
    return hook
