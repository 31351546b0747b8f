"""Activation checkpointing for the body of a spiking net: keep segment inputs, recompute inside.

With the layer-by-layer layout of the zoo every layer runs over all ``T`` steps at once, so what
a training step keeps for backward grows as ``T x layers`` (a conv's input spikes, a norm's input,
a LIF's ``u_pre``: about 9 B per neuron-step and layer). For long sequences (BNTT's T = 25-50,
Sequential MNIST's T = 784) checkpointing keeps only the input of each segment, over all ``T``
(float spikes, 4 B per element), and recomputes the segment's forward during backward: memory
falls to about one segment's activations plus a boundary per segment, for one more forward.

Checkpointing inside one neuron over time would not help here: the fused neuron's backward needs
``u_pre`` at every step, and recomputing it needs the input currents, which are the same size.

Two details make the recompute exact:

- ``torch.utils.checkpoint`` replays the forward with the RNG state of the first run, so Poisson
  noise or dropout inside a segment is the same (the input encoding runs outside the body).
- A norm in training updates its running statistics in forward, so a replay would update them
  twice; the replay restores every buffer of the segment to its value before the replay.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from mpbn.layers import LIF

__all__ = ["body_units", "run_checkpointed"]


def _has_neuron(module: nn.Module) -> bool:
    return any(isinstance(m, LIF) for m in module.modules())


def body_units(body: nn.Sequential) -> list[list[nn.Module]]:
    """Split a body into units that each end in spikes (a LIF, or a block ending in one).

    Nested ``nn.Sequential`` (a ResNet stage) is opened, so a unit is at most one residual block,
    or one ``conv-norm-LIF`` with the pooling before it. Modules after the last LIF form a last
    unit.
    """
    flat: list[nn.Module] = []
    for child in body:
        flat.extend(child if isinstance(child, nn.Sequential) else [child])
    units: list[list[nn.Module]] = []
    current: list[nn.Module] = []
    for module in flat:
        current.append(module)
        if _has_neuron(module):
            units.append(current)
            current = []
    if current:
        units.append(current)
    return units


@contextlib.contextmanager
def _buffers_restored(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Undo in-place buffer updates (running statistics, batch counters) made inside."""
    saved = [(b, b.detach().clone()) for m in modules for b in m.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


def _segment_fn(modules: Sequence[nn.Module]):
    """The segment's forward; every call after the first (the replay) leaves buffers as it
    found them."""
    calls = 0

    def forward(x: Tensor) -> Tensor:
        nonlocal calls
        calls += 1
        with _buffers_restored(modules) if calls > 1 else contextlib.nullcontext():
            for module in modules:
                x = module(x)
        return x

    return forward


def run_checkpointed(units: Sequence[Sequence[nn.Module]], x: Tensor, every: int = 1) -> Tensor:
    """Run ``units`` in order, checkpointing ``every`` (>= 1) consecutive units as one segment."""
    for start in range(0, len(units), every):
        modules = [m for unit in units[start:start + every] for m in unit]
        x = checkpoint(_segment_fn(modules), x, use_reentrant=False)
    return x
