import pytest
import torch

from mpbn.data import create_loaders, list_datasets


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
