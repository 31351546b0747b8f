import torch
from torch.testing import assert_close

from mpbn.functional.fold import fold_bn_into_weights, fold_membrane_threshold


def test_eq10_for_positive_scale():
    th, sign = fold_membrane_threshold(
        0.5, torch.tensor([2.0]), torch.tensor([0.1]), torch.tensor([0.3]),
        torch.tensor([4.0]), 0.0)
    # (0.5 - 0.1) * 2 / 2 + 0.3
    assert_close(th, torch.tensor([0.7]))
    assert sign.tolist() == [1.0]


def test_negative_and_zero_scale():
    th, sign = fold_membrane_threshold(
        0.5, torch.tensor([-2.0, 0.0, 0.0]), torch.tensor([0.1, 0.9, 0.2]),
        torch.tensor([0.3, 0.0, 0.0]), torch.tensor([4.0, 1.0, 1.0]), 0.0)
    assert_close(th[0], torch.tensor(-0.1))   # (0.4 * 2) / -2 + 0.3
    assert sign.tolist() == [-1.0, 1.0, 1.0]
    assert th[1].item() == -float("inf")      # beta > V_th: always fires
    assert th[2].item() == float("inf")       # beta <= V_th: never fires


def test_bn_into_weights_matches_conv_then_bn():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3, bias=True).double()
    bn = torch.nn.BatchNorm2d(4).double().eval()
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.1, 2)
    bn.weight.data.normal_()
    bn.bias.data.normal_()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    w, b = fold_bn_into_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var,
                                bn.weight, bn.bias, bn.eps, scale=0.7)
    expected = 0.7 * (bn(conv(x)) - bn.bias.view(1, -1, 1, 1)) + bn.bias.view(1, -1, 1, 1)
    assert_close(torch.nn.functional.conv2d(x, w, b), expected)
