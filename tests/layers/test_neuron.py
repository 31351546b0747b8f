import pytest
import torch
from torch.testing import assert_close

import mpbn
from mpbn.functional.surrogate import DEFAULT_ALPHA, SURROGATES, surrogate_primitive


def test_lif_module_matches_hand_computed_sequence():
    x = torch.tensor([0.3, 0.3, 0.6, 0.1]).view(4, 1, 1)
    assert mpbn.LIF()(x).flatten().tolist() == [0.0, 0.0, 1.0, 0.0]


def test_returns_input_dtype_and_forgets_state_between_calls():
    lif = mpbn.LIF()
    x = torch.rand(3, 2, 4, dtype=torch.float64)
    first = lif(x)
    assert first.dtype == torch.float64
    assert torch.equal(first, lif(x))


def test_per_channel_and_per_element_thresholds():
    x = torch.rand(2, 4, 3, 5, 5)
    per_channel = torch.tensor([0.1, 0.5, 2.0])
    o = mpbn.LIF(v_threshold=per_channel)(x)
    o_ref = torch.stack([mpbn.LIF(v_threshold=float(v))(x[:, :, i]) for i, v in
                         enumerate(per_channel)], dim=2)
    assert torch.equal(o, o_ref)
    per_element = torch.rand(3, 5, 5)
    o = mpbn.LIF(decay=0.0, v_threshold=per_element)(x)
    assert torch.equal(o, (x > per_element).float())
    with pytest.raises(ValueError, match="does not fit a time step"):
        mpbn.LIF(v_threshold=torch.rand(7))(x)


def _reference_mpbn_lif(x, weight, bias, decay, v_th, reset, surrogate, granularity, eps=1e-5):
    """Independent float64 reference: explicit statistics, straight-through spikes."""
    alpha = DEFAULT_ALPHA[surrogate]
    dims = (0, 2, 3) if granularity == "channel" else (0,)
    shape = (1, -1, 1, 1) if granularity == "channel" else (1, *weight.shape)
    u = torch.zeros_like(x[0])
    out, means, vars_ = [], [], []
    for t in range(x.shape[0]):
        u_pre = decay * u + x[t]
        mean = u_pre.mean(dims, keepdim=True)
        var = u_pre.var(dims, unbiased=False, keepdim=True)
        v = weight.view(shape) * (u_pre - mean) / torch.sqrt(var + eps) + bias.view(shape)
        soft = surrogate_primitive(surrogate, v - v_th, v_th, alpha)
        o = soft + ((v - v_th > 0).to(x.dtype) - soft).detach()
        u = u_pre * (1 - o) if reset == "hard" else u_pre - o * v_th
        out.append(o)
        means.append(mean.flatten().detach())
        vars_.append(u_pre.var(dims, unbiased=True).flatten().detach())
    return torch.stack(out), torch.stack(means), torch.stack(vars_)


@pytest.mark.parametrize("granularity", ["channel", "element"])
@pytest.mark.parametrize("surrogate", SURROGATES)
@pytest.mark.parametrize("reset", ["hard", "soft"])
def test_mpbn_training_matches_reference_forward_and_bptt(granularity, surrogate, reset):
    torch.manual_seed(0)
    T, B, C, H, W = 3, 6, 2, 3, 3
    kw = dict(num_features=C) if granularity == "channel" else dict(feature_shape=(C, H, W))
    lif = mpbn.LIF(membrane_norm=granularity, reset=reset, surrogate=surrogate, **kw).double()
    with torch.no_grad():
        lif.membrane_norm.weight.uniform_(-1.5, 1.5)
        lif.membrane_norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(T, B, C, H, W, dtype=torch.float64, requires_grad=True)
    probe = torch.randn(T, B, C, H, W, dtype=torch.float64)

    out = lif(x)
    grads = torch.autograd.grad((out * probe).sum(),
                                [x, lif.membrane_norm.weight, lif.membrane_norm.bias])

    w = lif.membrane_norm.weight.detach().clone().requires_grad_()
    b = lif.membrane_norm.bias.detach().clone().requires_grad_()
    ref, means, variances = _reference_mpbn_lif(x, w, b, 0.25, 0.5, reset, surrogate, granularity)
    ref_grads = torch.autograd.grad((ref * probe).sum(), [x, w, b])

    assert torch.equal(out, ref)
    for g, g_ref in zip(grads, ref_grads, strict=True):
        assert_close(g, g_ref)
    # Gradient flows through time and into MPBN's parameters.
    assert grads[0][0].abs().sum() > 0 and grads[1].abs().sum() > 0 and grads[2].abs().sum() > 0
    # Running statistics: one update with the step-averaged batch statistics.
    assert_close(lif.membrane_norm.running_mean.flatten(), 0.1 * means.mean(0))
    assert_close(lif.membrane_norm.running_var.flatten(), 0.9 + 0.1 * variances.mean(0))


