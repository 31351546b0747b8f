"""CIFAR-10/100 from the official python-version folders or archives (``"cifar10"``,
``"cifar100"``)."""

from __future__ import annotations

import hashlib
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .arrays import ArrayDataset, in_memory_loaders
from .augment import AugmentSpec
from .download import (
    check_root,
    download,
    md5sum,
    read_regular_file,
    report_mismatches,
    require_regular_file,
)
from .registry import LoaderRequest, register
from .safe_pickle import load_pickle


@dataclass(frozen=True)
class CifarVariant:
    """Where a CIFAR release lives and how to check it."""

    name: str
    folder: str
    archive: str
    url: str
    archive_md5: str
    train_files: tuple[tuple[str, str], ...]
    test_files: tuple[tuple[str, str], ...]
    label_key: str
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    class_names: tuple[str, ...] | None = None


# Per-file MD5s as torchvision lists them; the archive MD5s are the published ones.
CIFAR10 = CifarVariant(
    name="cifar10",
    folder="cifar-10-batches-py",
    archive="cifar-10-python.tar.gz",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    archive_md5="c58f30108f718f92721af3b95e74349a",
    train_files=(
        ("data_batch_1", "c99cafc152244af753f735de768cd75f"),
        ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
        ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
        ("data_batch_4", "634d18415352ddfa80567beed471001a"),
        ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
    ),
    test_files=(("test_batch", "40351d587109b95175f43aff81a1287e"),),
    label_key="labels",
    num_classes=10,
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    class_names=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck"),
)
CIFAR100 = CifarVariant(
    name="cifar100",
    folder="cifar-100-python",
    archive="cifar-100-python.tar.gz",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    archive_md5="eb9058c3a382ffc7106e4002c42a8d85",
    train_files=(("train", "16019d7e3df5f24257cddd939b257f8d"),),
    test_files=(("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),),
    label_key="fine_labels",
    num_classes=100,
    mean=(0.5071, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
    # The fine label names of the archive's ``meta`` file, in label (alphabetical) order.
    class_names=tuple("""
        apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
        butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach
        couch crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster
        house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree
        motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear
        pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket
        rose sea seal shark shrew skunk skyscraper snail snake spider squirrel streetcar
        sunflower sweet_pepper table tank telephone television tiger tractor train trout tulip
        turtle wardrobe whale willow_tree wolf woman worm
    """.split()),
)
VARIANTS = {"cifar10": CIFAR10, "cifar100": CIFAR100}


#: Far above the largest python batch (CIFAR-100's train file: about 155 MB) and archive
#: (about 170 MB): a file past these is not one of them, and is not read into memory.
MAX_BATCH_BYTES = 1 << 30
MAX_ARCHIVE_BYTES = 2 << 30


def _decode_batch(blob: bytes, source: str, variant: CifarVariant) -> ArrayDataset:
    """Turn one unpickled batch into arrays, checking the layout the format promises."""
    entry = load_pickle(blob, source)
    if not isinstance(entry, dict):
        raise ValueError(f"{source}: expected a dict batch, found {type(entry).__name__}")
    entry = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}
    data, labels = entry.get("data"), entry.get(variant.label_key)
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3 * 32 * 32
    ):
        found = getattr(data, "shape", type(data).__name__)
        raise ValueError(f"{source}: expected 'data' as uint8 [N, 3072], found {found}")
    try:
        labels = np.asarray(labels, dtype=np.int64) if labels is not None else None
    except (TypeError, ValueError, OverflowError):  # a dict, strings, ints past int64
        labels = None
    if labels is None or labels.shape != (len(data),):
        raise ValueError(f"{source}: expected '{variant.label_key}' with {len(data)} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= variant.num_classes):
        raise ValueError(f"{source}: labels outside [0, {variant.num_classes})")
    return ArrayDataset(data.reshape(-1, 3, 32, 32), labels)


def _concat(parts: list[ArrayDataset]) -> ArrayDataset:
    return ArrayDataset(
        np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts])
    )


