"""Weight-decay groups and learning-rate schedules (mpbn.engine.optim)."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_model
from torch import nn

from mpbn.engine.config import ConfigError, TrainConfig, apply_overrides
from mpbn.engine.optim import build_optimizer, build_scheduler, lr_factor, param_groups
from mpbn.layers import LIF, MembraneBN
from mpbn.layers.norm import NORMS, BatchNormThroughTime
from mpbn.models import list_models


def test_weight_decay_only_on_conv_and_linear_weights():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 2))
    decay, no_decay = param_groups(model, 1e-4, "weights")
    assert {p.ndim for p in decay["params"]} == {2, 4}
    assert {p.ndim for p in no_decay["params"]} == {1}
    assert no_decay["weight_decay"] == 0.0
    (everything,) = param_groups(model, 5e-4, "all")
    assert len(everything["params"]) == len(list(model.parameters()))


def test_weight_decay_spares_multidimensional_norm_scales():
    """Element-wise MPBN's [C, H, W] scale and bias and BNTT's per-step [T, C] scale are not
    weights despite ndim > 1."""
    bntt = BatchNormThroughTime(2, timesteps=4)
    membrane = MembraneBN("element", feature_shape=(2, 3, 3))
    model = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), bntt, membrane, nn.GroupNorm(1, 2))
    assert bntt.weight.ndim == 2 and membrane.weight.ndim == 3
    decay, no_decay = param_groups(model, 1e-4, "weights")
    assert [p is model[0].weight for p in decay["params"]] == [True]
    assert {id(p) for p in no_decay["params"]} == {
        id(bntt.weight), id(membrane.weight), id(membrane.bias), id(model[3].weight),
        id(model[3].bias)}


class _OwnLayer(nn.Module):
    """A user's layer that is no torch conv or linear: a raw weight, a learnable threshold."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3, 4))
        self.threshold = nn.Parameter(torch.ones(3))
        self.table = nn.Parameter(torch.randn(5, 3))


def test_a_users_own_layer_has_its_weights_decayed_and_its_vectors_not():
    layer = _OwnLayer()
    decay, no_decay = param_groups(nn.Sequential(layer), 1e-4, "weights")
    assert {id(p) for p in decay["params"]} == {id(layer.weight), id(layer.table)}
    assert [p is layer.threshold for p in no_decay["params"]] == [True]


def test_no_weight_decay_names_are_spared_and_unknown_names_refused():
    class Declared(_OwnLayer):
        def no_weight_decay(self) -> set[str]:
            return {"table"}

    model = Declared()
    decay, no_decay = param_groups(model, 1e-4, "weights")
    assert [p is model.weight for p in decay["params"]] == [True]
    assert {id(p) for p in no_decay["params"]} == {id(model.threshold), id(model.table)}

    class Misspelled(_OwnLayer):
        def no_weight_decay(self) -> set[str]:
            return {"tabel"}

    with pytest.raises(ConfigError, match=r"no_weight_decay\(\) names tabel, which is not a "
                                          r"parameter of the model; its parameters are "
                                          r"table, threshold, weight$"):
        param_groups(Misspelled(), 1e-4, "weights")


def test_frozen_parameters_are_in_no_group():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    model[0].weight.requires_grad_(False)
    groups = param_groups(model, 1e-4, "weights")
    assert sum(len(g["params"]) for g in groups) == 3
    assert all(p is not model[0].weight for g in groups for p in g["params"])


@pytest.mark.parametrize("norm", list(NORMS))
@pytest.mark.parametrize("name", list_models())
def test_every_zoo_model_decays_exactly_its_conv_and_linear_weights(name, norm):
    """The paper recipes' rule (MPBN's public code) on the zoo: conv and linear weights only."""
    model = tiny_model(name, 2, norm=norm, mpbn="element")
    assert any(isinstance(m, LIF) for m in model.modules())
    expected = {id(m.weight) for m in model.modules()
                if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))}
    decay, no_decay = param_groups(model, 1e-4, "weights")
    assert {id(p) for p in decay["params"]} == expected
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_sgd_decays_the_decayed_group_only():
    """One SGD step with zero gradients: W <- W - lr * wd * W on weights, nothing else moves."""
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    cfg = apply_overrides(TrainConfig(), dict(lr=0.5, weight_decay=0.1, momentum=0.0))
    optimizer = build_optimizer(cfg, model)
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    after = list(model.parameters())
    torch.testing.assert_close(after[0], before[0] * (1 - 0.5 * 0.1))
    for old, new in zip(before[1:], after[1:], strict=True):
        torch.testing.assert_close(new, old, rtol=0, atol=0)


def test_schedules():
    cosine = apply_overrides(TrainConfig(), dict(epochs=10, schedule="cosine"))
    assert lr_factor(cosine, 0, 10) == 1.0
    assert lr_factor(cosine, 99, 10) < 1e-3
    step = apply_overrides(TrainConfig(), dict(epochs=10, schedule="step",
                                               milestones=[0.5, 0.7, 0.9]))
    factors = [lr_factor(step, e * 10, 10) for e in range(10)]
    assert factors == pytest.approx([1] * 5 + [0.1] * 2 + [0.01] * 2 + [0.001])


def test_membrane_norm_lr_scales_mpbns_step_and_follows_the_schedule():
    """``optim.membrane_norm_lr=k``: MPBN's lambda and beta take k times the step of the other
    parameters for the same gradient, at every point of the schedule; k = 1 keeps the two
    groups of a run without it (its optimizer state still loads)."""
    membrane = MembraneBN("element", feature_shape=(2, 3, 3))
    model = nn.Sequential(nn.Conv2d(1, 2, 1), membrane)
    plain = build_optimizer(apply_overrides(TrainConfig(), dict(lr=0.5)), model)
    assert len(plain.param_groups) == 2
    cfg = apply_overrides(TrainConfig(), dict(lr=0.5, momentum=0.0, weight_decay=0.0, epochs=2,
                                              schedule="linear", **{"membrane_norm_lr": 4.0}))
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer, steps_per_epoch=2)
    assert len(optimizer.param_groups) == 3 and len(list(model.parameters())) == 4
    for _ in range(2):  # at the schedule's start, then after one scheduler step
        before = [p.detach().clone() for p in model.parameters()]
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        for (name, p), old in zip(model.named_parameters(), before, strict=True):
            step = 4.0 * lr if name.startswith("1.") else lr
            torch.testing.assert_close(old - p.detach(), torch.full_like(p, step))
    with pytest.raises(ConfigError, match="optim.membrane_norm_lr must be a positive number"):
        apply_overrides(TrainConfig(), {"membrane_norm_lr": 0.0})
