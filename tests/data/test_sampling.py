"""Seeded class-stratified draws: the one subset rule, for arrays and file lists alike."""

import numpy as np
import pytest
import torch

from mpbn.data.arrays import ArrayDataset, take_subset
from mpbn.data.sampling import stratified_split_mask, subset_indices, take_samples


def test_stratified_subset_keeps_proportions_and_is_seeded():
    labels = torch.arange(1000).remainder(4).numpy()
    labels[:400] = 0
    index = subset_indices(labels, 100, seed=3)
    assert len(index) == 100 and len(set(index.tolist())) == 100
    counts = torch.bincount(torch.from_numpy(labels[index]), minlength=4).tolist()
    assert counts == [55, 15, 15, 15]
    assert (index == subset_indices(labels, 100, seed=3)).all()
    assert not (index == subset_indices(labels, 100, seed=4)).all()


def test_file_lists_and_arrays_get_the_same_subset():
    labels = np.array([3, 1, 2, 0] * 15, dtype=np.int64)
    files = [f"file{i}.bin" for i in range(len(labels))]
    images = np.arange(len(labels), dtype=np.uint8).reshape(-1, 1, 1, 1)
    chosen = take_samples(files, labels.tolist(), 20, seed=7)
    subset = take_subset(ArrayDataset(images, labels), 20, seed=7)
    assert chosen == [f"file{i}.bin" for i in subset.images.ravel().tolist()]
    assert subset.labels.tolist() == labels[subset.images.ravel()].tolist()
    # 60 samples, 15 per class: a 20-subset keeps 5 of each, in file order.
    assert np.bincount(subset.labels).tolist() == [5, 5, 5, 5]
    assert subset.images.ravel().tolist() == sorted(subset.images.ravel().tolist())


def test_whole_set_is_returned_uncopied():
    data = ArrayDataset(np.zeros((6, 1, 2, 2), np.uint8), np.arange(6) % 2)
    assert take_subset(data, None, seed=0) is data
    assert take_subset(data, 6, seed=0) is data
    assert take_samples(list("abcdef"), [0, 1] * 3, None, seed=0) == list("abcdef")


def test_subset_size_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        take_samples(list("ab"), [0, 1], 0, seed=0)


def test_stratified_split_mask_takes_the_rounded_fraction_of_every_class():
    labels = np.array([0] * 10 + [1] * 7 + [2] * 3)
    mask = stratified_split_mask(labels, 0.2, seed=0)
    # round(0.2 * 10) = 2, round(0.2 * 7) = round(1.4) = 1, round(0.2 * 3) = round(0.6) = 1.
    assert [int(mask[labels == c].sum()) for c in (0, 1, 2)] == [2, 1, 1]
    assert torch.equal(
        torch.from_numpy(mask), torch.from_numpy(stratified_split_mask(labels, 0.2, seed=0))
    )
    assert not np.array_equal(mask, stratified_split_mask(labels, 0.2, seed=1))
