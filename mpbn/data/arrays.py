"""In-memory datasets: the arrays of one split, and their wrapping into device loaders.

Every dataset small enough to live on the device (digits, CIFAR, MNIST, event frames) is read
into an :class:`ArrayDataset` per split by its own module, then handed to
:func:`in_memory_loaders`, which draws the requested held-out split and subsets and builds the
:class:`~mpbn.data.loaders.DeviceLoader` objects plus the :class:`~mpbn.data.info.DatasetInfo`.
This is its own module, not part of ``loaders.py``, because it needs the registry's
:class:`~mpbn.data.registry.LoaderRequest`: ``DeviceLoader`` stays usable on bare tensors
(benchmarks, tests) without the registry, and the registry itself imports no dataset code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .augment import AugmentSpec
from .info import DatasetInfo
from .loaders import DeviceLoader
from .registry import LoaderRequest
from .sampling import holdout_split, subset_indices


@dataclass
class ArrayDataset:
    """Images ``[N, C, H, W]`` uint8 and labels ``[N]`` int64 of one split."""

    images: np.ndarray
    labels: np.ndarray


def take_subset(data: ArrayDataset, size: int | None, seed: int) -> ArrayDataset:
    """Seeded class-stratified subset (the whole set, not a copy, when ``size`` is ``None``).

    The draw is :func:`~mpbn.data.sampling.subset_indices`, the one used for file lists too.
    """
    index = subset_indices(data.labels, size, seed)
    if len(index) == len(data.labels):
        return data
    return ArrayDataset(data.images[index], data.labels[index])


def _check_split(data: ArrayDataset, part: str, name: str, num_classes: int) -> None:
    """A one-line error for an empty split or labels outside ``[0, num_classes)`` (they would
    train on nothing and exit 0, or fail much later inside the loss)."""
    if len(data.labels) == 0:
        raise ValueError(f"dataset {name!r}: the {part} split has no samples")
    if len(data.images) != len(data.labels):
        raise ValueError(f"dataset {name!r}: the {part} split has {len(data.images)} samples "
                         f"but {len(data.labels)} labels")
    low, high = int(data.labels.min()), int(data.labels.max())
    if low < 0 or high >= num_classes:
        raise ValueError(f"dataset {name!r}: {part} labels span [{low}, {high}], outside the "
                         f"{num_classes} classes [0, {num_classes - 1}]")


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images ``[N, C, H, W]`` scaled to ``[0, 1]``, rounded
    to 4 decimals."""
    scaled = images.astype(np.float64) / 255.0
    axes = (0, 2, 3)
    mean = tuple(round(float(v), 4) for v in scaled.mean(axis=axes))
    std = tuple(round(float(v), 4) for v in scaled.std(axis=axes))
    return mean, std


def in_memory_loaders(
    request: LoaderRequest,
    train: ArrayDataset,
    test: ArrayDataset,
    *,
    spec: AugmentSpec | None,
    mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None,
    layout: str,
    scale: float,
    num_classes: int,
    input_shape: tuple[int, ...],
    kind: str,
    timesteps: int | None,
    split: str,
    class_names: tuple[str, ...] | None = None,
) -> tuple:
    """Wrap in-memory splits into :class:`DeviceLoader` objects plus their info.

    Returns ``(train_loader, test_loader, info)``, and the held-out loader as a fourth item
    when ``request.holdout`` asks for one (:func:`mpbn.data.create_splits`): it is taken out of
    ``train`` first (:func:`~mpbn.data.sampling.holdout_split`), ``train_subset`` is then
    drawn from the rest.
    """
    for part, data in (("training", train), ("test", test)):
        _check_split(data, part, request.name, num_classes)
    held: ArrayDataset | None = None
    if request.holdout is not None:
        keep, held_index = holdout_split(train.labels, request.holdout)
        held = ArrayDataset(train.images[held_index], train.labels[held_index])
        train = ArrayDataset(train.images[keep], train.labels[keep])
        split = f"{split}; {len(held_index)} training samples held out"
    train = take_subset(train, request.train_subset, request.seed)
    test = take_subset(test, request.test_subset, request.seed)
    common = dict(
        device=request.device,
        mean=mean,
        std=std,
        scale=scale,
        layout=layout,
        seed=request.seed,
        rank=request.rank,
        world_size=request.world_size,
    )
    train_loader = DeviceLoader(
        torch.from_numpy(np.ascontiguousarray(train.images)),
        torch.from_numpy(train.labels),
        batch_size=request.batch_size,
        shuffle=True,
        augment=spec if request.augment else None,
        **common,
    )
    def evaluation_loader(data: ArrayDataset) -> DeviceLoader:
        return DeviceLoader(
            torch.from_numpy(np.ascontiguousarray(data.images)),
            torch.from_numpy(data.labels),
            batch_size=request.eval_batch_size,
            shuffle=False,
            augment=None,
            **common,
        )

    test_loader = evaluation_loader(test)
    info = DatasetInfo(
        name=request.name,
        num_classes=num_classes,
        input_shape=input_shape,
        mean=mean,
        std=std,
        kind=kind,
        timesteps=timesteps,
        split=split,
        num_train=len(train.labels),
        num_test=len(test.labels),
        scale=scale,
        class_names=class_names,
        num_holdout=None if held is None else len(held.labels),
    )
    if held is None:
        return train_loader, test_loader, info
    return train_loader, test_loader, info, evaluation_loader(held)
