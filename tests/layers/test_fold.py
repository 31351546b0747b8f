import copy

import pytest
import torch

import mpbn


def _trained_like(lif: mpbn.LIF, generator: torch.Generator) -> None:
    """Random statistics and parameters, including negative, zero and tiny scales."""
    norm = lif.membrane_norm
    n = norm.weight.numel()
    with torch.no_grad():
        w = torch.randn(n, generator=generator, dtype=torch.float64)
        special = torch.tensor([-0.7, 0.0, 1e-12, -1e-12, 0.0, 3.0], dtype=torch.float64)
        w[: len(special)] = special
        b = torch.randn(n, generator=generator, dtype=torch.float64) * 0.5
        b[4] = 0.5  # lambda == 0 and beta == V_th: never fires
        b[1] = 0.9  # lambda == 0 and beta > V_th: always fires
        var = torch.rand(n, generator=generator, dtype=torch.float64) * 2
        var[:3] = 1e-12  # tiny variances
        norm.weight.copy_(w.view_as(norm.weight))
        norm.bias.copy_(b.view_as(norm.bias))
        norm.running_mean.copy_(torch.randn(n, generator=generator,
                                            dtype=torch.float64).view_as(norm.running_mean))
        norm.running_var.copy_(var.view_as(norm.running_var))


@pytest.mark.parametrize("granularity", ["channel", "element"])
@pytest.mark.parametrize("reset", ["hard", "soft"])
def test_fold_is_bit_exact_in_float64(granularity, reset):
    g = torch.Generator().manual_seed(1)
    C, H, W = 8, 4, 4
    kw = dict(num_features=C) if granularity == "channel" else dict(feature_shape=(C, H, W))
    lif = mpbn.LIF(membrane_norm=granularity, reset=reset, **kw).double().eval()
    _trained_like(lif, g)
    before = copy.deepcopy(lif.state_dict())
    folded = mpbn.fold(lif)
    x = torch.randn(6, 32, C, H, W, generator=g, dtype=torch.float64)
    report = mpbn.spike_mismatch(lif, folded, x)
    assert report.total_mismatches == 0
    assert folded.membrane_norm is None
    assert folded.threshold_sign is not None  # negative lambdas fire below the threshold
    # The original is untouched.
    for k, v in lif.state_dict().items():
        assert torch.equal(v, before[k])
    # Constant neurons: lambda == 0 fires always iff beta > V_th.
    spikes = folded(x)
    per_neuron = spikes.movedim(2, 0).flatten(1) if granularity == "channel" else \
        spikes.flatten(2).movedim(2, 0).flatten(1)
    assert per_neuron[1].all() and not per_neuron[4].any()


@pytest.mark.parametrize("granularity", ["channel", "element"])
def test_fold_float32_mismatch_rate_is_tiny(granularity):
    g = torch.Generator().manual_seed(2)
    C, H, W = 16, 8, 8
    kw = dict(num_features=C) if granularity == "channel" else dict(feature_shape=(C, H, W))
    lif = mpbn.LIF(membrane_norm=granularity, **kw).double().eval()
    _trained_like(lif, g)
    lif = lif.float()
    x = torch.randn(4, 64, C, H, W, generator=g)
    report = mpbn.spike_mismatch(lif, mpbn.fold(lif), x)
    print(f"float32 {granularity}-wise fold: {report.total_mismatches} of {sum(report.totals)} "
          f"spikes differ (rate {report.rate:.2e})")
    assert report.rate < 1e-4


def test_fold_inside_a_module_tree_replaces_every_mpbn_neuron():
    model = torch.nn.Sequential(
        torch.nn.Identity(),
        torch.nn.Sequential(mpbn.LIF(membrane_norm="channel", num_features=3)),
        mpbn.LIF(membrane_norm="element", feature_shape=(3,)),
    ).double()
    model.train()
    x = torch.randn(3, 16, 3, dtype=torch.float64)
    model(x)  # non-trivial running statistics
    folded = mpbn.fold(model)
    assert not any(isinstance(m, mpbn.MembraneBN) for m in folded.modules())
    assert any(isinstance(m, mpbn.MembraneBN) for m in model.modules())
    assert mpbn.spike_mismatch(model, folded, x).total_mismatches == 0
    assert model.training  # restored


def test_spike_mismatch_seed_feeds_a_random_encoder_the_same_spikes():
    class PoissonLIF(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lif = mpbn.LIF()

        def forward(self, x):
            return self.lif((torch.rand(4, *x.shape) < x).float())

    model = PoissonLIF()
    x = torch.full((64, 16), 0.5)
    assert mpbn.spike_mismatch(model, copy.deepcopy(model), x, seed=3).total_mismatches == 0
    report = mpbn.spike_mismatch(model, copy.deepcopy(model), x)
    assert report.total_mismatches > 0 and 0 < report.rate < 1


def test_bn_folds_into_the_conv_of_a_conv_norm_and_nowhere_else():
    from torch import nn

    from mpbn.layers import ConvNorm, FoldWarning, PerStep, SeqBatchNorm

    class Shifted(ConvNorm):
        """A user subclass is still a ConvNorm for the fold."""

    torch.manual_seed(0)
    model = nn.Sequential(
        ConvNorm(nn.Conv2d(2, 4, 3, padding=1, bias=False), SeqBatchNorm(4)),
        mpbn.LIF(),
        Shifted(nn.Linear(4, 4), SeqBatchNorm(4)),
        PerStep(nn.AvgPool2d(2)),
        SeqBatchNorm(4),  # after pooling: no conv/linear to fold into
    ).double()
    # A module that merely looks like one (a conv and a norm child) is not folded: only a
    # ConvNorm promises that its norm acts directly on its conv's output.
    lookalike = nn.Module()
    lookalike.conv, lookalike.norm = nn.Conv2d(4, 4, 1), SeqBatchNorm(4)
    model.add_module("lookalike", lookalike)
    model.train()
    x = torch.rand(3, 5, 2, 4, 4, dtype=torch.float64)
    model[0](x)
    model[2](torch.rand(3, 5, 4, dtype=torch.float64))  # non-trivial running statistics
    model[4](torch.rand(3, 5, 4, 2, 2, dtype=torch.float64))
    model.eval()
    with pytest.warns(FoldWarning, match="2 BN with no preceding conv/linear.*4, lookalike.norm"):
        folded = mpbn.fold(model)
    assert isinstance(folded[0].norm, nn.Identity) and isinstance(folded[2].norm, nn.Identity)
    assert isinstance(folded[4], SeqBatchNorm) and isinstance(folded.lookalike.norm, SeqBatchNorm)
    assert folded[0].conv.bias is not None  # created by the fold (beta - mu * s)
    torch.testing.assert_close(folded[0](x), model[0](x), rtol=1e-12, atol=1e-12)
    y = torch.rand(3, 5, 4, dtype=torch.float64)
    torch.testing.assert_close(folded[2](y), model[2](y), rtol=1e-12, atol=1e-12)
