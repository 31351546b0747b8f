"""ConvNorm, PerStep and IntegratingClassifier: the batched calls equal their per-step loops."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import mpbn
from mpbn.layers import (
    LIF,
    ConvNorm,
    IntegratingClassifier,
    PerStep,
    SeqBatchNorm,
    create_norm,
)

T, B = 3, 4


def _per_step(conv: nn.Module, norm: nn.Module, x_seq: torch.Tensor) -> torch.Tensor:
    """The reference: the conv on each step separately, the norm on the stacked steps."""
    return norm(torch.stack([conv(x_seq[t]) for t in range(x_seq.shape[0])]))


@pytest.mark.parametrize("norm_name", ["bn", "tdbn", "tebn", "bntt", "ln", None])
@pytest.mark.parametrize("training", [True, False])
def test_conv_norm_equals_per_step_conv_then_norm(norm_name, training):
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 5, 3, padding=1).double()
    norm = (create_norm(norm_name, 5, timesteps=T).double() if norm_name
            else nn.Identity())
    layer = ConvNorm(conv, norm).train(training)
    x = torch.randn(T, B, 2, 6, 6, dtype=torch.float64)
    # In training the norm updates its running statistics: the reference starts from the same.
    state = {k: v.clone() for k, v in norm.state_dict().items()}
    got = layer(x)
    norm.load_state_dict(state)
    torch.testing.assert_close(got, _per_step(conv, norm, x), rtol=1e-12, atol=1e-12)
    assert got.shape == (T, B, 5, 6, 6)


def test_conv_norm_linear_and_type_check():
    linear = nn.Linear(6, 3).double()
    layer = ConvNorm(linear)
    x = torch.randn(T, B, 6, dtype=torch.float64)
    torch.testing.assert_close(layer(x), linear(x))
    assert isinstance(layer.norm, nn.Identity)
    with pytest.raises(TypeError, match="ConvNorm needs a Conv or Linear layer, got AvgPool2d"):
        ConvNorm(nn.AvgPool2d(2))


@pytest.mark.parametrize("layer_kind", ["conv", "linear"])
def test_spike_input_gives_the_same_outputs_and_gradients(layer_kind):
    torch.manual_seed(1)
    if layer_kind == "conv":
        make = lambda: nn.Conv2d(3, 4, 3, padding=1)  # noqa: E731
        x = (torch.rand(T, B, 3, 5, 5) < 0.3).float()
    else:
        make = lambda: nn.Linear(7, 4)  # noqa: E731
        x = (torch.rand(T, B, 7) < 0.3).float()
    plain = ConvNorm(make(), SeqBatchNorm(4))
    spiking = ConvNorm(make(), SeqBatchNorm(4), spike_input=True)
    spiking.load_state_dict(plain.state_dict())
    assert "spike_input" not in str(spiking.state_dict().keys())
    outs = []
    for layer in (plain, spiking):
        xi = x.clone().requires_grad_()
        y = layer(xi)
        (y * torch.arange(y.numel()).view_as(y).sin()).sum().backward()
        outs.append((y.detach(), xi.grad, layer.conv.weight.grad, layer.conv.bias.grad))
    for a, b in zip(*outs, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("norm_name", ["bn", "tdbn", "tebn", "bntt", "ln", None])
@pytest.mark.parametrize("training", [True, False])
def test_forward_static_equals_the_expanded_input(norm_name, training):
    torch.manual_seed(2)
    conv = nn.Conv2d(2, 4, 3, padding=1).double()

    def make_norm():
        torch.manual_seed(3)
        if norm_name is None:
            return None
        norm = create_norm(norm_name, 4, timesteps=T).double()
        with torch.no_grad():
            for p in norm.parameters():
                p.add_(torch.rand_like(p))
        return norm

    a = ConvNorm(conv, make_norm()).train(training)
    b = ConvNorm(conv, make_norm()).train(training)
    x = torch.rand(B, 2, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(a.forward_static(x, T), b(x.expand(T, *x.shape)),
                               rtol=1e-12, atol=1e-12)
    for (name, buf_a), buf_b in zip(a.norm.named_buffers(), b.norm.buffers(), strict=True):
        torch.testing.assert_close(buf_a, buf_b, rtol=1e-12, atol=1e-12, msg=name)


def test_per_step_applies_the_module_to_every_step():
    x = torch.randn(T, B, 3, 4, 4)
    for module in (nn.AvgPool2d(2), nn.Flatten(), nn.AdaptiveAvgPool2d(1)):
        got = PerStep(module)(x)
        torch.testing.assert_close(got, torch.stack([module(x[t]) for t in range(T)]))


def test_classifier_is_the_mean_over_time_of_the_linear_readout():
    # MPBN Eq. 3 and BNTT's u_T / T coincide: (1/T) sum_t (W x_t + b).
    head = IntegratingClassifier(torch.nn.Linear(6, 3), pool="flatten")
    x = torch.rand(4, 2, 6)
    u = torch.zeros(2, 3)
    for t in range(4):
        u = u + head.linear(x[t])  # lambda = 1 accumulation, no firing
    torch.testing.assert_close(head(x), u / 4)


def test_classifier_avg_pools_space_first_and_checks_pool():
    head = IntegratingClassifier(torch.nn.Linear(5, 2), pool="avg")
    x = torch.rand(T, B, 5, 3, 3)
    torch.testing.assert_close(head(x), head.linear(x.mean((0, 3, 4))))
    with pytest.raises(ValueError, match="unknown pool 'max'"):
        IntegratingClassifier(torch.nn.Linear(5, 2), pool="max")


def _user_model() -> nn.Sequential:
    """The example of the module docstring: a model built from the public layers only."""
    return nn.Sequential(
        ConvNorm(nn.Conv2d(3, 16, 3, padding=1, bias=False), SeqBatchNorm(16)),
        LIF(),
        PerStep(nn.AvgPool2d(2)),
        ConvNorm(nn.Conv2d(16, 32, 3, padding=1, bias=False), SeqBatchNorm(32),
                 spike_input=True),
        LIF(membrane_norm="channel", num_features=32),
        IntegratingClassifier(nn.Linear(32, 10), pool="avg"),
    )


def test_a_user_model_trains_and_folds():
    torch.manual_seed(4)
    net = _user_model().double()
    x = torch.rand(B, 3, 8, 8, dtype=torch.float64)
    logits = net(x.expand(4, *x.shape) * 2)
    assert logits.shape == (B, 10)
    logits.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    # Folding finds the ConvNorms of any model: both BNs go into the convs, MPBN into V_th.
    folded = mpbn.fold(net)
    assert isinstance(folded[0].norm, nn.Identity) and isinstance(folded[3].norm, nn.Identity)
    assert folded[4].membrane_norm is None
    x_seq = x.expand(4, *x.shape) * 2
    assert mpbn.spike_mismatch(net, folded, x_seq).total_mismatches == 0
    torch.testing.assert_close(folded(x_seq), net.eval()(x_seq))
