"""CIFAR10-DVS, N-MNIST and DVS128 Gesture: event files -> cached frames -> :class:`DeviceLoader`.

Frames are computed once per ``(T, size)`` and cached as one ``.npy`` per sample, each written
under a temporary name and renamed into place, so an interrupted build never leaves a partial
cache file. The cache lives in ``root/.mpbn_cache`` (or, when root is read-only, under
``~/.cache/mpbn/frames``). A sample is a whole file (CIFAR10-DVS, N-MNIST) or a labelled time
window of a long recording (DVS128 Gesture); a recording is read once for all its windows.
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
    Events,
    events_to_frames,
    read_aedat2,
    read_aedat31,
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
# Bump when the frame computation changes so stale caches are not reused (2: SpikingJelly's
# frame split and CIFAR10-DVS orientation).
CACHE_VERSION = 2
SPLITS = {
    "9to1": "9to1-per-class",
    "first100": "first100-per-class-test",
}


@dataclass(frozen=True)
class EventSample:
    """One sample: an event file, its label and, for samples cut from a long recording, the
    time window ``(start, end)`` in microseconds (events with ``start <= t < end``)."""

    path: Path
    label: int
    window: tuple[int, int] | None = None


def read_cifar10_dvs(path: str | Path) -> Events:
    """A CIFAR10-DVS recording in the image orientation and polarity order of SpikingJelly's
    ``CIFAR10DVS`` (``load_origin_data``: ``x = 127 - y_raw``, ``y = 127 - x_raw``,
    ``p = 1 - p_raw``), the loader most SNN training code uses for this dataset.

    :func:`mpbn.data.events.read_aedat2` keeps the AEDAT addresses as stored, whose axes depend
    on how the sensor was mounted (of the real DVS128 recordings drawn by
    ``scripts/check_event_readers.py``, some stand upright as stored, others only after this
    turn). The frames follow the dataset's reference loader, so the width axis that the
    training flip mirrors is the one its users' flip mirrors.
    """
    raw = read_aedat2(path)
    side = DVS128_SENSOR[0] - 1
    return Events(x=side - raw.y, y=side - raw.x, polarity=1 - raw.polarity,
                  timestamp=raw.timestamp)


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
    if sample.window is not None:
        relative += f"-t{sample.window[0]}-{sample.window[1]}"
    info = sample.path.stat()
    return f"{relative}-{info.st_size}-{info.st_mtime_ns}.npy"


def _in_window(events: Events, window: tuple[int, int] | None) -> Events:
    if window is None:
        return events
    keep = (events.timestamp >= window[0]) & (events.timestamp < window[1])
    return Events(events.x[keep], events.y[keep], events.polarity[keep], events.timestamp[keep])


def _build_one(
    job: tuple[Path, list[tuple[tuple[int, int] | None, Path]]],
    reader: Callable,
    timesteps: int,
    sensor: tuple[int, int],
    size: tuple[int, int],
    dtype: str,
) -> None:
    """Frames of every pending sample of one source file: ``job`` is ``(source, [(window,
    target), ...])``; the file is read once."""
    source, pending = job
    events = reader(source)
    if len(events) and (events.x.max() >= sensor[1] or events.y.max() >= sensor[0]):
        # A coordinate past the sensor would be counted in another pixel's bin, silently.
        raise ValueError(f"{source}: event coordinates up to ({events.x.max()}, "
                         f"{events.y.max()}) lie outside the {sensor[1]}x{sensor[0]} sensor")
    for window, target in pending:
        frames = events_to_frames(_in_window(events, window), timesteps, sensor)
        frames = resize_frames(frames, size)
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
    pending: dict[Path, list] = {}
    for sample, target in zip(samples, targets, strict=True):
        if not target.exists():
            pending.setdefault(sample.path, []).append((sample.window, target))
    jobs = list(pending.items())
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
        request, train, test, reader=read_cifar10_dvs, sensor=DVS128_SENSOR,
        size=CIFAR10_DVS_SIZE,
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


# DVS128 Gesture (Amir et al., CVPR 2017): 122 AEDAT 3.1 recordings of 29 users under several
# lightings, each cut into labelled gestures by its ``<recording>_labels.csv``; the release's
# ``trials_to_train.txt`` / ``trials_to_test.txt`` name the recordings of each split (users
# 1-23 train, 24-29 test: 1,176 / 288 samples, one per row of the label files).
DVS128_GESTURE_CLASSES = (
    "hand_clapping", "right_hand_wave", "left_hand_wave", "right_arm_clockwise",
    "right_arm_counter_clockwise", "left_arm_clockwise", "left_arm_counter_clockwise",
    "arm_roll", "air_drums", "air_guitar", "other_gestures",
)  # fmt: skip
#: Split name -> frame size. All use the official trials split; they differ in the size the
#: 128x128 sensor frames are area-averaged to (2x2 blocks for 64, none for 128).
GESTURE_SPLITS = {"official-64": (64, 64), "official-128": (128, 128), "official-48": (48, 48)}
GESTURE_TRIALS = ("trials_to_train.txt", "trials_to_test.txt")


def find_dvs128_gesture(root: Path) -> Path:
    """The folder holding the trials files: ``root/DvsGesture`` (the release's layout after
    ``tar xzf DvsGesture.tar.gz``) or ``root`` itself.

    Raises:
        FileNotFoundError: When neither holds ``trials_to_train.txt``.
    """
    for folder in (root / "DvsGesture", root):
        if (folder / GESTURE_TRIALS[0]).is_file():
            return folder
    packed = (root / "DvsGesture.tar.gz").is_file()
    hint = "; extract the archive first: tar xzf DvsGesture.tar.gz" if packed else ""
    raise FileNotFoundError(
        f"{root}: expected DVS128 Gesture's DvsGesture/ folder with trials_to_train.txt, "
        f"trials_to_test.txt, user*.aedat and user*_labels.csv{hint}"
    )


def read_gesture_labels(path: Path) -> list[tuple[int, int, int]]:
    """Rows ``(label, start_us, end_us)`` of a ``*_labels.csv``, label 0..10 (the file's class
    minus one). Columns ``class, startTime_usec, endTime_usec`` (comma- or tab-separated, one
    header line).

    Raises:
        FileNotFoundError: When the file is missing.
        ValueError: ``file:line`` and what is wrong, for a malformed row.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: label file of a DVS128 Gesture recording is missing")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = [f.strip() for f in line.replace("\t", ",").split(",")]
        if not line.strip() or number == 1 and not fields[0].isdigit():
            continue
        if len(fields) < 3 or not all(f.isdigit() for f in fields[:3]):
            raise ValueError(f"{path}:{number}: expected 'class,startTime_usec,endTime_usec'")
        cls, start, end = (int(f) for f in fields[:3])
        if not 1 <= cls <= len(DVS128_GESTURE_CLASSES):
            raise ValueError(f"{path}:{number}: class {cls} outside 1..11")
        if end <= start:
            raise ValueError(f"{path}:{number}: endTime_usec {end} is not after startTime_usec "
                             f"{start}")
        rows.append((cls - 1, start, end))
    if not rows:
        raise ValueError(f"{path}: no labelled gesture in the label file")
    return rows


