"""Activation checkpointing of the body: same gradients, same running statistics, less memory."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_model
from torch import nn

from mpbn.layers import LIF
from mpbn.models import create
from mpbn.models._checkpoint import body_units

TIMESTEPS = 3


def pair(name: str, **kwargs: object) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    if name == "fc_smnist":
        kwargs = dict(hidden=(16, 16, 16), **kwargs)  # three hidden layers: segments of 2
    plain = tiny_model(name, TIMESTEPS, **kwargs).double().train()
    ckpt = tiny_model(name, TIMESTEPS, **kwargs).double().train()
    ckpt.load_state_dict(plain.state_dict())
    return plain, ckpt


def example_input(model: nn.Module) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    if model.encoding == "direct":
        return torch.rand(4, *model.input_shape, generator=g, dtype=torch.float64) * 2
    # Poisson / sequence models: a fixed spike sequence, so both runs see the same input.
    return (torch.rand(TIMESTEPS, 4, *model.input_shape, generator=g) < 0.5).double()


def train_step(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    loss = model(x).square().mean()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize(("name", "kwargs"), [
    ("resnet20_narrow", {}),
    ("resnet20_narrow", dict(mpbn="channel")),
    ("resnet18", dict(mpbn="element")),
    ("vgg9", dict(norm="bntt")),
    ("fc_smnist", dict(norm="bntt", mpbn="channel")),
])
@pytest.mark.parametrize("every", [1, 2])
def test_gradients_and_running_stats_equal_the_plain_step(name, kwargs, every):
    plain, ckpt = pair(name, **kwargs)
    ckpt.set_grad_checkpointing(every=every)
    x = example_input(plain)
    for _ in range(2):  # the second step runs on the statistics the first one left
        loss_a, grads_a = train_step(plain, x)
        loss_b, grads_b = train_step(ckpt, x)
        torch.testing.assert_close(loss_b, loss_a, rtol=0, atol=0)
        for n, g in grads_a.items():
            torch.testing.assert_close(grads_b[n], g, rtol=1e-12, atol=1e-12, msg=n)
    # The replay in backward must not update running statistics a second time.
    for (n, a), b in zip(plain.state_dict().items(), ckpt.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=n)


def test_evaluation_and_no_grad_run_the_plain_body():
    plain, ckpt = pair("resnet20_narrow", mpbn="channel")
    ckpt.set_grad_checkpointing()
    x = example_input(plain)
    with torch.no_grad():
        torch.testing.assert_close(ckpt(x), plain(x), rtol=0, atol=0)
    plain.eval()
    ckpt.eval()
    torch.testing.assert_close(ckpt(x), plain(x), rtol=0, atol=0)


def test_units_end_in_spikes():
    model = create("resnet20_narrow", timesteps=2)
    units = body_units(model.body)
    # stem LIF, then the 9 residual blocks of ResNet-20, one per unit
    assert len(units) == 1 + 9
    assert all(any(isinstance(m, LIF) for m in unit[-1].modules()) for unit in units)
    vgg = create("vgg9", timesteps=2, width=8)
    assert all(any(isinstance(m, LIF) for m in unit[-1].modules())
               for unit in body_units(vgg.body)[:-1])


def test_bad_segment_length_is_one_line_error():
    model = create("resnet20_narrow", timesteps=2)
    with pytest.raises(ValueError, match="every must be >= 1"):
        model.set_grad_checkpointing(every=0)


def test_keeps_less_for_backward():
    """Peak tensor memory of a training step (MemTracker counts CPU tensors too): about half."""
    mem_tracker = pytest.importorskip("torch.distributed._tools.mem_tracker")
    peaks = {}
    for every in (0, 1):
        torch.manual_seed(0)
        model = create("resnet20_narrow", timesteps=4, input_size=16).train()
        model.set_grad_checkpointing(every > 0, every=max(every, 1))
        x = torch.rand(4, 3, 16, 16)
        tracker = mem_tracker.MemTracker()
        tracker.track_external(model)
        with tracker:
            model(x).sum().backward()
        peaks[every] = tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]
    assert peaks[1] < 0.7 * peaks[0], peaks
