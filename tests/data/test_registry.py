import pytest
import torch

from mpbn.data import DatasetInfo, create_loaders, list_datasets


def test_list_datasets_has_the_contract_names():
    names = list_datasets()
    for name in (
        "digits",
        "cifar10",
        "cifar100",
        "imagenet",
        "tiny-imagenet",
        "cifar10-dvs",
        "nmnist",
        "smnist",
    ):
        assert name in names


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="valid names: .*cifar10"):
        create_loaders("mnist-typo")


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


def test_resume_equals_uninterrupted():
    def run(epochs, loader):
        out = []
        for epoch in epochs:
            loader.set_epoch(epoch)
            out += [x for x, _ in loader]
        return out

    full = run([0, 1, 2], create_loaders("digits", seed=3)[0])
    resumed = run([2], create_loaders("digits", seed=3)[0])
    tail = full[-len(resumed) :]
    assert all(torch.equal(a, b) for a, b in zip(tail, resumed, strict=True))


def test_bad_rank():
    with pytest.raises(ValueError, match="rank"):
        create_loaders("digits", rank=2, world_size=2)
