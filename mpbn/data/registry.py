"""``create_loaders``: one entry point from a dataset name to train/test loaders on a device."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .augment import AugmentSpec
from .cifar import VARIANTS, ArrayDataset, load_cifar
from .digits import load_digits_split
from .info import DatasetInfo
from .loaders import DeviceLoader
from .mnist import load_mnist
from .sampling import subset_indices


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


Builder = Callable[[LoaderRequest], tuple[object, object, DatasetInfo]]
_BUILDERS: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    """Register a builder under ``name`` (decorator)."""

    def wrap(builder: Builder) -> Builder:
        _BUILDERS[name] = builder
        return builder

    return wrap


def list_datasets() -> list[str]:
    """Names accepted by :func:`create_loaders`, sorted."""
    _load_optional_builders()
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
    _load_optional_builders()
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
    return _BUILDERS[key](request)


def check_root(root: Path, expected: str, *, create: bool = False) -> None:
    """Raise a one-line ``FileNotFoundError`` unless ``root`` is an existing folder."""
    if create:
        root.mkdir(parents=True, exist_ok=True)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist: expected {expected}")


def take_subset(data: ArrayDataset, size: int | None, seed: int) -> ArrayDataset:
    """Seeded class-stratified subset (the whole set when ``size`` is ``None``)."""
    index = subset_indices(data.labels, size, seed)
    if len(index) == len(data.labels):
        return data
    return ArrayDataset(data.images[index], data.labels[index])


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
) -> tuple[DeviceLoader, DeviceLoader, DatasetInfo]:
    """Wrap two in-memory splits into :class:`DeviceLoader` objects plus their info."""
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
    test_loader = DeviceLoader(
        torch.from_numpy(np.ascontiguousarray(test.images)),
        torch.from_numpy(test.labels),
        batch_size=request.eval_batch_size,
        shuffle=False,
        augment=None,
        **common,
    )
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
    )
    return train_loader, test_loader, info


def _channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    scaled = images.astype(np.float64) / 255.0
    axes = (0, 2, 3)
    mean = tuple(round(float(v), 4) for v in scaled.mean(axis=axes))
    std = tuple(round(float(v), 4) for v in scaled.std(axis=axes))
    return mean, std


@register("digits")
def _build_digits(request: LoaderRequest):
    train, test = load_digits_split()
    # Statistics of the fixed training split; 8x8 digits get a 1-px crop and no flip (a mirrored
    # 2 is not a 2) and no Cutout (a 16-px hole would erase the digit).
    mean, std = _channel_stats(train.images)
    spec = AugmentSpec(crop_padding=1, flip=False, cutout=0, autoaugment=request.autoaugment)
    return in_memory_loaders(
        request,
        train,
        test,
        spec=spec,
        mean=mean,
        std=std,
        layout="image",
        scale=1 / 255,
        num_classes=10,
        input_shape=(1, 8, 8),
        kind="static",
        timesteps=None,
        split="digits:stratified-80/20-seed0",
    )


def _build_cifar(request: LoaderRequest):
    variant = VARIANTS[request.name]
    check_root(request.root, f"{variant.folder}/ or {variant.archive}", create=request.download)
    train, test = load_cifar(
        request.name,
        request.root,
        download_missing=request.download,
        strict_checksum=request.strict_checksum,
    )
    cutout = 16 if request.cutout is None else request.cutout
    if cutout < 0:
        raise ValueError(f"cutout must be >= 0 pixels, got {cutout}")
    spec = AugmentSpec(crop_padding=4, flip=True, cutout=cutout, autoaugment=request.autoaugment)
    return in_memory_loaders(
        request,
        train,
        test,
        spec=spec,
        mean=variant.mean,
        std=variant.std,
        layout="image",
        scale=1 / 255,
        num_classes=variant.num_classes,
        input_shape=(3, 32, 32),
        kind="static",
        timesteps=None,
        split=f"{request.name}:official-train/test",
    )


register("cifar10")(_build_cifar)
register("cifar100")(_build_cifar)


@register("smnist")
def _build_smnist(request: LoaderRequest):
    if request.timesteps not in (None, 784):
        raise ValueError(
            f"smnist feeds one pixel per step, so timesteps must be None or 784, "
            f"got {request.timesteps}"
        )
    if request.autoaugment:
        raise ValueError("autoaugment is not defined for smnist (pixel sequences)")
    check_root(
        request.root, "MNIST IDX files (train-images-idx3-ubyte[.gz], ...)", create=request.download
    )
    train, test = load_mnist(
        request.root, download_missing=request.download, strict_checksum=request.strict_checksum
    )
    # No augmentation: shifting a pixel sequence is not the task the benchmark measures.
    return in_memory_loaders(
        request,
        train,
        test,
        spec=None,
        mean=None,
        std=None,
        layout="pixels",
        scale=1 / 255,
        num_classes=10,
        input_shape=(1,),
        kind="sequence",
        timesteps=784,
        split="smnist:official-train/test",
    )


def _load_optional_builders() -> None:
    """Import modules that register more datasets (kept lazy to keep imports light)."""
    from . import events_datasets, folders  # noqa: F401
