import pytest
import torch
from torch.testing import assert_close

from mpbn.functional.neuron import LIFParams, lif_step, run_over_time


def _run(c, params):
    us = []

    def step(x_t, u, t):
        o, u = lif_step(x_t, u, params)
        us.append(u)
        return o, u

    return run_over_time(step, c), torch.stack(us)


def test_hard_reset_hand_computed():
    # MPBN Eq. 1-2 with tau = 0.25, V_th = 0.5.
    c = torch.tensor([0.3, 0.3, 0.6, 0.1], dtype=torch.float64).view(4, 1)
    o, u = _run(c, LIFParams(decay=0.25, v_threshold=0.5, reset="hard"))
    assert o.flatten().tolist() == [0.0, 0.0, 1.0, 0.0]
    assert_close(u.flatten(), torch.tensor([0.3, 0.375, 0.0, 0.1], dtype=torch.float64))


def test_soft_reset_hand_computed():
    # BNTT: leak 0.9, threshold 1, subtract the threshold after a spike.
    c = torch.full((4, 1), 0.6, dtype=torch.float64)
    o, u = _run(c, LIFParams(decay=0.9, v_threshold=1.0, reset="soft", surrogate="linear"))
    assert o.flatten().tolist() == [0.0, 1.0, 0.0, 1.0]
    assert_close(u.flatten(), torch.tensor([0.6, 0.14, 0.726, 0.2534], dtype=torch.float64))


def test_threshold_sign_fires_below():
    c = torch.tensor([[0.1, 0.9]], dtype=torch.float64)
    th = torch.tensor([0.5, 0.5], dtype=torch.float64)
    o, _ = lif_step(c[0], None, LIFParams(v_threshold=th, threshold_sign=torch.tensor([-1.0, 1.0],
                                                                                      dtype=torch.float64)))
    assert o.tolist() == [1.0, 1.0]


@pytest.mark.parametrize("kwargs, match", [
    (dict(reset="zero"), "unknown reset"),
    (dict(surrogate="foo"), "unknown surrogate"),
    (dict(decay=1.5), "decay must be in"),
])
def test_bad_params(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LIFParams(**kwargs)
