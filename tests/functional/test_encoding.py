"""Spike encoders: shapes, rates (hand-computed), the BNTT authors' formula, gradients."""

import math

import pytest
import torch

import mpbn.data
import mpbn.data.encoders
import mpbn.functional
from mpbn.functional.encoding import direct_encode, poisson_encode


def _bntt_poisson_gen(inp, rand, rescale_fac):
    """The BNTT authors' generator (model.py, ``PoissonGen``), with the uniform draw passed in.

    ``torch.mul(torch.le(rand_inp * rescale_fac, torch.abs(inp)).float(), torch.sign(inp))``
    """
    return torch.mul(torch.le(rand * rescale_fac, torch.abs(inp)).float(), torch.sign(inp))


def test_direct_encode_is_a_view_repeated_in_time():
    x = torch.randn(4, 3, 5, 5)
    out = direct_encode(x, 6)
    assert out.shape == (6, 4, 3, 5, 5)
    assert out.data_ptr() == x.data_ptr()
    assert out.stride(0) == 0
    torch.testing.assert_close(out[5], x)


def test_poisson_rate_matches_intensity_and_sign():
    x = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0, -0.3, 2.0, -5.0])
    generator = torch.Generator().manual_seed(0)
    spikes = poisson_encode(x, 20000, generator=generator)
    assert spikes.shape == (20000, 8)
    assert set(spikes.unique().tolist()) <= {-1.0, 0.0, 1.0}
    rate = spikes.mean(0)
    expected = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0, -0.3, 1.0, -1.0])
    torch.testing.assert_close(rate, expected, atol=0.015, rtol=0)
    assert spikes[:, 0].abs().sum() == 0  # zero intensity never fires


def test_poisson_is_reproducible_with_a_generator():
    x = torch.rand(3, 4)
    first = poisson_encode(x, 5, generator=torch.Generator().manual_seed(3))
    second = poisson_encode(x, 5, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(first, second)


@pytest.mark.parametrize("bad", [0, -1, 2.5])
def test_encoders_reject_bad_timesteps(bad):
    with pytest.raises(ValueError, match="timesteps"):
        direct_encode(torch.zeros(1), bad)


def test_poisson_gradient_is_straight_through_of_the_expectation():
    x = torch.tensor([-1.5, -0.5, 0.0, 0.3, 0.9, 2.0], requires_grad=True)
    g = torch.Generator().manual_seed(0)
    spikes = poisson_encode(x, 5, generator=g)
    assert torch.equal(
        spikes.detach(), poisson_encode(x.detach(), 5, generator=torch.Generator().manual_seed(0))
    )
    (grad,) = torch.autograd.grad(spikes.sum(), x)
    assert grad.tolist() == [0.0, 5.0, 5.0, 5.0, 5.0, 0.0]


def test_old_import_paths_are_the_same_functions():
    for module in (mpbn.data, mpbn.data.encoders, mpbn.functional):
        assert module.poisson_encode is poisson_encode
        assert module.direct_encode is direct_encode


def _assert_rates(spikes, probability):
    """Empirical rate of every column within 5 binomial sigma of ``probability`` (exact at 0, 1)."""
    steps = spikes.shape[0]
    rate = spikes.abs().mean(0)
    for got, p in zip(rate.tolist(), probability, strict=True):
        assert abs(got - p) <= 5 * math.sqrt(p * (1 - p) / steps), (got, p)


# Intensities where |x| and |x|/2 differ by far more than the tolerance (<= 0.0125 at T=40000),
# and where clamping to 1 matters for one rate and not the other.
_X = [0.0, 0.2, 0.6, 1.0, 1.5, 2.0, 3.0, -0.8, -2.5]


def test_poisson_default_rate_is_abs_x():
    spikes = poisson_encode(torch.tensor(_X), 40000, generator=torch.Generator().manual_seed(1))
    _assert_rates(spikes, [0.0, 0.2, 0.6, 1.0, 1.0, 1.0, 1.0, 0.8, 1.0])
    assert (spikes.sum(0).sign() == torch.tensor(_X).sign()).all()


def test_poisson_rate_scale_half_is_the_bntt_code_rate():
    spikes = poisson_encode(
        torch.tensor(_X), 40000, generator=torch.Generator().manual_seed(1), rate_scale=0.5
    )
    _assert_rates(spikes, [0.0, 0.1, 0.3, 0.5, 0.75, 1.0, 1.0, 0.4, 1.0])
    assert (spikes.sum(0).sign() == torch.tensor(_X).sign()).all()


@pytest.mark.parametrize("rescale_fac", [1.0, 2.0])
def test_poisson_equals_the_authors_formula_draw_for_draw(rescale_fac):
    x = torch.cat(
        [
            torch.randn(500, generator=torch.Generator().manual_seed(0)) * 1.5,
            torch.tensor([0.0, -0.0, 1.0, -1.0, 2.0, -2.0, 0.5]),
        ]
    )
    rand = torch.rand((7, *x.shape), generator=torch.Generator().manual_seed(4))
    want = _bntt_poisson_gen(x, rand, rescale_fac)
    got = poisson_encode(
        x, 7, generator=torch.Generator().manual_seed(4), rate_scale=1.0 / rescale_fac
    )
    assert torch.equal(got, want)


@pytest.mark.parametrize("bad", [0, -0.5, float("nan"), float("inf"), "0.5"])
def test_poisson_rejects_bad_rate_scale(bad):
    with pytest.raises(ValueError, match="rate_scale"):
        poisson_encode(torch.zeros(2), 3, rate_scale=bad)


def test_poisson_gradient_follows_the_rate_scale():
    x = torch.tensor([-3.0, -1.0, 0.0, 1.5, 2.5], requires_grad=True)
    spikes = poisson_encode(x, 4, generator=torch.Generator().manual_seed(0), rate_scale=0.5)
    (grad,) = torch.autograd.grad(spikes.sum(), x)
    # d/dx clamp(x / 2, -1, 1) = 1/2 inside |x| < 2, summed over T = 4 steps.
    assert grad.tolist() == [0.0, 2.0, 2.0, 2.0, 0.0]
