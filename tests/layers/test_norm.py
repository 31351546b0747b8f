import pytest
import torch
from torch.testing import assert_close

import mpbn
from mpbn.layers.norm import NORMS

T, B, C, H, W = 3, 4, 5, 2, 2


def _x(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, B, C, H, W, generator=g, dtype=torch.float64) * 2 + 1


def _stats(x, dims):
    return x.mean(dims), x.var(dims, unbiased=False), x.var(dims, unbiased=True)


def test_plain_bn_pools_statistics_over_time_batch_and_space():
    bn = mpbn.SeqBatchNorm(C).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.normal_()
    x = _x()
    mean, var, var_unbiased = _stats(x, (0, 1, 3, 4))
    shape = (1, 1, C, 1, 1)
    expected = bn.weight.view(shape) * (x - mean.view(shape)) / torch.sqrt(
        var.view(shape) + bn.eps) + bn.bias.view(shape)
    assert_close(bn(x), expected)
    assert_close(bn.running_mean, 0.1 * mean)
    assert_close(bn.running_var, 0.9 + 0.1 * var_unbiased)


def test_tdbn_scales_by_alpha_times_threshold():
    x = _x()
    bn, td = mpbn.SeqBatchNorm(C).double(), mpbn.ThresholdDependentBN(
        C, alpha=0.7, v_threshold=0.5).double()
    with torch.no_grad():
        for layer in (bn, td):
            layer.weight.fill_(1.3)
            layer.bias.fill_(0.2)
    assert_close(td(x), 0.35 * (bn(x) - 0.2) + 0.2)
    assert_close(td.running_var, bn.running_var)


def test_tebn_shares_statistics_and_scales_each_step():
    x = _x()
    tebn = mpbn.TemporalEffectiveBN(C, timesteps=T).double()
    bn = mpbn.SeqBatchNorm(C).double()
    with torch.no_grad():
        tebn.step_scale.copy_(torch.tensor([0.5, 1.0, 2.0]))
    scale = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64).view(T, 1, 1, 1, 1)
    assert_close(tebn(x), bn(x) * scale)
    assert_close(tebn.running_mean, bn.running_mean)
    assert tebn(x[:2]).shape[0] == 2  # early exit: fewer steps allowed
    with pytest.raises(ValueError, match="built for 3 time steps"):
        tebn(torch.zeros(4, B, C, H, W, dtype=torch.float64))


def test_bntt_keeps_separate_statistics_and_gamma_per_step():
    x = _x()
    bntt = mpbn.BatchNormThroughTime(C, timesteps=T).double()
    with torch.no_grad():
        bntt.weight.uniform_(0.5, 2)
    assert bntt.bias is None and bntt.running_mean.shape == (T, C)
    y = bntt(x)
    for t in range(T):
        mean, var, var_unbiased = _stats(x[t], (0, 2, 3))
        shape = (1, C, 1, 1)
        expected = bntt.weight[t].view(shape) * (x[t] - mean.view(shape)) / torch.sqrt(
            var.view(shape) + bntt.eps)
        assert_close(y[t], expected)
        assert_close(bntt.running_mean[t], 0.1 * mean)
        assert_close(bntt.running_var[t], 0.9 + 0.1 * var_unbiased)
    # Eval: per-step running statistics; a shorter sequence uses the first steps only.
    bntt.eval()
    y_eval = bntt(x[:2])
    shape = (1, C, 1, 1)
    expected = bntt.weight[1].view(shape) * (x[1] - bntt.running_mean[1].view(shape)) / \
        torch.sqrt(bntt.running_var[1].view(shape) + bntt.eps)
    assert_close(y_eval[1], expected)


def test_bntt_gradients_reach_each_steps_gamma():
    bntt = mpbn.BatchNormThroughTime(C, timesteps=T).double()
    x = _x()
    bntt(x)[1].pow(2).sum().backward()
    assert bntt.weight.grad[1].abs().sum() > 0
    assert bntt.weight.grad[0].abs().sum() == 0 and bntt.weight.grad[2].abs().sum() == 0


def test_layer_norm_normalizes_each_sample_and_step_over_channels_and_space():
    ln = mpbn.SeqLayerNorm(C).double()
    x = _x()
    mean = x.mean((2, 3, 4), keepdim=True)
    var = x.var((2, 3, 4), unbiased=False, keepdim=True)
    assert_close(ln(x), (x - mean) / torch.sqrt(var + ln.eps))
    ln.eval()
    assert_close(ln(x), (x - mean) / torch.sqrt(var + ln.eps))  # no running statistics


def test_eval_uses_running_statistics():
    bn = mpbn.SeqBatchNorm(C).double()
    bn(_x(1))
    bn.eval()
    x = _x(2)
    shape = (1, 1, C, 1, 1)
    expected = (x - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps)
    assert_close(bn(x), expected)


@pytest.mark.parametrize("name", list(NORMS))
def test_wrong_rank_or_channels_is_a_clear_error(name):
    norm = mpbn.create_norm(name, C, timesteps=T)
    with pytest.raises(ValueError, match=rf"expects \[T, B, C={C}, \.\.\.\], got shape \(4, 5\)"):
        norm(torch.zeros(4, 5))
    with pytest.raises(ValueError, match=rf"C={C}.*got shape \(3, 4, 6, 2, 2\)"):
        norm(torch.zeros(3, 4, 6, 2, 2))


def test_create_norm_lists_valid_names():
    with pytest.raises(ValueError, match="valid: bn, tdbn, tebn, bntt, ln"):
        mpbn.create_norm("groupnorm", 4)
    with pytest.raises(ValueError, match="needs timesteps"):
        mpbn.create_norm("bntt", 4)


@pytest.mark.parametrize("name", list(NORMS))
def test_norms_work_after_a_linear_layer(name):
    x = torch.randn(T, B, C, dtype=torch.float64)
    assert mpbn.create_norm(name, C, timesteps=T).double()(x).shape == x.shape
