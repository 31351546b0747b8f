"""Fixtures of the engine tests: small configs and a synthetic CIFAR-10 folder."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from mpbn.engine.config import TrainConfig, apply_overrides


@pytest.fixture
def tiny_config() -> TrainConfig:
    """The demo run shrunk to seconds: 2 epochs on a digits subset, no folding."""
    return apply_overrides(TrainConfig(), dict(
        epochs=2, train_subset=256, test_subset=128, batch_size=64, eval_batch_size=128,
        timesteps=2, log_interval=2, fold=False))


@pytest.fixture(scope="session")
def fake_cifar10(tmp_path_factory):
    """A CIFAR-10 python-version folder with 40 random images per batch file."""
    root = tmp_path_factory.mktemp("cifar10")
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images = rng.integers(0, 256, (40, 3 * 32 * 32), dtype=np.uint8)
        labels = (np.arange(40) % 10).tolist()
        (folder / name).write_bytes(pickle.dumps({b"data": images, b"labels": labels}, 2))
    return root
