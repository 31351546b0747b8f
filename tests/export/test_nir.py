"""NIR export: fold, export, write/read roundtrip, simulate; compare with the PyTorch model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import mpbn
from mpbn.layers import LIF, MembraneBN, SeqNorm
from mpbn.layers.fold import fold_norms_into_weights
from mpbn.models import create

nir = pytest.importorskip("nir")

from mpbn.export import NIRExportError, read_nir, simulate_nir, to_nir, write_nir  # noqa: E402


def trained_like(model: nn.Module, x: torch.Tensor, seed: int = 0) -> nn.Module:
    """Non-trivial running stats and random positive-scale norms."""
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x)
        for m in model.modules():
            if isinstance(m, (MembraneBN, SeqNorm)):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
    return model.eval()


def spikes_by_layer(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
    records: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: records.__setitem__(n, o.detach()))
             for n, m in model.named_modules() if isinstance(m, LIF)]
    with torch.no_grad():
        out = model(x)
    for h in hooks:
        h.remove()
    return out, records


def roundtrip(graph: object, tmp_path: Path) -> object:
    path = tmp_path / "model.nir"
    write_nir(graph, path)
    return read_nir(path)


@pytest.mark.parametrize("mpbn_mode", ["channel", "element"])
def test_small_cnn_roundtrip_matches_pytorch(mpbn_mode: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create("small_cnn", mpbn=mpbn_mode, timesteps=4).double()
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64) * 2
    folded = mpbn.fold(trained_like(model, x))
    graph = roundtrip(to_nir(folded, dt=1e-3), tmp_path)
    assert graph.metadata["readout"] == "mean_over_time"
    assert isinstance(graph.nodes["body.0"], nir.LIF)
    logits, spikes = spikes_by_layer(folded, x)
    x_seq = x.expand(folded.timesteps, *x.shape)  # direct encoding: the image at every step
    sim_logits, records = simulate_nir(graph, x_seq, record=True)
    assert spikes and sum(s.sum() for s in spikes.values()) > 0
    for name, s in spikes.items():
        assert torch.equal(records[name], s), name
    torch.testing.assert_close(sim_logits, logits, atol=1e-10, rtol=1e-10)
    # And the folded model agrees with the trained (unfolded) one.
    assert mpbn.spike_mismatch(model, folded, x).total_mismatches == 0


@pytest.mark.parametrize("decay", [0.25, 1.0])
def test_mlp_roundtrip_matches_pytorch(decay: float, tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = create("fc_smnist", norm="bn", mpbn="channel", timesteps=12, in_features=3,
                   hidden=(16, 8), decay=decay, reset="hard", v_threshold=0.5).double()
    x_seq = (torch.rand(12, 5, 3, dtype=torch.float64) < 0.5).double()
    folded = mpbn.fold(trained_like(model, x_seq))
    graph = roundtrip(to_nir(folded, dt=0.5), tmp_path)
    node = graph.nodes["body.0"]
    assert isinstance(node, nir.IF if decay == 1.0 else nir.LIF)
    logits, spikes = spikes_by_layer(folded, x_seq)
    sim_logits, records = simulate_nir(graph, x_seq, record=True)
    for name, s in spikes.items():
        assert torch.equal(records[name], s), name
    torch.testing.assert_close(sim_logits, logits, atol=1e-10, rtol=1e-10)


def test_lif_mapping_formulas() -> None:
    model = create("small_cnn", decay=0.25, v_threshold=0.5)
    graph = to_nir(mpbn.fold(model), dt=2e-3)
    node = graph.nodes["body.0"]
    assert node.tau.shape == (16, 8, 8)
    torch.testing.assert_close(torch.tensor(node.tau), torch.full((16, 8, 8), 2e-3 / 0.75,
                                                                    dtype=torch.float64))
    torch.testing.assert_close(torch.tensor(node.r), torch.full((16, 8, 8), 1 / 0.75,
                                                                  dtype=torch.float64))
    assert (node.v_leak == 0).all() and (node.v_reset == 0).all()


def test_unfolded_mpbn_is_refused_with_the_layer_name() -> None:
    model = create("small_cnn", mpbn="channel").eval()
    fold_norms_into_weights(model)  # fold the conv norms only; MPBN stays
    with pytest.raises(NIRExportError, match=r"^layer 'body\.0': unfolded MPBN"):
        to_nir(model)


def test_unfolded_bn_and_time_varying_norms_are_refused() -> None:
    with pytest.raises(NIRExportError, match=r"layer 'stem\.norm' \(SeqBatchNorm\): fold"):
        to_nir(create("small_cnn").eval())
    bntt = create("small_cnn", norm="bntt", reset="hard").eval()
    with pytest.warns(mpbn.layers.FoldWarning):
        folded = mpbn.fold(bntt)
    with pytest.raises(NIRExportError, match=r"stem\.norm' \(BatchNormThroughTime\)"):
        to_nir(folded)


@pytest.mark.parametrize("mpbn_mode", ["channel", "element"])
@pytest.mark.parametrize("decay", [0.25, 1.0])
def test_negative_and_zero_mpbn_scales_export_exactly(mpbn_mode, decay, tmp_path) -> None:
    """Neurons that fire below their folded threshold (lambda < 0) or always/never (lambda = 0)
    run in NIR on the negated potential and spike exactly as the PyTorch model."""
    torch.manual_seed(3)
    model = create("small_cnn", mpbn=mpbn_mode, timesteps=4, decay=decay).double()
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64) * 2
    model = trained_like(model, x, seed=3)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for lif in (m for m in model.modules() if isinstance(m, LIF)):
            weight = lif.membrane_norm.weight
            signs = torch.where(torch.rand(weight.shape, generator=g) < 0.5, -1.0, 1.0)
            weight.mul_(signs.double())
            weight.view(-1)[0] = 0.0  # lambda = 0: V~ = +-inf
    folded = mpbn.fold(model)
    signs = [m.threshold_sign for m in folded.modules() if isinstance(m, LIF)]
    assert all(s is not None and (s < 0).any() for s in signs)
    graph = roundtrip(to_nir(folded), tmp_path)
    assert (graph.nodes["body.0"].r < 0).any()
    logits, spikes = spikes_by_layer(folded, x)
    sim_logits, records = simulate_nir(graph, x.expand(folded.timesteps, *x.shape), record=True)
    assert sum(s.sum() for s in spikes.values()) > 0
    for name, s in spikes.items():
        assert torch.equal(records[name], s), name
    torch.testing.assert_close(sim_logits, logits, atol=1e-10, rtol=1e-10)
    assert mpbn.spike_mismatch(model, folded, x).total_mismatches == 0


def test_soft_reset_and_padded_pooling_are_refused() -> None:
    with pytest.raises(NIRExportError, match="soft reset"):
        to_nir(mpbn.fold(create("small_cnn", reset="soft")))
    with pytest.raises(NIRExportError, match=r"layer 'body\.1': padded or ceil-mode"):
        to_nir(mpbn.fold(create("resnet18", input_size=32, width=8)))


@pytest.mark.parametrize("name,kwargs", [
    ("resnet20_narrow", dict(input_size=8)),
    ("resnet20", dict(input_size=16, width=8)),  # avg pool + 1x1 conv shortcut
    ("resnet19", dict(input_size=8, width=8)),
    ("vgg16", dict(input_size=32, width=8)),
])
def test_residual_and_vgg_roundtrip(name: str, kwargs: dict, tmp_path: Path) -> None:
    torch.manual_seed(2)
    model = create(name, mpbn="channel", timesteps=2, num_classes=5, **kwargs).double()
    x = torch.rand(2, *model.input_shape, dtype=torch.float64) * 2
    folded = mpbn.fold(trained_like(model, x, seed=2))
    graph = roundtrip(to_nir(folded), tmp_path)
    logits, spikes = spikes_by_layer(folded, x)
    sim_logits, records = simulate_nir(graph, x.expand(2, *x.shape), record=True)
    for layer, s in spikes.items():
        assert torch.equal(records[layer], s), layer
    torch.testing.assert_close(sim_logits, logits, atol=1e-10, rtol=1e-10)
