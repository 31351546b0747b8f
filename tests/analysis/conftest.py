"""Tiny stand-in SNNs with the model-zoo conventions (``input_shape``, ``timesteps`` read at
forward time, ``[B, ...]`` or ``[T, B, ...]`` input, integrating classifier)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from mpbn.layers import LIF, create_norm


class IntegratingHead(nn.Module):
    """Time-mean, global average pool, linear (the zoo's IntegratingClassifier)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear
        self.pool = "avg"

    def forward(self, x_seq: Tensor) -> Tensor:
        return self.linear(x_seq.mean(0).flatten(2).mean(2))


class TinySNN(nn.Module):
    """conv(1->4) norm LIF -> conv(4->4, stride 2) norm LIF -> integrating head (3 classes)."""

    def __init__(self, timesteps: int = 4, norm: str = "bn", mpbn: str | None = None,
                 size: int = 6) -> None:
        super().__init__()
        self.input_shape = (1, size, size)
        self.timesteps = timesteps
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.norm1 = create_norm(norm, 4, timesteps=timesteps)
        self.lif1 = LIF(membrane_norm=mpbn, num_features=4, feature_shape=(4, size, size))
        self.conv2 = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.norm2 = create_norm(norm, 4, timesteps=timesteps)
        half = (size + 1) // 2
        self.lif2 = LIF(membrane_norm=mpbn, num_features=4, feature_shape=(4, half, half))
        self.head = IntegratingHead(nn.Linear(4, 3))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4:  # static: direct encoding, the same current at every step
            y = self.conv1(x).unsqueeze(0).expand(self.timesteps, -1, -1, -1, -1)
        else:
            y = self.conv1(x.flatten(0, 1)).unflatten(0, x.shape[:2])
        s = self.lif1(self.norm1(y))
        y = self.conv2(s.flatten(0, 1)).unflatten(0, s.shape[:2])
        s = self.lif2(self.norm2(y))
        return self.head(s)


def make_model(seed: int = 0, **kwargs: object) -> TinySNN:
    torch.manual_seed(seed)
    model = TinySNN(**kwargs)
    # Larger weights so the tiny network actually spikes.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(3.0)
    return model.eval()


@pytest.fixture
def tiny_model() -> TinySNN:
    return make_model()


@pytest.fixture
def tiny_data() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(24, 1, 6, 6, generator=g), torch.randint(0, 3, (24,), generator=g)


@pytest.fixture
def make_tiny():
    """``make_tiny(seed=0, timesteps=4, norm="bn", mpbn=None)`` builds a fresh stand-in."""
    return make_model
