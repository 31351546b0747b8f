"""An exponential moving average (EMA) of the weights: the model a run evaluates and keeps.

``optim.ema_decay = d > 0`` keeps, after every optimizer step ``t``,
``W_ema <- d * W_ema + (1 - d) * W_t`` (``W_ema = W_1`` after the first step) for every
parameter and every floating-point buffer (the BN and MPBN running statistics, so the
averaged weights are evaluated with statistics that match them; integer buffers such as
``num_batches_tracked`` are copied). The held-out measurement of every epoch, ``best.pt``,
the test set, flip TTA and the fold then use the average; the raw weights only train.

torch's :class:`~torch.optim.swa_utils.AveragedModel` keeps the copy and counts the steps;
the update is given here because torch's EMA function scales integer buffers by the decay
and truncates them (a step counter would stop counting).

Checkpoints store the average as ``model`` (so :func:`mpbn.engine.load_model`, ``mpbn
eval``, ``mpbn fold``, the analyses and the exports read the weights the run reported, with
no EMA code of their own), the raw weights as ``train_model`` and the step count as
``ema_steps``, from which ``--resume`` continues both exactly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

__all__ = ["WeightEMA", "ema_update"]


def ema_update(decay: float):
    """The ``multi_avg_fn`` of :class:`AveragedModel`: lerp floats, copy everything else."""

    @torch.no_grad()
    def update(averaged: list[Tensor], current: list[Tensor], _steps: Tensor) -> None:
        if torch.is_floating_point(averaged[0]):  # one dtype per call (torch groups them)
            torch._foreach_lerp_(averaged, current, 1.0 - decay)  # as torch's own EMA does
        else:
            for mine, theirs in zip(averaged, current, strict=True):
                mine.copy_(theirs)

    return update


class WeightEMA:
    """The EMA of ``model``'s parameters and buffers, updated by :meth:`update` after each step.

    Args:
        model: The trained model (plain, not DDP-wrapped or compiled: its parameters are read).
        decay: ``d`` in ``W_ema <- d * W_ema + (1 - d) * W``, in (0, 1).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.averaged = AveragedModel(model, multi_avg_fn=ema_update(decay), use_buffers=True)
        self.averaged.eval()

    @property
    def module(self) -> nn.Module:
        """The averaged model (evaluate, save and fold this one)."""
        return self.averaged.module

    @property
    def steps(self) -> int:
        """Optimizer steps averaged so far (0: the copy still equals the initial weights)."""
        return int(self.averaged.n_averaged.item())

    def update(self, model: nn.Module) -> None:
        """Average in ``model``'s weights after an optimizer step."""
        self.averaged.update_parameters(model)

    def state(self) -> dict[str, Any]:
        """The checkpoint entries of the average (``model`` and ``ema_steps``)."""
        return {"model": self.module.state_dict(), "ema_steps": self.steps}

    def load(self, payload: dict[str, Any]) -> None:
        """Restore from a checkpoint written with :meth:`state`."""
        self.module.load_state_dict(payload["model"])
        self.averaged.n_averaged.fill_(int(payload["ema_steps"]))
