import pytest
import torch

from mpbn.data import direct_encode, poisson_encode


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
    assert torch.equal(spikes.detach(), poisson_encode(x.detach(), 5,
                                                       generator=torch.Generator().manual_seed(0)))
    (grad,) = torch.autograd.grad(spikes.sum(), x)
    assert grad.tolist() == [0.0, 5.0, 5.0, 5.0, 5.0, 0.0]
