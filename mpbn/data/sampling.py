"""Seeded, shardable epoch orders and class-stratified draws shared by all datasets.

Every random stream is derived from ``(seed, epoch[, rank])`` so that after ``set_epoch(e)`` an
epoch is replayed exactly (resume equals uninterrupted), and ranks of a distributed job agree on
the permutation while drawing independent augmentations.

This module holds the one copy of each draw: :func:`subset_indices` is the ``train_subset`` /
``test_subset`` of every dataset (through :func:`take_samples` for file lists and
:func:`mpbn.data.arrays.take_subset` for arrays), and :func:`stratified_split_mask` is the fixed
test split of a set that ships without one (digits). :func:`holdout_split` is the held-out
validation split of a training set (``data.holdout``): one fixed draw, the same for every seed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch

Sample = TypeVar("Sample")


def derive_seed(*parts: int | str) -> int:
    """Hash any parts into a 63-bit seed; stable across processes and Python versions."""
    text = "/".join(str(part) for part in parts).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") & ((1 << 63) - 1)


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    generator = torch.Generator(device=torch.device(device))
    generator.manual_seed(seed)
    return generator


def epoch_indices(
    num_samples: int,
    *,
    shuffle: bool,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    pad: bool = True,
) -> torch.Tensor:
    """Indices one rank visits in one epoch, like ``DistributedSampler``.

    The permutation depends only on ``(seed, epoch)`` so all ranks agree; rank ``r`` takes
    every ``world_size``-th index starting at ``r``. With ``pad`` the order is padded with its
    own head so every rank gets the same count (DDP needs equal step counts); without it the
    shards are disjoint and cover the set exactly (use for evaluation).

    Args:
        num_samples: Size of the dataset.
        shuffle: Draw a seeded permutation instead of the natural order.
        seed: Base seed.
        epoch: Epoch number.
        rank: This process's rank.
        world_size: Number of processes.
        pad: Pad to a multiple of ``world_size``.

    Returns:
        Int64 CPU tensor of indices.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    if shuffle:
        order = torch.randperm(num_samples, generator=make_generator(derive_seed(seed, epoch)))
    else:
        order = torch.arange(num_samples)
    if pad and world_size > 1 and num_samples % world_size:
        total = -(-num_samples // world_size) * world_size
        repeats = -(-total // max(num_samples, 1))
        order = order.repeat(repeats)[:total]
    return order[rank::world_size]


def subset_indices(
    targets: np.ndarray, size: int | None, seed: int, *, stratified: bool = True
) -> np.ndarray:
    """Deterministic subset of ``size`` samples, stratified by class when possible.

    Each class gets ``size * class_fraction`` samples (largest remainders get the rest), drawn
    by a seeded permutation; the result is sorted so the subset keeps the file order.

    Args:
        targets: Integer labels ``[N]``.
        size: Subset size, or ``None`` for all samples.
        seed: Seed of the draw.
        stratified: Keep class proportions; otherwise draw uniformly.

    Returns:
        Sorted int64 indices into ``targets``.
    """
    count = len(targets)
    if size is None or size >= count:
        return np.arange(count)
    if size <= 0:
        raise ValueError(f"subset size must be positive, got {size}")
    rng = np.random.default_rng(derive_seed("subset", seed))
    if not stratified:
        return np.sort(rng.permutation(count)[:size])
    classes, counts = np.unique(targets, return_counts=True)
    exact = counts * size / count
    quota = np.floor(exact).astype(np.int64)
    leftover = size - int(quota.sum())
    quota[np.argsort(-(exact - quota), kind="stable")[:leftover]] += 1
    chosen = [
        rng.permutation(np.flatnonzero(targets == label))[:take]
        for label, take in zip(classes, quota, strict=True)
    ]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


#: Seed of the held-out split: fixed, so that every run and every seed of every preset is
#: measured on the same held-out images (hyperparameters are compared like for like), and no
#: run's ``seed`` moves an image between the training and the held-out part.
HOLDOUT_SEED = derive_seed("holdout")


def holdout_split(targets: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Split a training set into ``(train, held_out)`` indices, ``size`` held out.

    The held-out part is a class-stratified draw (:func:`subset_indices`) with the fixed
    :data:`HOLDOUT_SEED`; the training part is every other sample. Both are sorted. Draw any
    ``train_subset`` from the training part afterwards, so it never overlaps the held-out one.

    Args:
        targets: Integer labels ``[N]`` of the whole training set.
        size: Samples to hold out, in ``[1, N - 1]``.

    Raises:
        ValueError: ``size`` leaves no training or no held-out sample.
    """
    count = len(targets)
    if not 1 <= size < count:
        raise ValueError(f"holdout must be between 1 and {count - 1} (the training set has "
                         f"{count} samples), got {size}")
    held = subset_indices(np.asarray(targets), size, HOLDOUT_SEED)
    keep = np.ones(count, dtype=bool)
    keep[held] = False
    return np.flatnonzero(keep).astype(np.int64), held


def take_samples(
    samples: Sequence[Sample], labels: Sequence[int], size: int | None, seed: int
) -> list[Sample]:
    """The :func:`subset_indices` subset of a list of samples (file paths, event files).

    Args:
        samples: One entry per sample.
        labels: The class of each entry.
        size: Subset size, or ``None`` for all samples.
        seed: Seed of the draw.

    Returns:
        The chosen samples in their original order.
    """
    index = subset_indices(np.array(labels, dtype=np.int64), size, seed)
    return [samples[i] for i in index]


def stratified_split_mask(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Mark ``round(fraction * class_count)`` seeded samples of every class (the test split).

    Args:
        labels: Integer labels ``[N]``.
        fraction: Share of each class to mark.
        seed: Seed of ``np.random.default_rng``; one permutation per class, in label order.

    Returns:
        Boolean mask ``[N]``, ``True`` for the marked samples.
    """
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        mask[rng.permutation(members)[: int(round(fraction * len(members)))]] = True
    return mask
