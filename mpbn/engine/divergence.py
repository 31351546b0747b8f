"""Stopping a run the moment its loss or its state is no longer finite.

The training loop must never write a NaN into a checkpoint and should say where a run went
wrong, but reading a flag from the device at every step would stall the GPU. So the checks
are kept on the device (:class:`DivergenceCheck`: the first global step with a non-finite loss,
and the first with a non-finite parameter, buffer or gradient, each one fused reduction) and
read at the host reads the loop makes anyway; every process raises together
(:func:`mpbn.engine.distributed.all_reduce_max`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mpbn.engine.checkpoint import unwrapped_name
from mpbn.engine.distributed import DistInfo, all_reduce_max

__all__ = ["DivergenceCheck", "TrainingDiverged", "check_payload_finite"]

_ADVICE = "stopped, the last good checkpoint was kept (try a lower lr or --set optim.grad_clip=1.0)"


class TrainingDiverged(RuntimeError):
    """The loss, or a parameter, buffer or gradient, became NaN or infinite; the message names
    epoch, step and (for the state) the first non-finite tensor."""


def state_tensors(model: nn.Module) -> list[tuple[str, Tensor]]:
    """The floating-point parameters and buffers (running statistics included) of ``model``."""
    named = [*model.named_parameters(), *model.named_buffers()]
    return [(unwrapped_name(n), t) for n, t in named if t.is_floating_point() or t.is_complex()]


def with_gradients(state: list[tuple[str, Tensor]], model: nn.Module
                   ) -> list[tuple[str, Tensor]]:
    """``state`` and the gradients present now (``zero_grad(set_to_none=True)`` makes new
    ones every step, so they are looked up at each check; no host sync)."""
    grads = [(f"grad of {unwrapped_name(n)}", p.grad) for n, p in model.named_parameters()
             if p.grad is not None]
    return [*state, *grads]


def all_finite(tensors: list[tuple[str, Tensor]], device: torch.device) -> Tensor:
    """One device bool: every tensor finite (no host sync)."""
    if not tensors:
        return torch.ones((), device=device, dtype=torch.bool)
    with torch.no_grad():
        return torch.stack([t.detach().isfinite().all().to(device) for _, t in tensors]).all()


def first_nonfinite(tensors: Any) -> str | None:
    """The name of the first non-finite tensor in ``(name, tensor)`` pairs (host syncs)."""
    with torch.no_grad():
        for name, t in tensors:
            if (isinstance(t, Tensor) and (t.is_floating_point() or t.is_complex())
                    and not bool(t.detach().isfinite().all())):
                return name
    return None


def _first_step(flag: Tensor, bad: Tensor, global_step: int) -> Tensor:
    """``flag``, or ``global_step`` where ``flag`` is still -1 and ``bad`` holds (on the device)."""
    return torch.where(bad & (flag < 0), torch.full_like(flag, global_step), flag)


class DivergenceCheck:
    """The first global step at which the loss, and the first at which the model's state, was
    seen non-finite: recorded on the device, raised as :class:`TrainingDiverged` by
    :meth:`check` (one host read for both, and for every process)."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.model, self.device = model, device
        self.state = state_tensors(model)
        self.loss_step = torch.full((), -1, device=device, dtype=torch.long)
        self.state_step = torch.full((), -1, device=device, dtype=torch.long)

    def record_loss(self, loss: Tensor, global_step: int) -> None:
        """Note ``global_step`` if ``loss`` is the first non-finite one (no host sync)."""
        self.loss_step = _first_step(self.loss_step, ~torch.isfinite(loss.detach()), global_step)

    def check(self, epoch: int, global_step: int, epoch_start_step: int) -> None:
        """Check the state and gradients now, then raise if the loss or the state went bad."""
        checked = with_gradients(self.state, self.model)
        self.state_step = _first_step(self.state_step, ~all_finite(checked, self.device),
                                      global_step)
        # Any rank's NaN stops every rank (the gradients are averaged anyway). The maximum
        # keeps a real step number when several ranks diverge (a sum would not), -1 when none
        # did. Loss and state flags travel in one reduction.
        flags = torch.stack([self.loss_step, self.state_step])
        loss_step, state_step = (int(v) for v in all_reduce_max(flags.clone()).tolist())
        if loss_step > 0:
            raise TrainingDiverged(
                f"loss became NaN/inf at epoch {epoch}, step {loss_step - epoch_start_step} "
                f"(global step {loss_step}); {_ADVICE}")
        if state_step > 0:
            name = first_nonfinite(checked) or "(on another process)"
            raise TrainingDiverged(
                f"model state became NaN/inf at epoch {epoch}, step "
                f"{state_step - epoch_start_step} (global step {state_step}; checked every "
                f"log_interval steps): first non-finite tensor {name}; {_ADVICE}")


def _payload_tensors(payload: dict[str, Any]) -> list[tuple[str, Tensor]]:
    """The model's and the optimizer's tensors of a checkpoint payload, named."""
    pairs = list(payload["model"].items())
    for index, state in payload["optimizer"].get("state", {}).items():
        pairs += [(f"optimizer.state[{index}].{key}", value) for key, value in state.items()]
    return pairs


def check_payload_finite(payload: dict[str, Any], epoch: int, global_step: int,
                         dist: DistInfo) -> None:
    """Refuse to write a checkpoint whose model or optimizer state is not finite."""
    pairs = _payload_tensors(payload)
    bad = ~all_finite(pairs, dist.device)
    if int(all_reduce_max(bad.long().reshape(1))[0]) > 0:
        name = first_nonfinite(pairs) or "(on another process)"
        raise TrainingDiverged(
            f"model state became NaN/inf at epoch {epoch}, step {global_step} (global step, "
            f"checked before writing the checkpoint): first non-finite tensor {name}; {_ADVICE}")
