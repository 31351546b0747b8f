"""The held-out validation split (``data.holdout``): fixed, disjoint, stratified."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mpbn.data import create_loaders, create_splits
from mpbn.data.arrays import ArrayDataset, in_memory_loaders
from mpbn.data.augment import AugmentSpec
from mpbn.data.registry import _request
from mpbn.data.sampling import holdout_split


def test_holdout_split_is_disjoint_complete_stratified_and_fixed():
    labels = np.repeat(np.arange(5), [100, 100, 100, 100, 200])
    keep, held = holdout_split(labels, 120)
    assert len(held) == 120 and len(keep) == 480
    assert np.intersect1d(keep, held).size == 0
    assert np.array_equal(np.sort(np.concatenate([keep, held])), np.arange(600))
    assert np.bincount(labels[held]).tolist() == [20, 20, 20, 20, 40]
    again_keep, again_held = holdout_split(labels, 120)
    assert np.array_equal(held, again_held) and np.array_equal(keep, again_keep)


@pytest.mark.parametrize("size", [0, 600, 10**6])
def test_holdout_split_refuses_sizes_that_leave_nothing(size):
    with pytest.raises(ValueError, match="holdout must be between 1 and 599"):
        holdout_split(np.zeros(600, dtype=np.int64), size)


def _indexed_request(**overrides):
    """A request whose images carry their own index (pixel value), so overlaps are visible."""
    args = dict(name="digits", root=None, batch_size=16, device="cpu", timesteps=None,
                augment=True, autoaugment=False, cutout=None, num_workers=0, seed=0,
                download=False, strict_checksum=False, split=None, rank=0, world_size=1,
                train_subset=None, test_subset=None, eval_batch_size=None)
    args.update(overrides)
    return _request(**args)


def _indexed_split(count: int, classes: int = 4) -> ArrayDataset:
    index = np.arange(count)
    images = np.broadcast_to((index % 251).astype(np.uint8)[:, None, None, None],
                             (count, 1, 2, 2)).copy()
    return ArrayDataset(images, (index % classes).astype(np.int64)), index


def _loaders(request, train, test):
    from dataclasses import replace

    return in_memory_loaders(replace(request, holdout=40), train, test,
                             spec=AugmentSpec(crop_padding=0, flip=True, cutout=0), mean=None,
                             std=None, layout="image", scale=1.0, num_classes=4,
                             input_shape=(1, 2, 2), kind="static", timesteps=None, split="toy")


def test_held_out_images_never_reach_training_and_subsets_come_from_the_rest():
    train, _ = _indexed_split(200)
    test, _ = _indexed_split(60)
    request = _indexed_request(train_subset=100, seed=3)
    train_loader, test_loader, info, held_loader = _loaders(request, train, test)
    held_values = set(held_loader.data[:, 0, 0, 0].tolist())
    train_values = set(train_loader.data[:, 0, 0, 0].tolist())
    assert len(held_values) == 40 and not held_values & train_values
    assert (info.num_train, info.num_holdout, info.num_test) == (100, 40, 60)
    assert "40 training samples held out" in info.split
    # Evaluation settings: natural order, no augmentation, the evaluation batch size.
    assert held_loader.augment is None and not held_loader.shuffle
    assert held_loader.batch_size == request.eval_batch_size
    # The held-out split ignores the run's seed; the training subset does not.
    _, _, _, other_seed = _loaders(_indexed_request(train_subset=100, seed=4), train, test)
    assert torch.equal(other_seed.data, held_loader.data)


def test_create_splits_on_digits_and_without_holdout():
    splits = create_splits("digits", holdout=100, batch_size=32)
    full_train = create_loaders("digits", batch_size=32)[2].num_train
    assert splits.info.num_holdout == 100
    assert splits.info.num_train + 100 == full_train
    assert sum(len(y) for _, y in splits.holdout) == 100
    plain = create_splits("digits", batch_size=32)
    assert plain.holdout is None and plain.info.num_train == full_train


def test_create_splits_refuses_streaming_datasets_before_reading(tmp_path):
    with pytest.raises(ValueError, match="'imagenet' cannot hold out.*cifar10.*digits"):
        create_splits("imagenet", tmp_path / "missing", holdout=10)
    with pytest.raises(ValueError, match="holdout must be a positive number"):
        create_splits("digits", holdout=0)


@pytest.mark.parametrize("labels, message", [
    (np.zeros(0, dtype=np.int64), "the training split has no samples"),
    (np.array([0, 1, 7, 2]), r"training labels span \[0, 7\], outside the 4 classes \[0, 3\]"),
    (np.array([0, -1, 2, 3]), r"training labels span \[-1, 3\]"),
])
def test_empty_splits_and_labels_out_of_range_are_refused(labels, message):
    from dataclasses import replace

    train = ArrayDataset(np.zeros((len(labels), 1, 2, 2), np.uint8), labels)
    test, _ = _indexed_split(8)
    request = replace(_indexed_request(), holdout=None)
    with pytest.raises(ValueError, match=message):
        in_memory_loaders(request, train, test, spec=None, mean=None, std=None, layout="image",
                          scale=1.0, num_classes=4, input_shape=(1, 2, 2), kind="static",
                          timesteps=None, split="toy")
