"""The dataset registry: a name -> builder table behind :func:`create_loaders`.

:func:`create_loaders` is the one entry point from a dataset name to train/test loaders on a
device.

This module only registers and dispatches; it imports no dataset module. Each dataset module
(``digits.py``, ``cifar.py``, ``mnist.py``, ``folders.py``, ``events_datasets.py``) registers its
builders with :func:`register`, and :mod:`mpbn.data` imports them all, so the registry is full
whenever ``mpbn.data`` (or anything under it) has been imported.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import torch

from .info import DatasetInfo


@dataclass(frozen=True)
class LoaderRequest:
    """Every argument of :func:`create_loaders`, resolved, handed to a dataset builder."""

    name: str
    root: Path
    batch_size: int
    eval_batch_size: int
    device: torch.device
    timesteps: int | None
    augment: bool
    autoaugment: bool
    cutout: int | None
    num_workers: int
    seed: int
    download: bool
    strict_checksum: bool
    split: str | None
    rank: int
    world_size: int
    train_subset: int | None
    test_subset: int | None
    holdout: int | None = None


class DataSplits(NamedTuple):
    """The loaders of :func:`create_splits`: training, held-out (validation) and test."""

    train: object
    holdout: object | None
    test: object
    info: DatasetInfo


#: A builder returns ``(train, test, info)``, or ``(train, test, info, holdout)`` when it
#: supports :attr:`LoaderRequest.holdout` and one was asked for.
Builder = Callable[[LoaderRequest], tuple]
_BUILDERS: dict[str, Builder] = {}
_NO_HOLDOUT: set[str] = set()


def register(name: str, *, holdout: bool = True) -> Callable[[Builder], Builder]:
    """Register a builder under ``name`` (decorator); ``holdout=False``: it cannot hold out
    training samples (:func:`create_splits` then refuses before reading any file).

    The builder receives the :class:`LoaderRequest` of a :func:`create_loaders` call and returns
    ``(train_loader, test_loader, info)``; builders that can hold out part of the training set
    (:attr:`LoaderRequest.holdout`, as :func:`mpbn.data.arrays.in_memory_loaders` does) return
    ``(train_loader, test_loader, info, holdout_loader)`` when asked for one.
    """

    def wrap(builder: Builder) -> Builder:
        _BUILDERS[name] = builder
        if not holdout:
            _NO_HOLDOUT.add(name)
        return builder

    return wrap


def list_datasets() -> list[str]:
    """Names accepted by :func:`create_loaders`, sorted."""
    return sorted(_BUILDERS)


def default_root(name: str) -> Path:
    """``$MPBN_DATA/<name>``, falling back to ``~/.cache/mpbn/data/<name>``."""
    base = os.environ.get("MPBN_DATA", os.path.join("~", ".cache", "mpbn", "data"))
    return Path(base).expanduser() / name


def create_loaders(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    timesteps: int | None = None,
    augment: bool = True,
    autoaugment: bool = False,
    cutout: int | None = None,
    num_workers: int = 4,
    seed: int = 0,
    download: bool = False,
    strict_checksum: bool = False,
    split: str | None = None,
    rank: int = 0,
    world_size: int = 1,
    train_subset: int | None = None,
    test_subset: int | None = None,
    eval_batch_size: int | None = None,
) -> tuple[object, object, DatasetInfo]:
    """Build the train and test loaders of a dataset.

    Static datasets yield float32 ``[B, C, H, W]`` (augmented for training, normalized);
    sequence datasets (event frames, Sequential MNIST) yield float32 ``[T, B, ...]``. Targets
    are int64 ``[B]``. Both are already on ``device``. Call ``loader.set_epoch(e)`` before each
    epoch: order and augmentation are functions of ``(seed, epoch, rank)`` only.

    Args:
        name: One of :func:`list_datasets`.
        root: Dataset folder; defaults to :func:`default_root`. Ignored by ``"digits"``.
        batch_size: Training batch size per rank.
        device: Device the batches are produced on (in-memory sets live there entirely).
        timesteps: Number of frames ``T`` for event datasets (default 10); must be ``None``
            or 784 for ``"smnist"``; ignored by static datasets (encode them with
            :func:`~mpbn.data.direct_encode` or :func:`~mpbn.data.poisson_encode`).
        augment: Apply the dataset's training augmentation.
        autoaugment: Add the batched AutoAugment-style policy (static in-memory sets).
        cutout: Side of the Cutout hole for CIFAR (``None``: the MPBN recipe's 16; 0: none,
            as BNTT trains).
        num_workers: Decoding workers for image-folder sets, and event-file parsing processes.
        seed: Base seed of subsets, order and augmentation.
        download: Fetch missing files (CIFAR, MNIST) with MD5 verification.
        strict_checksum: Refuse local files whose MD5 is not the official one.
        split: Split name where a dataset has several (``"9to1"``/``"first100"`` for
            CIFAR10-DVS).
        rank: Rank of this process in distributed training.
        world_size: Number of processes; each rank gets a disjoint shard of every epoch.
        train_subset: Keep a seeded class-stratified subset of this many training samples.
        test_subset: Keep a seeded class-stratified subset of this many test samples.
        eval_batch_size: Test batch size; defaults to ``batch_size``.

    Returns:
        ``(train_loader, test_loader, info)``.

    Raises:
        ValueError: Unknown name or bad argument.
        FileNotFoundError: ``root`` lacks the expected files.
    """
    request = _request(name=name, root=root, batch_size=batch_size, device=device,
                       timesteps=timesteps,
                       augment=augment, autoaugment=autoaugment, cutout=cutout,
                       num_workers=num_workers, seed=seed, download=download,
                       strict_checksum=strict_checksum, split=split, rank=rank,
                       world_size=world_size, train_subset=train_subset,
                       test_subset=test_subset, eval_batch_size=eval_batch_size)
    return tuple(_BUILDERS[request.name](request)[:3])


def _request(*, name: str, root: str | os.PathLike | None, batch_size: int,
             device: torch.device | str, timesteps: int | None, augment: bool,
             autoaugment: bool, cutout: int | None, num_workers: int, seed: int,
             download: bool, strict_checksum: bool, split: str | None, rank: int,
             world_size: int, train_subset: int | None, test_subset: int | None,
             eval_batch_size: int | None) -> LoaderRequest:
    """The validated :class:`LoaderRequest` of a :func:`create_loaders` call."""
    key = name.lower()
    if key not in _BUILDERS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(list_datasets())}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    request = LoaderRequest(
        name=key,
        root=Path(root).expanduser() if root is not None else default_root(key),
        batch_size=batch_size,
        eval_batch_size=eval_batch_size or batch_size,
        device=torch.device(device),
        timesteps=timesteps,
        augment=augment,
        autoaugment=autoaugment,
        cutout=cutout,
        num_workers=num_workers,
        seed=seed,
        download=download,
        strict_checksum=strict_checksum,
        split=split,
        rank=rank,
        world_size=world_size,
        train_subset=train_subset,
        test_subset=test_subset,
    )
    return request


def create_splits(name: str, root: str | os.PathLike | None = None, *, holdout: int | None = None,
                  **kwargs) -> DataSplits:
    """Training, held-out and test loaders: :func:`create_loaders` plus a validation split.

    With ``holdout=N`` a fixed class-stratified draw of ``N`` training samples
    (:func:`mpbn.data.sampling.holdout_split`, the same for every seed) is taken out of the
    training set before any ``train_subset``, and comes back as an evaluation loader (no
    augmentation, ``eval_batch_size``): choose hyperparameters on it and keep the test set for
    the final report. ``holdout=None`` gives ``DataSplits(train, None, test, info)``.

    Args:
        name: One of :func:`list_datasets`.
        root: Dataset folder, as for :func:`create_loaders`.
        holdout: Training samples to hold out, or ``None``.
        **kwargs: Every other argument of :func:`create_loaders`.

    Raises:
        ValueError: The dataset cannot hold out samples (image-folder sets stream from disk),
            or ``holdout`` leaves no training sample.
    """
    if holdout is None:
        return DataSplits(*_swap(create_loaders(name, root, **kwargs)))
    if isinstance(holdout, bool) or not isinstance(holdout, int) or holdout < 1:
        raise ValueError(f"holdout must be a positive number of training samples or None, got "
                         f"{holdout!r}")
    # create_loaders' own defaults fill in what the caller left out (one list of defaults).
    arguments = inspect.signature(create_loaders).bind(name, root, **kwargs)
    arguments.apply_defaults()
    request = _request(**arguments.arguments)
    built = () if request.name in _NO_HOLDOUT else _BUILDERS[request.name](
        replace(request, holdout=holdout))
    if len(built) != 4:
        raise ValueError(f"dataset {name!r} cannot hold out training samples (only the in-memory "
                         f"datasets can: {', '.join(in_memory_datasets())}); use train_subset "
                         "and a split of your own")
    train, test, info, held = built
    return DataSplits(train, held, test, info)


def _swap(loaders: tuple) -> tuple:
    train, test, info = loaders
    return train, None, test, info


def in_memory_datasets() -> list[str]:
    """Names of the datasets whose builders can hold out training samples, sorted."""
    return sorted(name for name in _BUILDERS if name not in _NO_HOLDOUT)
