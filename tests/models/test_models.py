"""Every registered model (timm's test_models.py style): train step, loss decrease, exact fold."""

from __future__ import annotations

import warnings

import pytest
import torch
from tiny_models import tiny_model
from torch import nn

import mpbn
from mpbn.layers import LIF, MembraneBN, SeqNorm
from mpbn.layers.fold import FoldWarning
from mpbn.models import create, list_models

TIMESTEPS = 3
BATCH = 4


def build(name: str, mpbn_mode: str, **kwargs: object) -> nn.Module:
    return tiny_model(name, TIMESTEPS, mpbn=mpbn_mode, **kwargs)


def example_input(model: nn.Module, generator: torch.Generator) -> torch.Tensor:
    """A static batch, or a fixed spike sequence for models that encode randomly (Poisson)."""
    shape = model.input_shape
    if model.encoding == "direct":
        return torch.rand(BATCH, *shape, generator=generator) * 2
    # Poisson / sequence models get a fixed sequence so two runs see the same input.
    return (torch.rand(TIMESTEPS, BATCH, *shape, generator=generator) < 0.5).float()


def randomize_norms(model: nn.Module, x: torch.Tensor, generator: torch.Generator) -> None:
    """Give norms non-trivial running statistics and random affine parameters.

    MPBN scales are drawn from [-1.5, 1.5] so that folding meets negative ones (neurons that
    then fire below their threshold).
    """
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x)
        for m in model.modules():
            if isinstance(m, (MembraneBN, SeqNorm)):
                m.weight.copy_(torch.rand(m.weight.shape, generator=generator) * 1.5 + 0.25)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=generator) * 0.3)
            if isinstance(m, MembraneBN):
                sign = torch.where(torch.rand(m.weight.shape, generator=generator) < 0.3, -1, 1)
                m.weight.mul_(sign)
                m.running_var.mul_(torch.rand(m.running_var.shape, generator=generator) + 0.5)
            if hasattr(m, "step_scale"):
                m.step_scale.copy_(torch.rand(m.step_scale.shape, generator=generator) + 0.5)


def last_layer_rate(model: nn.Module, x: torch.Tensor) -> float:
    rates: list[float] = []
    hooks = [m.register_forward_hook(lambda m, i, o: rates.append(float(o.abs().mean())))
             for m in model.modules() if isinstance(m, LIF)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return rates[-1]


@pytest.mark.parametrize("mpbn_mode", ["channel", "element"])
@pytest.mark.parametrize("name", list_models())
def test_training_reduces_loss(name: str, mpbn_mode: str) -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = build(name, mpbn_mode)
    x = example_input(model, g)
    y = torch.randint(0, 5, (BATCH,), generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(6):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        if step == 0:
            assert torch.isfinite(loss)
            missing = [n for n, p in model.named_parameters() if p.grad is None]
            assert not missing, f"parameters without gradient: {missing[:5]}"
        opt.step()
        losses.append(loss.item())
    assert min(losses[1:]) < losses[0], losses


@pytest.mark.parametrize("mpbn_mode", ["channel", "element"])
@pytest.mark.parametrize("name", list_models())
def test_fold_gives_identical_spikes(name: str, mpbn_mode: str) -> None:
    torch.manual_seed(1)
    g = torch.Generator().manual_seed(1)
    # V_th = 0.4 keeps the BNTT-default nets (V_th = 1) from going silent under random norms.
    model = build(name, mpbn_mode, v_threshold=0.4).double()
    x = example_input(model, g).double()
    randomize_norms(model, x, g)
    model.eval()
    assert last_layer_rate(model, x) > 0.005, "the test needs spiking activity to mean anything"
    with warnings.catch_warnings():
        # BNTT models keep their time-varying norms; the fold says so.
        warnings.simplefilter("ignore", FoldWarning)
        folded = mpbn.fold(model)
    assert not any(isinstance(m, MembraneBN) for m in folded.modules())
    assert not any(isinstance(m, SeqNorm) and m.folds_into_weights for m in folded.modules())
    assert all(m.membrane_norm is None for m in folded.modules() if isinstance(m, LIF))
    report = mpbn.spike_mismatch(model, folded, x)
    assert report.layers, "no spiking layers were recorded"
    assert report.total_mismatches == 0, list(zip(report.layers, report.mismatches, strict=True))
    assert report.max_output_diff < 1e-9
    with torch.no_grad():
        assert torch.equal(model(x).argmax(1), folded(x).argmax(1))
    # The original is untouched.
    assert any(isinstance(m, MembraneBN) for m in model.modules())


@pytest.mark.parametrize("name", ["resnet19", "resnet20", "vgg16"])
def test_fold_full_width_paper_models(name: str) -> None:
    """The exact paper architectures (full width), T=1, batch 2, tiny spatial size."""
    g = torch.Generator().manual_seed(2)
    size = {"resnet19": 8, "resnet20": 16, "vgg16": 32}[name]
    model = create(name, mpbn="channel", timesteps=1, input_size=size).double()
    x = torch.rand(2, 3, size, size, generator=g, dtype=torch.float64) * 2
    randomize_norms(model, x, g)
    model.eval()
    report = mpbn.spike_mismatch(model, mpbn.fold(model), x)
    assert report.total_mismatches == 0 and report.max_output_diff < 1e-9


@pytest.mark.parametrize("norm", ["bn", "tdbn", "tebn", "bntt", "ln"])
def test_fold_every_norm(norm: str) -> None:
    g = torch.Generator().manual_seed(3)
    model = create("resnet20_narrow", norm=norm, mpbn="element", timesteps=TIMESTEPS,
                   input_size=8, num_classes=5).double()
    x = torch.rand(BATCH, 3, 8, 8, generator=g, dtype=torch.float64) * 2
    randomize_norms(model, x, g)
    model.eval()
    if norm in ("bn", "tdbn"):
        with warnings.catch_warnings():
            warnings.simplefilter("error", FoldWarning)  # nothing left to warn about
            folded = mpbn.fold(model)
        assert not any(isinstance(m, SeqNorm) for m in folded.modules())
    else:
        with pytest.warns(FoldWarning, match="cannot fold into weights"):
            folded = mpbn.fold(model)
        assert sum(isinstance(m, SeqNorm) for m in folded.modules()) == \
            sum(isinstance(m, SeqNorm) for m in model.modules())
    report = mpbn.spike_mismatch(model, folded, x)
    assert report.total_mismatches == 0 and report.max_output_diff < 1e-9


def test_folded_stem_keeps_direct_encoding_cheap() -> None:
    model = create("small_cnn", timesteps=4).eval()
    folded = mpbn.fold(model)
    assert isinstance(folded.stem.norm, nn.Identity) and folded.stem.conv.bias is not None
    x = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(model(x), folded(x), atol=1e-5, rtol=1e-5)
