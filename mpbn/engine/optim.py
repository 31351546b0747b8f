"""Optimizer and learning-rate schedule of a run: which parameters weight decay applies to, the
optimizer, and the per-step schedule (``TrainConfig.optim``)."""

from __future__ import annotations

import math

import torch
from torch import nn

from mpbn.engine.config import ConfigError, TrainConfig
from mpbn.layers.neuron import MembraneBN
from mpbn.layers.norm import SeqNorm

__all__ = ["NORM_LAYERS", "param_groups", "with_membrane_norm_lr", "build_optimizer", "lr_factor",
           "build_scheduler"]

#: Layers whose own parameters (scales, biases, TEBN's per-step scales) get no weight decay
#: under ``optim.decay_params="weights"``, whatever their shape.
NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
               nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm,
               nn.GroupNorm, nn.RMSNorm, SeqNorm, MembraneBN)


def _exempt_names(model: nn.Module) -> set[str]:
    """The names a model's ``no_weight_decay()`` lists (timm's convention), checked."""
    declare = getattr(model, "no_weight_decay", None)
    if not callable(declare):
        return set()
    names = set(declare())
    known = {name for name, _ in model.named_parameters()}
    unknown = sorted(names - known)
    if unknown:
        raise ConfigError(
            f"{type(model).__name__}.no_weight_decay() names {', '.join(unknown)}, which "
            f"{'is not a parameter' if len(unknown) == 1 else 'are not parameters'} of the "
            f"model; its parameters are {', '.join(sorted(known)) or 'none'}")
    return names


def param_groups(model: nn.Module, weight_decay: float, decay_params: str) -> list[dict]:
    """Weight decay on the model's weights only (``"weights"``), or on everything (``"all"``).

    ``"weights"``: every parameter with two or more dimensions (conv, linear and bilinear
    weights; the weights of a user's own layers) except those of :data:`NORM_LAYERS` and those
    the model's ``no_weight_decay()`` names, if it has one. Vectors and scalars (biases, a
    learnable threshold or leak) are not decayed. This is MPBN's public code's choice: decaying
    BN/MPBN scales and biases pulls them to zero, which for MPBN moves the folded thresholds,
    with no regularizing benefit. Norm layers are excluded by type, not by ``ndim``: element-wise
    MPBN's scale is ``[C, H, W]`` and BNTT's per-step scale ``[T, C]``, and decaying those
    shrank element-wise MPBN's scale from 1 to about 0.1 and its spike rate from 0.30 to 0.013
    on full CIFAR-10 (issue 18).

    Returns two groups (decayed, then not) for ``"weights"``, one for ``"all"``.
    """
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if decay_params == "all":
        return [{"params": [p for _, p in trainable], "weight_decay": weight_decay}]
    normalizing = {id(p) for m in model.modules() if isinstance(m, NORM_LAYERS)
                   for p in m.parameters(recurse=False)}
    exempt = _exempt_names(model)
    decay, no_decay = [], []
    for name, p in trainable:
        decayed = p.ndim >= 2 and id(p) not in normalizing and name not in exempt
        (decay if decayed else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def with_membrane_norm_lr(groups: list[dict], model: nn.Module, lr: float, scale: float
                          ) -> list[dict]:
    """``groups`` with MPBN's scales and shifts moved to groups of their own at ``lr * scale``
    (keeping their weight decay); ``groups`` unchanged where ``scale`` is 1, so that the
    optimizer state of a run without it still loads."""
    if scale == 1.0:
        return groups
    membrane = {id(p) for m in model.modules() if isinstance(m, MembraneBN)
                for p in m.parameters(recurse=False)}
    out: list[dict] = []
    for group in groups:
        rest = [p for p in group["params"] if id(p) not in membrane]
        moved = [p for p in group["params"] if id(p) in membrane]
        out += [{**group, "params": rest}] if rest else []
        out += [{**group, "params": moved, "lr": lr * scale}] if moved else []
    return out


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """``cfg.optim.name`` over :func:`param_groups` of ``model`` (the bare model, unwrapped),
    MPBN's parameters at ``optim.membrane_norm_lr`` times the lr."""
    o = cfg.optim
    groups = with_membrane_norm_lr(param_groups(model, o.weight_decay, o.decay_params), model,
                                   o.lr, o.membrane_norm_lr)
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov)
    if o.name == "adam":
        return torch.optim.Adam(groups, lr=o.lr)
    return torch.optim.AdamW(groups, lr=o.lr)


def lr_factor(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Multiplier of ``cfg.optim.lr`` at optimizer step ``step`` (0-based), updated every step."""
    o = cfg.optim
    total = o.epochs * steps_per_epoch
    warmup = o.warmup_epochs * steps_per_epoch
    if step < warmup:
        return (step + 1) / warmup
    if o.schedule in ("cosine", "linear"):
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if o.schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if o.schedule == "step":
        epoch = step / steps_per_epoch
        passed = sum(epoch >= m * o.epochs for m in o.milestones)
        return o.gamma ** passed
    return 1.0


def build_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR over :func:`lr_factor` (its state dict holds no code)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(cfg, step, steps_per_epoch))
