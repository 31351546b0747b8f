"""The NaN/inf checks of the training loop (:mod:`mpbn.engine.divergence`), one process."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mpbn.engine.distributed import DistInfo
from mpbn.engine.divergence import DivergenceCheck, TrainingDiverged, check_payload_finite

CPU = DistInfo()  # one process on the CPU


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))


def test_a_finite_run_passes_every_check() -> None:
    model = _model()
    check = DivergenceCheck(model, CPU.device)
    for step in range(1, 4):
        check.record_loss(torch.tensor(0.5 * step), step)
    model(torch.randn(4, 3)).sum().backward()  # gradients present and finite
    check.check(epoch=1, global_step=3, epoch_start_step=0)


def test_the_first_nonfinite_loss_is_reported_with_its_step_in_the_epoch() -> None:
    check = DivergenceCheck(_model(), CPU.device)
    for step, loss in zip(range(11, 16), [1.0, 2.0, math.nan, math.inf, 1.0], strict=True):
        check.record_loss(torch.tensor(loss), step)
    # Epoch 2 began after global step 10: global step 13 is its step 3; the later inf at 14
    # does not replace the first.
    with pytest.raises(TrainingDiverged, match=r"^loss became NaN/inf at epoch 2, step 3 "
                                               r"\(global step 13\)"):
        check.check(epoch=2, global_step=15, epoch_start_step=10)


def test_a_nonfinite_state_or_gradient_is_named() -> None:
    model = _model()
    check = DivergenceCheck(model, CPU.device)
    check.check(epoch=1, global_step=4, epoch_start_step=0)  # fine so far
    with torch.no_grad():
        model[1].running_var[1] = math.inf
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step 6 \(global step 6;.*first "
                                               r"non-finite tensor 1\.running_var"):
        check.check(epoch=1, global_step=6, epoch_start_step=0)

    model = _model()
    check = DivergenceCheck(model, CPU.device)
    model(torch.randn(4, 3)).sum().backward()
    model[0].weight.grad[0, 0] = math.nan
    with pytest.raises(TrainingDiverged, match="first non-finite tensor grad of 0.weight"):
        check.check(epoch=3, global_step=9, epoch_start_step=8)


def test_a_checkpoint_with_nonfinite_optimizer_state_is_refused() -> None:
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    check_payload_finite(payload, epoch=1, global_step=1, dist=CPU)
    payload["optimizer"]["state"][1]["momentum_buffer"][0] = math.nan
    with pytest.raises(TrainingDiverged, match=r"first non-finite tensor "
                                               r"optimizer\.state\[1\]\.momentum_buffer"):
        check_payload_finite(payload, epoch=1, global_step=1, dist=CPU)
