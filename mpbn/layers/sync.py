"""Synchronized norms for data-parallel training: the batch statistics of all ranks together.

:func:`convert_sync_norms` returns a new module tree in which every norm with batch statistics
(:class:`~mpbn.layers.norm.SeqNorm` with running statistics, and the
:class:`~mpbn.layers.neuron.MembraneBN` inside each MPBN neuron) is replaced by its
synchronized twin, as timm's ``convert_sync_batchnorm`` does for ``nn.BatchNorm``. The twins
share the original's parameters and buffers (the same tensors), so training the converted tree
trains the original, whose state dict, ``fold`` and export stay those of a plain model; the
original's modules are not changed. :func:`revert_sync_norms` is the inverse.

A twin is a subclass of its norm that overrides only the training-mode statistics, with the
math of :mod:`mpbn.functional.sync_norm`; evaluation is unchanged (running statistics). LayerNorm
has no batch statistics and is kept as is.
"""

from __future__ import annotations

import copy

import torch.distributed as dist
from torch import Tensor, nn

from mpbn.functional.sync_norm import sync_batch_norm, sync_normalize_with_batch_stats
from mpbn.layers.neuron import MembraneBN
from mpbn.layers.norm import (
    BatchNormThroughTime,
    SeqBatchNorm,
    SeqNorm,
    TemporalEffectiveBN,
    ThresholdDependentBN,
)

__all__ = [
    "SyncBatchNormThroughTime",
    "SyncMembraneBN",
    "SyncSeqBatchNorm",
    "SyncTemporalEffectiveBN",
    "SyncThresholdDependentBN",
    "convert_sync_norms",
    "revert_sync_norms",
]


class _SyncSeqNorm:
    """Mixin: training-mode BN of a :class:`SeqNorm` with statistics over ``process_group``."""

    process_group: object

    def _batch_norm(self, x: Tensor, weight: Tensor | None, bias: Tensor | None,
                    running_mean: Tensor, running_var: Tensor) -> Tensor:
        if not self.training:
            return super()._batch_norm(x, weight, bias, running_mean, running_var)
        self.num_batches_tracked.add_(1)
        return sync_batch_norm(x, weight, bias, running_mean, running_var, self.eps,
                               self.momentum, self.process_group)


class SyncSeqBatchNorm(_SyncSeqNorm, SeqBatchNorm):
    """:class:`SeqBatchNorm` with synchronized batch statistics."""


class SyncThresholdDependentBN(_SyncSeqNorm, ThresholdDependentBN):
    """:class:`ThresholdDependentBN` with synchronized batch statistics."""


class SyncTemporalEffectiveBN(_SyncSeqNorm, TemporalEffectiveBN):
    """:class:`TemporalEffectiveBN` with synchronized batch statistics."""


class SyncBatchNormThroughTime(_SyncSeqNorm, BatchNormThroughTime):
    """:class:`BatchNormThroughTime` with synchronized per-step batch statistics."""


class SyncMembraneBN(MembraneBN):
    """:class:`MembraneBN` with each step's batch statistics over ``process_group``.

    The fused neuron does not apply (``synchronized``): the LIF runs the reference step, whose
    per-step normalization calls the synchronized function.
    """

    synchronized = True
    process_group: object

    def _batch_norm_train(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return sync_normalize_with_batch_stats(x, self._flat(self.weight), self._flat(self.bias),
                                               self.eps, self.process_group)


#: Each norm with batch statistics -> its synchronized twin (exact types: a subclass of a norm
#: has its own forward, which the twin of its base would not know).
SYNC_TWINS: dict[type[nn.Module], type[nn.Module]] = {
    SeqBatchNorm: SyncSeqBatchNorm,
    ThresholdDependentBN: SyncThresholdDependentBN,
    TemporalEffectiveBN: SyncTemporalEffectiveBN,
    BatchNormThroughTime: SyncBatchNormThroughTime,
    MembraneBN: SyncMembraneBN,
}
_PLAIN = {twin: plain for plain, twin in SYNC_TWINS.items()}


def _recast(module: nn.Module, cls: type[nn.Module], **attributes: object) -> nn.Module:
    """A new module of class ``cls`` with ``module``'s attributes, parameters and buffers (shared
    tensors, own dictionaries)."""
    new = cls.__new__(cls)
    state = dict(module.__dict__)
    for key in ("_parameters", "_buffers", "_modules"):
        state[key] = dict(state[key])
    state.pop("process_group", None)
    new.__dict__.update(state, **attributes)
    return new


def _rebuild(module: nn.Module, convert) -> nn.Module:
    """``module`` with ``convert`` applied to every descendant; containers are copied only where
    something below them changed, so the input tree is never modified."""
    replaced = convert(module)
    if replaced is not None:
        return replaced
    children = {name: _rebuild(child, convert) for name, child in module._modules.items()
                if child is not None}
    if all(children[name] is module._modules[name] for name in children):
        return module
    new = copy.copy(module)
    new._modules = dict(module._modules)
    new._modules.update(children)
    return new


def _unsupported_subclass(module: nn.Module) -> bool:
    base = isinstance(module, (SeqNorm, MembraneBN)) and type(module) not in SYNC_TWINS
    return base and type(module) not in _PLAIN and getattr(module, "running_mean", None) is not None


def convert_sync_norms(model: nn.Module, process_group: object | None = None) -> nn.Module:
    """A tree like ``model`` whose batch-statistics norms reduce their statistics over a group.

    Call it after ``init_process_group`` and before wrapping in DDP, and train the returned
    tree: ``ddp = DistributedDataParallel(convert_sync_norms(model))``. Parameters and buffers
    are shared with ``model`` (see the module docstring); ``model`` itself is not modified.

    Args:
        model: The model to convert.
        process_group: Group to reduce over; ``None`` means the default (whole world) group.

    Returns:
        The converted tree (``model`` itself when it has no such norm).

    Raises:
        TypeError: A subclass of a norm with batch statistics that has no synchronized twin
            (its own forward would run unsynchronized).
    """
    group = process_group if process_group is not None else dist.group.WORLD

    def convert(module: nn.Module) -> nn.Module | None:
        if _unsupported_subclass(module):
            raise TypeError(f"{type(module).__name__} has batch statistics but no synchronized "
                            f"twin; supported: {', '.join(c.__name__ for c in SYNC_TWINS)}")
        twin = SYNC_TWINS.get(type(module))
        if twin is None or (twin is not SyncMembraneBN
                            and getattr(module, "running_mean", None) is None):
            return None
        return _recast(module, twin, process_group=group)

    return _rebuild(model, convert)


def revert_sync_norms(model: nn.Module) -> nn.Module:
    """The inverse of :func:`convert_sync_norms`: the same tree with plain norms (shared tensors).

    Folding and export want the plain model; process groups cannot be deep-copied.
    """

    def revert(module: nn.Module) -> nn.Module | None:
        plain = _PLAIN.get(type(module))
        return None if plain is None else _recast(module, plain)

    return _rebuild(model, revert)