def test_bptt_reaches_earlier_steps():
    lif = mpbn.LIF(surrogate="sigmoid").double()
    x = torch.rand(4, 2, 3, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(lif(x)[-1].sum(), x)
    assert (g[0] != 0).all()  # the last step's spikes depend on the first step's input


def test_mpbn_eval_uses_running_statistics():
    lif = mpbn.LIF(membrane_norm="channel", num_features=2).double().eval()
    with torch.no_grad():
        lif.membrane_norm.running_mean.copy_(torch.tensor([1.0, -1.0]))
        lif.membrane_norm.running_var.copy_(torch.tensor([4.0, 0.25]))
    x = torch.randn(1, 5, 2, dtype=torch.float64)  # T = 1: u_pre = x
    v = (x - torch.tensor([1.0, -1.0])) / torch.sqrt(torch.tensor([4.0, 0.25]) + 1e-5)
    assert torch.equal(lif(x), (v > 0.5).double())


@pytest.mark.parametrize("kwargs, shape, match", [
    (dict(membrane_norm="channel", num_features=3), (2, 4, 5), r"\[T, B, C=3, \.\.\.\]"),
    (dict(membrane_norm="element", feature_shape=(3, 4, 4)), (2, 1, 3, 4, 5), r"\[T, B, 3, 4, 4\]"),
    (dict(), (5,), r"\[T, B, \.\.\.\]"),
])
def test_wrong_input_shape_is_a_clear_error(kwargs, shape, match):
    with pytest.raises(ValueError, match=match):
        mpbn.LIF(**kwargs)(torch.zeros(shape))


@pytest.mark.parametrize("kwargs, match", [
    (dict(membrane_norm="channel"), "needs num_features"),
    (dict(membrane_norm="element"), "needs feature_shape"),
    (dict(membrane_norm="layer"), "valid: None, channel, element"),
])
def test_bad_membrane_norm_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mpbn.LIF(**kwargs)


def test_create_neuron_refuses_element_without_shape():
    with pytest.raises(ValueError, match="element-wise MPBN needs the per-step feature shape"):
        mpbn.create_neuron(16, membrane_norm="element")


@pytest.mark.parametrize("backend", ["reference", "auto"])
@pytest.mark.parametrize("granularity", ["channel", "element"])
def test_mpbn_under_bf16_autocast_runs_the_membrane_in_float32(backend, granularity):
    torch.manual_seed(0)
    kw = dict(num_features=3) if granularity == "channel" else dict(feature_shape=(3, 4, 4))
    lif = mpbn.LIF(membrane_norm=granularity, backend=backend, **kw)
    x = torch.randn(2, 4, 3, 4, 4).bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = lif(x)
    assert out.dtype == torch.bfloat16
    reference = mpbn.LIF(membrane_norm=granularity, backend="reference", **kw)
    assert torch.equal(out.float(), reference(x.detach().float()))
    out.float().sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.bfloat16


@pytest.mark.parametrize("granularity", ["channel", "element"])
def test_at_one_step_mpbn_after_bn_cancels_bns_scale_and_shift(granularity):
    """MPBN (Eq. 6-7) at T = 1 behind a BN (Eq. 4-5): the membrane is ``u_1 = BN(z)`` (u_0 = 0),
    whose mean over the batch is BN's shift and whose spread is BN's scale, so MPBN's own
    normalization removes both: BN's scale and shift get no gradient. Channel-wise, BN has
    already normalized each channel, so conv-BN-MPBN-LIF is conv-BN-LIF with BN's (gamma,
    beta) replaced by MPBN's (lambda, beta): why the T = 1 channel-wise ablation of a plain
    conv-BN-LIF network equals its baseline (docs/RESULTS.md, "Full CIFAR-10")."""
    torch.manual_seed(0)
    B, C, H, W = 64, 3, 4, 4
    z = torch.randn(1, B, C, H, W, dtype=torch.float64) * 2 + 0.5  # a conv's output, T = 1
    kw = dict(num_features=C) if granularity == "channel" else dict(feature_shape=(C, H, W))
    bn = mpbn.layers.SeqBatchNorm(C, eps=1e-12).double()
    lif = mpbn.LIF(membrane_norm=granularity, **kw).double()
    lif.membrane_norm.eps = 1e-12  # so that eps does not blur the equalities below
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.uniform_(-1.0, 1.0)
        lif.membrane_norm.weight.uniform_(0.5, 2.0)
        lif.membrane_norm.bias.uniform_(-0.5, 0.5)
    spikes = lif(bn(z))
    lam, beta = lif.membrane_norm.weight, lif.membrane_norm.bias
    g_bn_w, g_bn_b, g_lam, g_beta = torch.autograd.grad(spikes.sum(),
                                                        [bn.weight, bn.bias, lam, beta])
    assert g_lam.abs().sum() > 1 and g_beta.abs().sum() > 1
    assert_close(g_bn_w, torch.zeros_like(g_bn_w), rtol=0, atol=1e-6)
    assert_close(g_bn_b, torch.zeros_like(g_bn_b), rtol=0, atol=1e-6)
    if granularity != "channel":
        return
    plain_bn = mpbn.layers.SeqBatchNorm(C, eps=1e-12).double()
    with torch.no_grad():
        plain_bn.weight.copy_(lam)
        plain_bn.bias.copy_(beta)
    plain = mpbn.LIF().double()(plain_bn(z))
    assert torch.equal(spikes, plain)
    g_w, g_b = torch.autograd.grad(plain.sum(), [plain_bn.weight, plain_bn.bias])
    assert_close(g_w, g_lam)
    assert_close(g_b, g_beta)


def test_at_two_steps_bns_scale_and_shift_matter_again():
    """The counterpart of the test above: from the second step on, the membrane carries the
    decayed first step besides BN's output, so MPBN no longer cancels BN's scale and shift."""
    torch.manual_seed(0)
    z = torch.randn(2, 64, 3, 4, 4, dtype=torch.float64) * 2 + 0.5
    bn = mpbn.layers.SeqBatchNorm(3, eps=1e-12).double()
    lif = mpbn.LIF(membrane_norm="channel", num_features=3).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.uniform_(-1.0, 1.0)
    g_bn_w, g_bn_b = torch.autograd.grad(lif(bn(z)).sum(), [bn.weight, bn.bias])
    assert g_bn_w.abs().min() > 1e-3 and g_bn_b.abs().min() > 1e-3
