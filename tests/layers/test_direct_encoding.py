"""DirectEncoding: the module form of direct_encode, the first layer of a model of one's own."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import mpbn
from mpbn.functional.encoding import direct_encode
from mpbn.layers import LIF, ConvNorm, DirectEncoding, IntegratingClassifier, PerStep, SeqBatchNorm


def _body() -> nn.Sequential:
    return nn.Sequential(
        ConvNorm(nn.Conv2d(1, 4, 3, padding=1, bias=False), SeqBatchNorm(4)),
        LIF(membrane_norm="channel", num_features=4),
        PerStep(nn.AvgPool2d(2)),
        IntegratingClassifier(nn.Linear(4, 3), pool="avg"),
    )


def test_it_is_direct_encode_without_a_copy():
    x = torch.rand(5, 1, 8, 8)
    y = DirectEncoding(3)(x)
    torch.testing.assert_close(y, direct_encode(x, 3), rtol=0, atol=0)
    assert y.shape == (3, 5, 1, 8, 8) and y.stride(0) == 0 and y.data_ptr() == x.data_ptr()


def test_a_sequential_on_static_images_equals_the_body_on_the_repeated_image():
    torch.manual_seed(0)
    body = _body()
    net = nn.Sequential(DirectEncoding(3), *body)
    x = torch.rand(6, 1, 8, 8)
    torch.testing.assert_close(net(x), body(x.expand(3, *x.shape)))
    # Folding leaves the encoding alone and changes no spike.
    net.eval()
    folded = mpbn.fold(net)
    assert isinstance(folded[0], DirectEncoding) and folded[0].timesteps == 3
    assert mpbn.spike_mismatch(net, folded, x).total_mismatches == 0


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "4"])
def test_timesteps_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match="DirectEncoding needs a positive int timesteps"):
        DirectEncoding(bad)


def test_repr_names_the_steps():
    assert repr(DirectEncoding(4)) == "DirectEncoding(timesteps=4)"
