import pytest
import torch
from torch.testing import assert_close

from mpbn.functional.surrogate import (
    DEFAULT_ALPHA,
    SURROGATES,
    spike,
    surrogate_grad,
    surrogate_primitive,
)


@pytest.mark.parametrize("name", SURROGATES)
@pytest.mark.parametrize("v_threshold", [0.5, 1.0])
def test_backward_is_derivative_of_primitive(name, v_threshold):
    # Points straddling every kink of every surrogate, plus random ones.
    x = torch.cat([torch.linspace(-2.5, 2.5, 401, dtype=torch.float64),
                   torch.randn(200, dtype=torch.float64)]).requires_grad_()
    alpha = DEFAULT_ALPHA[name]
    (g_spike,) = torch.autograd.grad(spike(x, v_threshold, name).sum(), x)
    (g_prim,) = torch.autograd.grad(surrogate_primitive(name, x, v_threshold, alpha).sum(), x)
    assert_close(g_spike, g_prim)


@pytest.mark.parametrize("name", ["sigmoid", "atan", "tanh"])
def test_smooth_surrogates_match_finite_differences(name):
    x = torch.linspace(-0.4, 0.4, 81, dtype=torch.float64)  # inside tanh's support
    h = 1e-6
    alpha = DEFAULT_ALPHA[name]
    fd = (surrogate_primitive(name, x + h, 0.5, alpha)
          - surrogate_primitive(name, x - h, 0.5, alpha)) / (2 * h)
    assert_close(surrogate_grad(name, x, 0.5, alpha), fd, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("name", SURROGATES)
def test_forward_is_exact_heaviside(name):
    x = torch.tensor([-1.0, -1e-12, 0.0, 1e-12, 1.0], dtype=torch.float64)
    assert spike(x, 0.5, name).tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]


def test_rectangle_is_eq12_window_at_paper_threshold():
    # MPBN Eq. 12 with V_th = 0.5: gradient 1 where 0 <= u <= 1 (u the potential itself).
    u = torch.tensor([-0.01, 0.0, 0.3, 0.5, 1.0, 1.01], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(spike(u - 0.5, 0.5, "rectangle").sum(), u)
    assert g.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]


def test_bntt_linear_surrogate_hand_values():
    # d o / d u = 0.3 * max(0, 1 - |u - theta| / theta), theta = 1.
    u = torch.tensor([1.0, 0.5, 1.5, 0.0, 2.1], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(spike(u - 1.0, 1.0, "linear").sum(), u)
    assert_close(g, torch.tensor([0.3, 0.15, 0.15, 0.0, 0.0], dtype=torch.float64))


def test_tanh_surrogate_reading_at_paper_threshold():
    # At V_th = 0.5, s = v, so the gradient at the threshold is k / (2 tanh(k/2)) and it is zero
    # outside [0, 1].
    k = 3.0
    v = torch.tensor([0.5, -0.1, 1.1], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(spike(v - 0.5, 0.5, "tanh").sum(), v)
    expected = k / (2 * torch.tanh(torch.tensor(k / 2, dtype=torch.float64)))
    assert_close(g[0], expected)
    assert g[1:].tolist() == [0.0, 0.0]


def test_unknown_surrogate_lists_valid_names():
    with pytest.raises(ValueError, match="valid: rectangle, tanh, linear, sigmoid, atan"):
        spike(torch.zeros(1), 0.5, "relu")


@pytest.mark.parametrize("name", SURROGATES)
def test_every_backend_takes_every_registered_surrogate(name):
    """The registry is the one table of surrogates: the eager fused recurrence (its float-mask
    forms of two of them included) computes the registered derivative, and the Triton kernels
    have a branch for the name (their numbers are checked by the interpreter tests in
    test_fused.py, which loop over SURROGATES)."""
    from mpbn.functional import lif_recurrence, triton_lif
    from mpbn.functional.surrogate import REGISTRY

    x = torch.cat([torch.linspace(-2.5, 2.5, 401, dtype=torch.float64),
                   torch.randn(100, dtype=torch.float64)])
    for v_threshold in (0.5, torch.full((501,), 0.8, dtype=torch.float64)):
        alpha = DEFAULT_ALPHA[name] * 1.3  # not only the default
        want = REGISTRY[name].grad(x, v_threshold, alpha)
        assert_close(surrogate_grad(name, x, v_threshold, alpha), want, rtol=0, atol=0,
                     msg=f"reference backend: {name}")
        assert_close(lif_recurrence._surrogate_grad(name, x.clone(), v_threshold, alpha), want,
                     rtol=1e-12, atol=1e-12, msg=f"eager fused backend: {name}")
    assert name in triton_lif.SURROGATE_IDS, (
        f"triton backend lacks surrogate {name!r}: add a branch to triton_lif._surrogate_grad "
        "and its id to SURROGATE_IDS")
    assert set(triton_lif.SURROGATE_IDS) == set(REGISTRY), "triton names a surrogate not registered"
