"""The bundled digits set, built by mpbn/data/digits.py."""

import torch

from mpbn.data import DatasetInfo, create_loaders


def test_digits_demo_set():
    train, test, info = create_loaders("digits", batch_size=32, seed=1)
    assert isinstance(info, DatasetInfo)
    assert (info.num_train, info.num_test, info.input_shape) == (1438, 359, (1, 8, 8))
    assert info.kind == "static" and info.timesteps is None
    labels = torch.cat([y for _, y in test])
    assert torch.bincount(labels).min() >= 35  # stratified: every digit in the test set
    x, y = next(iter(train))
    assert x.shape == (32, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    # the split does not depend on the seed
    _, test2, _ = create_loaders("digits", seed=5)
    assert torch.equal(torch.cat([y for _, y in test2]), labels)


def test_digits_statistics_are_normalized():
    _, test, info = create_loaders("digits", batch_size=2000)
    x, _ = next(iter(test))
    assert abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1) < 0.05


def test_digits_subset_and_eval_batch_size():
    train, test, info = create_loaders(
        "digits", batch_size=10, train_subset=100, test_subset=30, eval_batch_size=7
    )
    assert info.num_train == 100 and info.num_test == 30
    assert len(train) == 10 and len(test) == 5
