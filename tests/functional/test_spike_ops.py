"""Bool-saving conv/linear on binary spikes against the standard ops, and the models' flags.

The ops must give the standard forward and gradients (input, weight, bias) exactly on 0/1
inputs, save their input as ``torch.bool``, and the models must set ``spike_input`` only where
a layer's input is a LIF's spikes.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny_models import tiny_model
from torch import nn

from mpbn.functional.spike_ops import spike_conv, spike_linear
from mpbn.models import ConvNorm, list_models

CONV_CASES = [
    dict(),
    dict(stride=2, padding=1),
    dict(padding=(2, 1), dilation=2),
    dict(stride=(1, 2), padding=1, groups=2),
    dict(groups=4, padding=1),  # depthwise
]


def binary(*shape: int, dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(*shape, generator=generator) < 0.3).to(dtype)


def grads(out: torch.Tensor, inputs: list[torch.Tensor], grad_out: torch.Tensor):
    return torch.autograd.grad(out, [t for t in inputs if t is not None], grad_out)


def saved_dtypes(fn) -> list[torch.dtype]:
    dtypes: list[torch.dtype] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        dtypes.append(t.dtype)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return dtypes


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_spike_conv2d_matches_conv2d(dtype, case, with_bias):
    g = torch.Generator().manual_seed(0)
    groups = case.get("groups", 1)
    x = binary(3, 4, 11, 10, dtype=dtype, generator=g).requires_grad_()
    weight = torch.randn(8, 4 // groups, 3, 3, generator=g, dtype=dtype, requires_grad=True)
    bias = torch.randn(8, generator=g, dtype=dtype, requires_grad=True) if with_bias else None
    expected = F.conv2d(x, weight, bias, **case)
    got = spike_conv(x, weight, bias, **case)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    grad_out = torch.randn(expected.shape, generator=g, dtype=dtype)
    for a, b in zip(grads(got, [x, weight, bias], grad_out),
                    grads(expected, [x, weight, bias], grad_out), strict=True):
        # the same aten kernel from the same values: equal, not just close
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("dim", [1, 3])
def test_spike_conv_1d_3d(dim):
    g = torch.Generator().manual_seed(1)
    x = binary(2, 3, *([6] * dim), dtype=torch.float64, generator=g).requires_grad_()
    weight = torch.randn(5, 3, *([3] * dim), generator=g, dtype=torch.float64,
                         requires_grad=True)
    bias = torch.randn(5, generator=g, dtype=torch.float64, requires_grad=True)
    conv = (F.conv1d, F.conv2d, F.conv3d)[dim - 1]
    expected = conv(x, weight, bias, 2, 1)
    got = spike_conv(x, weight, bias, 2, 1)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    grad_out = torch.randn(expected.shape, generator=g, dtype=torch.float64)
    for a, b in zip(grads(got, [x, weight, bias], grad_out),
                    grads(expected, [x, weight, bias], grad_out), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [(64, 96), (5, 7, 96)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_spike_linear_matches_linear(dtype, shape, with_bias):
    g = torch.Generator().manual_seed(2)
    x = binary(*shape, dtype=dtype, generator=g).requires_grad_()
    weight = torch.randn(33, shape[-1], generator=g, dtype=dtype, requires_grad=True)
    bias = torch.randn(33, generator=g, dtype=dtype, requires_grad=True) if with_bias else None
    expected = F.linear(x, weight, bias)
    got = spike_linear(x, weight, bias)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    grad_out = torch.randn(expected.shape, generator=g, dtype=dtype)
    for a, b in zip(grads(got, [x, weight, bias], grad_out),
                    grads(expected, [x, weight, bias], grad_out), strict=True):
        torch.testing.assert_close(a, b)


def test_only_requested_gradients():
    g = torch.Generator().manual_seed(3)
    x = binary(2, 3, 5, 5, dtype=torch.float32, generator=g)  # no grad: the first layer
    weight = torch.randn(4, 3, 3, 3, generator=g, requires_grad=True)
    (gw,) = torch.autograd.grad(spike_conv(x, weight, None, 1, 1).sum(), [weight])
    (ew,) = torch.autograd.grad(F.conv2d(x, weight, None, 1, 1).sum(), [weight])
    torch.testing.assert_close(gw, ew, rtol=0, atol=0)


def test_saved_input_is_bool():
    g = torch.Generator().manual_seed(4)
    x = binary(2, 3, 5, 5, dtype=torch.float32, generator=g).requires_grad_()
    weight = torch.randn(4, 3, 3, 3, generator=g, requires_grad=True)
    assert saved_dtypes(lambda: F.conv2d(x, weight, None, 1, 1)) == [torch.float32] * 2
    assert saved_dtypes(lambda: spike_conv(x, weight, None, 1, 1)) == [torch.bool, torch.float32]
    x2 = x.flatten(1).detach().requires_grad_()
    w2 = torch.randn(6, x2.shape[1], generator=g, requires_grad=True)
    assert saved_dtypes(lambda: spike_linear(x2, w2)) == [torch.bool, torch.float32]


# ---- models -----------------------------------------------------------------------------------

def small_model(name: str, **kwargs: object) -> nn.Module:
    return tiny_model(name, 6 if name == "fc_smnist" else 2, **kwargs)


def model_input(model: nn.Module, generator: torch.Generator) -> torch.Tensor:
    if model.encoding == "sequence":  # one pixel per step
        return torch.rand(model.timesteps, 3, *model.input_shape, generator=generator)
    return torch.rand(3, *model.input_shape, generator=generator) * 2


@pytest.mark.parametrize("name", list_models())
def test_flagged_layers_read_spikes(name):
    """Structural check: every ``spike_input`` layer sees only 0/1, and is saved as bool."""
    g = torch.Generator().manual_seed(5)
    model = small_model(name).train()
    x = model_input(model, g)
    checked: list[str] = []
    hooks = []
    for layer_name, m in model.named_modules():
        if isinstance(m, ConvNorm) and m.spike_input:
            def check(module, args, layer_name=layer_name):
                values = args[0].unique()
                assert bool(((values == 0) | (values == 1)).all()), (layer_name, values[:8])
                checked.append(layer_name)
            hooks.append(m.register_forward_pre_hook(check))
    dtypes = saved_dtypes(lambda: model(x))
    for h in hooks:
        h.remove()
    flagged = [n for n, m in model.named_modules() if isinstance(m, ConvNorm) and m.spike_input]
    assert sorted(set(checked)) == sorted(flagged)
    assert dtypes.count(torch.bool) >= len(flagged)
    assert not isinstance(model.stem, ConvNorm) or not model.stem.spike_input


def test_expected_flags():
    """Where the builders put the flag (the first layer and layers after pooling: never)."""
    r19 = small_model("resnet19")
    assert r19.body[1][0].conv1.spike_input and r19.body[1][0].conv2.spike_input
    assert r19.body[2][0].shortcut.spike_input  # 1x1 conv stride 2 on the block's spikes
    r20 = small_model("resnet20")  # stem: conv, LIF, conv, LIF, conv, LIF, avg pool
    assert [m.spike_input for m in r20.body if isinstance(m, ConvNorm)] == [True, True]
    first = r20.body[-4][0]  # after the pooling
    assert not first.conv1.spike_input and first.conv2.spike_input
    assert not r20.body[-3][0].shortcut[1].spike_input  # avg-pooled shortcut
    assert r20.body[-3][0].conv1.spike_input
    r18 = small_model("resnet18")
    assert not r18.body[2][0].conv1.spike_input and r18.body[3][0].conv1.spike_input
    vgg16 = small_model("vgg16")
    flags = [m.spike_input for m in vgg16.body if isinstance(m, ConvNorm)]
    assert flags == [True, False, True, False, True, True, False, True, True, False, True, True]
    vgg9 = small_model("vgg9")
    assert not vgg9.body[-2].spike_input  # hidden linear after average pooling
    mlp = small_model("fc_smnist")
    assert [m.spike_input for m in mlp.body if isinstance(m, ConvNorm)] == [True]


def _flagged(model: nn.Module) -> set[str]:
    return {n for n, m in model.named_modules() if isinstance(m, ConvNorm) and m.spike_input}


def test_same_flags_with_and_without_mpbn():
    """The fused MPBN-LIF keeps no float spikes, so convs after it save bool spikes too."""
    assert _flagged(small_model("resnet20_narrow"))
    for mpbn in ("channel", "element"):
        assert _flagged(small_model("resnet20_narrow", mpbn=mpbn)) == _flagged(
            small_model("resnet20_narrow"))


@pytest.mark.parametrize("name", ["resnet20_narrow", "vgg16", "fc_smnist"])
@pytest.mark.parametrize("mpbn", ["none", "channel"])
def test_training_step_gradients_equal_with_and_without_flag(name, mpbn):
    kwargs = dict(width=4) if name == "vgg16" else {}
    flags = _flagged(small_model(name, **kwargs))  # where the builders set it (without MPBN)
    assert flags
    torch.manual_seed(0)
    on = small_model(name, mpbn=mpbn, **kwargs).double().train()
    off = small_model(name, mpbn=mpbn, **kwargs).double().train()
    off.load_state_dict(on.state_dict())
    for n, m in on.named_modules():
        if isinstance(m, ConvNorm):
            m.spike_input = n in flags
    for m in off.modules():
        if isinstance(m, ConvNorm):
            m.spike_input = False
    x = model_input(on, torch.Generator().manual_seed(6)).double()
    labels = torch.arange(3) % 5
    losses = []
    for model in (on, off):
        loss = F.cross_entropy(model(x), labels)
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1], rtol=0, atol=0)
    for (n, p), q in zip(on.named_parameters(), off.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=n)
    assert on.state_dict().keys() == off.state_dict().keys()


def test_no_bool_copy_without_grad_or_under_autocast():
    model = small_model("resnet20_narrow").train()
    x = torch.rand(2, *model.input_shape)
    with torch.no_grad():
        assert saved_dtypes(lambda: model(x)) == []
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.bool not in saved_dtypes(lambda: model(x))


def test_fold_keeps_flags_and_state_dict_names():
    import mpbn

    model = small_model("resnet20_narrow").eval()
    folded = mpbn.fold(model)
    assert _flagged(folded) == _flagged(model)
    assert not any("spike" in k for k in model.state_dict())  # a plain attribute