def _read_folder(folder: Path, variant: CifarVariant, strict: bool):
    mismatches = []
    splits = []
    for files in (variant.train_files, variant.test_files):
        parts = []
        for name, md5 in files:
            path = folder / name
            if not path.exists():
                raise FileNotFoundError(
                    f"{path} not found: expected the {variant.folder} layout "
                    f"({', '.join(n for n, _ in variant.train_files + variant.test_files)})"
                )
            blob = read_regular_file(path, "a CIFAR python batch", MAX_BATCH_BYTES)
            if hashlib.md5(blob, usedforsecurity=False).hexdigest() != md5:
                mismatches.append(name)
            parts.append(_decode_batch(blob, str(path), variant))
        splits.append(_concat(parts))
    if mismatches:
        report_mismatches(
            [f"{folder}: MD5 of {', '.join(mismatches)} differ from the official files"],
            strict=strict,
        )
    return splits[0], splits[1]


def _read_archive(archive: Path, variant: CifarVariant, strict: bool):
    require_regular_file(archive, f"the {variant.archive} archive", MAX_ARCHIVE_BYTES)
    actual = md5sum(archive)
    if actual != variant.archive_md5:
        report_mismatches(
            [f"{archive}: MD5 {actual}, expected {variant.archive_md5}"], strict=strict
        )
    splits = []
    try:
        with tarfile.open(archive, "r:gz") as tar:
            # Members are read straight from the archive: nothing is extracted to disk.
            for files in (variant.train_files, variant.test_files):
                parts = []
                for name, _ in files:
                    member_name = f"{variant.folder}/{name}"
                    try:
                        handle = tar.extractfile(member_name)
                    except KeyError:
                        handle = None
                    if handle is None:
                        raise ValueError(f"{archive}: member {member_name} missing")
                    parts.append(_decode_batch(handle.read(), f"{archive}:{member_name}", variant))
                splits.append(_concat(parts))
    # zlib.error is neither an OSError nor a TarError: a damaged deflate stream inside
    # the archive surfaces as one while a member is read.
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise ValueError(f"{archive}: not a readable .tar.gz archive ({error})") from None
    return splits[0], splits[1]


def load_cifar(
    name: str, root: Path, *, download_missing: bool = False, strict_checksum: bool = False
) -> tuple[ArrayDataset, ArrayDataset]:
    """Load the train and test splits of CIFAR-10 or CIFAR-100.

    Looks for, in order: ``root/<folder>/``, ``root`` itself holding the batch files, and
    ``root/<archive>.tar.gz`` (read without extracting). When none exists and
    ``download_missing`` is set, the archive is downloaded and verified first.

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.
        root: Dataset folder.
        download_missing: Download the official archive when nothing is found.
        strict_checksum: Refuse local files whose MD5 differs from the official one.

    Returns:
        ``(train, test)`` arrays.

    Raises:
        FileNotFoundError: Nothing usable under ``root`` and no download requested.
        ValueError: Malformed files, or a checksum mismatch with ``strict_checksum``.
    """
    variant = VARIANTS[name]
    first_file = variant.train_files[0][0]
    # exists(), not is_file(): a FIFO or folder under the expected name gets its own error.
    for folder in (root / variant.folder, root):
        if (folder / first_file).exists():
            return _read_folder(folder, variant, strict_checksum)
    archive = root / variant.archive
    if not archive.exists() and download_missing:
        download(variant.url, root, variant.archive, variant.archive_md5)
    if archive.exists():
        return _read_archive(archive, variant, strict_checksum)
    raise FileNotFoundError(
        f"{root}: expected {variant.folder}/ or {variant.archive} (`mpbn train --download`, or "
        "download=True in Python, fetches it)"
    )


@register("cifar10")
@register("cifar100")
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
        class_names=variant.class_names,
    )
