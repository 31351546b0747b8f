"""CIFAR10-DVS and N-MNIST: event files -> cached frames -> :class:`DeviceLoader`.

Frames are computed once per ``(T, size)`` and cached as one ``.npy`` per sample, each written
under a temporary name and renamed into place, so an interrupted build never leaves a partial
cache file. The cache lives in ``root/.mpbn_cache`` (or, when root is read-only, under
``~/.cache/mpbn/frames``).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from .arrays import ArrayDataset, in_memory_loaders
from .augment import AugmentSpec
from .download import check_root
from .events import (
    DVS128_SENSOR,
    NMNIST_SENSOR,
    events_to_frames,
    read_aedat2,
    read_nmnist,
    resize_frames,
)
from .registry import LoaderRequest, register
from .sampling import take_samples

CIFAR10_DVS_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
CIFAR10_DVS_SIZE = (48, 48)
DEFAULT_TIMESTEPS = 10
# Bump when the frame computation changes so stale caches are not reused.
CACHE_VERSION = 1
SPLITS = {
    "9to1": "9to1-per-class",
    "first100": "first100-per-class-test",
}


@dataclass(frozen=True)
class EventSample:
    """One event file with its label and rank within its class (file index order)."""

    path: Path
    label: int


def _file_index(path: Path) -> tuple[int, str]:
    """Sort key: the last integer in the file name (cifar10_cat_12 after cifar10_cat_2)."""
    numbers = re.findall(r"\d+", path.stem)
    return (int(numbers[-1]) if numbers else -1, path.name)


def list_cifar10_dvs(root: Path) -> list[list[Path]]:
    """Event files of each class folder, in file-index order.

    Raises:
        FileNotFoundError: When a class folder is missing or holds no ``.aedat`` files.
    """
    per_class = []
    for name in CIFAR10_DVS_CLASSES:
        folder = root / name
        files = sorted(folder.glob("*.aedat"), key=_file_index) if folder.is_dir() else []
        if not files:
            raise FileNotFoundError(
                f"{folder}: expected CIFAR10-DVS .aedat files in one folder per class "
                f"({', '.join(CIFAR10_DVS_CLASSES)})"
            )
        per_class.append(files)
    return per_class


def split_cifar10_dvs(
    per_class: list[list[Path]], split: str
) -> tuple[list[EventSample], list[EventSample]]:
    """Deterministic per-class split of CIFAR10-DVS.

    ``"9to1"``: the first 90% of every class (by file index) train, the last 10% test, the
    MPBN paper's 9k/1k split. ``"first100"``: the first 100 files of every class test, the rest
    train.
    """
    train, test = [], []
    for label, files in enumerate(per_class):
        if split == "9to1":
            cut = int(len(files) * 0.9)
            train_files, test_files = files[:cut], files[cut:]
        elif split == "first100":
            train_files, test_files = files[100:], files[:100]
        else:
            raise ValueError(f"unknown cifar10-dvs split {split!r}; valid: {', '.join(SPLITS)}")
        train += [EventSample(p, label) for p in train_files]
        test += [EventSample(p, label) for p in test_files]
    return train, test


def cache_dir(root: Path, key: str) -> Path:
    """A writable cache folder for ``key``: inside ``root`` when possible."""
    preferred = root / ".mpbn_cache" / key
    try:
        preferred.mkdir(parents=True, exist_ok=True)
        if os.access(preferred, os.W_OK):
            return preferred
    except OSError:
        pass
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    fallback = Path("~/.cache/mpbn/frames").expanduser() / digest / key
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


def _cache_name(sample: EventSample, root: Path) -> str:
    # The source's size and modification time (ns) in the name invalidate the entry when the
    # file is replaced, also by one of the same size (hashing every file on every run would
    # read the whole dataset); only a copy that keeps both size and mtime goes unnoticed.
    relative = sample.path.relative_to(root).with_suffix("").as_posix().replace("/", "__")
    info = sample.path.stat()
    return f"{relative}-{info.st_size}-{info.st_mtime_ns}.npy"


def _build_one(
    job: tuple[Path, Path],
    reader: Callable,
    timesteps: int,
    sensor: tuple[int, int],
    size: tuple[int, int],
    dtype: str,
) -> None:
    source, target = job
    frames = resize_frames(events_to_frames(reader(source), timesteps, sensor), size)
    if dtype == "uint8":
        frames = np.minimum(frames, 255)
    partial_path = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(partial_path, "wb") as handle:
            np.save(handle, frames.astype(dtype))
        os.replace(partial_path, target)
    finally:
        partial_path.unlink(missing_ok=True)


def cached_frames(
    samples: list[EventSample],
    root: Path,
    *,
    reader: Callable,
    timesteps: int,
    sensor: tuple[int, int],
    size: tuple[int, int],
    num_workers: int,
) -> np.ndarray:
    """Frames ``[N, T, 2, H, W]`` of ``samples``, computing only those not cached yet.

    Frames at the sensor resolution are integer counts and are stored as uint8 (saturating at
    255 events per pixel per frame); resized frames are averages and are stored as float16.
    """
    dtype = "uint8" if tuple(size) == tuple(sensor) else "float16"
    key = f"frames-v{CACHE_VERSION}-T{timesteps}-{size[0]}x{size[1]}-{dtype}"
    folder = cache_dir(root, key)
    targets = [folder / _cache_name(sample, root) for sample in samples]
    jobs = [(s.path, t) for s, t in zip(samples, targets, strict=True) if not t.exists()]
    build = partial(
        _build_one, reader=reader, timesteps=timesteps, sensor=sensor, size=size, dtype=dtype
    )
    if num_workers > 1 and len(jobs) > 1:
        # Threads, not processes: forking after torch has started its OpenMP pool can deadlock
        # the children, and file reads, decoding and interpolation release the GIL anyway.
        with ThreadPoolExecutor(num_workers) as pool:
            list(pool.map(build, jobs))
    else:
        for job in jobs:
            build(job)
    out = np.empty((len(samples), timesteps, 2, *size), dtype=dtype)
    for index, target in enumerate(targets):
        out[index] = np.load(target, allow_pickle=False)
    return out


def _resolve_timesteps(request: LoaderRequest) -> int:
    timesteps = DEFAULT_TIMESTEPS if request.timesteps is None else request.timesteps
    if not isinstance(timesteps, int) or timesteps < 1:
        raise ValueError(f"timesteps must be a positive int, got {timesteps!r}")
    return timesteps


def _event_loaders(request, train, test, *, reader, sensor, size, spec, num_classes, split,
                   class_names=None):
    timesteps = _resolve_timesteps(request)
    # Subsets are drawn before frames are built so reduced-scale runs read only what they use.
    train = take_samples(train, [s.label for s in train], request.train_subset, request.seed)
    test = take_samples(test, [s.label for s in test], request.test_subset, request.seed)
    arrays = [
        ArrayDataset(
            cached_frames(
                samples, request.root, reader=reader, timesteps=timesteps, sensor=sensor,
                size=size, num_workers=request.num_workers,
            ),
            np.array([s.label for s in samples], dtype=np.int64),
        )
        for samples in (train, test)
    ]  # fmt: skip
    scale = 1.0
    return in_memory_loaders(
        request, arrays[0], arrays[1], spec=spec, mean=None, std=None, layout="frames",
        scale=scale, num_classes=num_classes, input_shape=(2, *size), kind="sequence",
        timesteps=timesteps, split=split, class_names=class_names,
    )  # fmt: skip


@register("cifar10-dvs")
def _build_cifar10_dvs(request: LoaderRequest):
    check_root(request.root, "one folder of .aedat files per CIFAR-10 class")
    split = request.split or "9to1"
    if split not in SPLITS:
        raise ValueError(f"unknown cifar10-dvs split {split!r}; valid: {', '.join(SPLITS)}")
    train, test = split_cifar10_dvs(list_cifar10_dvs(request.root), split)
    # Random 4-px crop and flip of the 48x48 frames, shared by all steps of a sample.
    spec = AugmentSpec(crop_padding=4, flip=True, cutout=0) if request.augment else None
    if request.autoaugment:
        raise ValueError("autoaugment is defined for RGB images, not event frames")
    return _event_loaders(
        request, train, test, reader=read_aedat2, sensor=DVS128_SENSOR, size=CIFAR10_DVS_SIZE,
        spec=spec, num_classes=10, split=f"cifar10-dvs:{SPLITS[split]}",
        class_names=CIFAR10_DVS_CLASSES,
    )  # fmt: skip


def list_nmnist(root: Path) -> tuple[list[EventSample], list[EventSample]]:
    """N-MNIST samples from ``Train/<digit>/*.bin`` and ``Test/<digit>/*.bin`` (or ``.bs2``),
    or from a flat folder with ``labels.tsv`` (columns: file, label, split).

    Raises:
        FileNotFoundError: When neither layout is found.
    """
    table = root / "labels.tsv"
    if table.is_file():
        return _nmnist_from_table(root, table)
    splits = []
    for split in ("Train", "Test"):
        samples = []
        for digit in range(10):
            folder = root / split / str(digit)
            files = [p for p in folder.glob("*") if p.suffix in (".bin", ".bs2")] \
                if folder.is_dir() else []  # fmt: skip
            samples += [EventSample(p, digit) for p in sorted(files, key=_file_index)]
        if not samples:
            raise FileNotFoundError(
                f"{root / split}: expected N-MNIST Train/<digit>/*.bin and Test/<digit>/*.bin "
                "(or a labels.tsv with file, label, split columns)"
            )
        splits.append(samples)
    return splits[0], splits[1]


def _nmnist_from_table(root: Path, table: Path) -> tuple[list[EventSample], list[EventSample]]:
    train, test = [], []
    for number, line in enumerate(table.read_text().splitlines()):
        fields = line.strip().split("\t")
        if number == 0 and fields[:2] == ["file", "label"] or not line.strip():
            continue
        if len(fields) < 3 or not fields[1].isdigit() or fields[2] not in ("train", "test"):
            raise ValueError(f"{table}:{number + 1}: expected 'file<TAB>label<TAB>train|test'")
        sample = EventSample(root / fields[0], int(fields[1]))
        (train if fields[2] == "train" else test).append(sample)
    return train, test


@register("nmnist")
def _build_nmnist(request: LoaderRequest):
    check_root(request.root, "N-MNIST Train/ and Test/ folders")
    if request.autoaugment:
        raise ValueError("autoaugment is defined for RGB images, not event frames")
    train, test = list_nmnist(request.root)
    # A 2-px random shift; no flip (mirrored digits are other symbols).
    spec = AugmentSpec(crop_padding=2, flip=False, cutout=0) if request.augment else None
    return _event_loaders(
        request, train, test, reader=read_nmnist, sensor=NMNIST_SENSOR, size=NMNIST_SENSOR,
        spec=spec, num_classes=10, split="nmnist:official-train/test",
        class_names=tuple(str(d) for d in range(10)),
    )  # fmt: skip