def _read_trials(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the DVS128 Gesture split file is missing")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise ValueError(f"{path}: lists no recording")
    return names


def list_dvs128_gesture(root: Path) -> tuple[list[EventSample], list[EventSample]]:
    """Samples of the official split: every row of each listed recording's label file, in
    trials-file order, then row order.

    Raises:
        FileNotFoundError: When the folder, a listed recording or its label file is missing.
        ValueError: When a recording is listed in both splits, or a label file is malformed.
    """
    folder = find_dvs128_gesture(root)
    splits = []
    for trials in GESTURE_TRIALS:
        samples = []
        for name in _read_trials(folder / trials):
            recording = folder / name
            if not recording.is_file():
                raise FileNotFoundError(f"{recording}: listed in {trials} but missing")
            labels = recording.with_name(f"{recording.stem}_labels.csv")
            samples += [EventSample(recording, label, (start, end))
                        for label, start, end in read_gesture_labels(labels)]
        splits.append(samples)
    both = {s.path for s in splits[0]} & {s.path for s in splits[1]}
    if both:
        raise ValueError(f"{folder}: {sorted(both)[0].name} is listed in both "
                         f"{GESTURE_TRIALS[0]} and {GESTURE_TRIALS[1]}")
    return splits[0], splits[1]


@register("dvs128-gesture")
def _build_dvs128_gesture(request: LoaderRequest):
    check_root(request.root, "DVS128 Gesture's DvsGesture/ folder")
    split = request.split or "official-64"
    if split not in GESTURE_SPLITS:
        raise ValueError(f"unknown dvs128-gesture split {split!r}; valid: "
                         f"{', '.join(GESTURE_SPLITS)}")
    if request.autoaugment:
        raise ValueError("autoaugment is defined for RGB images, not event frames")
    size = GESTURE_SPLITS[split]
    train, test = list_dvs128_gesture(request.root)
    # A random shift of 1/16 of the side (4 px at 64x64, as CIFAR10-DVS's 4 px at 48x48), shared
    # by all steps; no flip: mirrored, a right-hand wave is a left-hand wave (another class).
    spec = AugmentSpec(crop_padding=size[0] // 16, flip=False, cutout=0) \
        if request.augment else None  # fmt: skip
    return _event_loaders(
        request, train, test, reader=read_aedat31, sensor=DVS128_SENSOR, size=size, spec=spec,
        num_classes=len(DVS128_GESTURE_CLASSES),
        split=f"dvs128-gesture:official-trials, {size[0]}x{size[1]} frames",
        class_names=DVS128_GESTURE_CLASSES,
    )  # fmt: skip
