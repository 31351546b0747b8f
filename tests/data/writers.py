"""Writers of tiny dataset files in the real on-disk formats, shared by the data tests."""

from __future__ import annotations

import gzip
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np


def write_cifar_folder(folder: Path, variant: str = "cifar10", per_file: int = 20, seed: int = 0):
    """Write a CIFAR python-version folder with ``per_file`` random images per batch file.

    Returns:
        dict file name -> (images uint8 [N, 3, 32, 32], labels int64 [N]).
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    if variant == "cifar10":
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        key, classes = "labels", 10
    else:
        names, key, classes = ["train", "test"], "fine_labels", 100
    written = {}
    for name in names:
        images = rng.integers(0, 256, (per_file, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, classes, per_file).astype(np.int64)
        entry = {b"data": images.reshape(per_file, -1), key.encode(): labels.tolist()}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
        written[name] = (images, labels)
    return written


def tar_folder(folder: Path, archive: Path) -> None:
    """Pack ``folder`` into a ``.tar.gz`` with the folder as top-level member.

    The bytes depend only on the files' names and contents (times and owners zeroed), so a
    fuzz test that mutates the archive with a fixed seed sees the same cases on every machine.
    """
    def reproducible(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
        return info

    with open(archive, "wb") as raw:
        with gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as packed:
            with tarfile.open(fileobj=packed, mode="w") as tar:
                tar.add(folder, arcname=folder.name, filter=reproducible)


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    """Write a uint8 array as an IDX file (gzipped when ``compress``)."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    blob = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(blob, mtime=0) if compress else blob)


def write_mnist(root: Path, n_train: int = 30, n_test: int = 20, seed: int = 0):
    """Write the four MNIST IDX files; returns ``(train_images, train_labels, test_images,
    test_labels)``."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    arrays = []
    for prefix, count in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = (np.arange(count) % 10).astype(np.uint8)
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
        arrays += [images, labels]
    return tuple(arrays)


def write_aedat(path: Path, x, y, p, t, header: bool = True) -> None:
    """Write events as AEDAT 2.0 (jAER): '#' header lines, then big-endian (address, ts)."""
    x, y, p, t = (np.asarray(v, dtype=np.uint32) for v in (x, y, p, t))
    address = (y << 8) | (x << 1) | p
    body = np.stack([address, t], axis=1).astype(">u4").tobytes()
    head = b"#!AER-DAT2.0\r\n# This is a raw AE data file\r\n" if header else b""
    path.write_bytes(head + body)


def write_bs2(path: Path, x, y, p, t) -> None:
    """Write events in the N-MNIST binary layout: 5 bytes per event."""
    x, y, p, t = (np.asarray(v, dtype=np.uint32) for v in (x, y, p, t))
    out = np.zeros((len(x), 5), dtype=np.uint8)
    out[:, 0] = x
    out[:, 1] = y
    out[:, 2] = (p << 7) | ((t >> 16) & 0x7F)
    out[:, 3] = (t >> 8) & 0xFF
    out[:, 4] = t & 0xFF
    path.write_bytes(out.tobytes())


AEDAT31_HEADER = (b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n"
                  b"#Start-Time: 2017-01-01 12:00:00 (TZ+0000)\r\n")


def aedat31_packet(x, y, p, t, *, overflow: int = 0, valid=None, event_type: int = 1,
                   capacity: int | None = None, event_size: int = 8) -> bytes:
    """One AEDAT 3.1 event packet (libcaer layout): the 28-byte little-endian header, then
    polarity events ``uint32 data, int32 timestamp`` with ``data = x << 17 | y << 2 | p << 1 |
    valid``, zero-padded (invalid) up to ``capacity`` events."""
    x, y, p, t = (np.asarray(v, dtype=np.uint32) for v in (x, y, p, t))
    valid = np.ones(len(x), dtype=np.uint32) if valid is None else np.asarray(valid, np.uint32)
    capacity = len(x) if capacity is None else capacity
    # max(): a capacity below the event count (a malformed header) still writes every event.
    events = np.zeros((max(capacity, len(x)), event_size // 4), dtype="<u4")
    events[: len(x), 0] = (x << 17) | (y << 2) | (p << 1) | valid
    events[: len(x), 1] = t
    header = struct.pack("<hhiiiiii", event_type, 1, event_size, 4, overflow, capacity, len(x),
                         int(valid.sum()))
    return header + events.tobytes()


def write_aedat31(path: Path, packets: list[bytes], *, header: bytes = AEDAT31_HEADER,
                  end_header: bool = True) -> None:
    """Write an AEDAT 3.1 file: ``header`` lines, ``#!END-HEADER``, then the packets."""
    path.write_bytes(header + (b"#!END-HEADER\r\n" if end_header else b"") + b"".join(packets))


def write_dvs128_gesture(root: Path, train=("user01_fluorescent", "user02_led"),
                         test=("user24_lab",), classes=tuple(range(1, 12)), events: int = 24,
                         seed: int = 0) -> dict[str, list[tuple[int, int, int]]]:
    """Write a DVS128 Gesture release under ``root/DvsGesture``: one AEDAT 3.1 recording per
    name (two polarity packets and a special-event packet in between), its
    ``<name>_labels.csv`` with one row per class in ``classes``, and the two trials files.

    Gesture ``i`` (class ``c``) lasts ``[1000 (i + 1), 1000 (i + 1) + 800)`` us with ``events``
    events in column ``10 c + (0, 1 or 2)``; a few events between gestures belong to none.

    Returns:
        name -> its label rows ``(class, start, end)``.
    """
    rng = np.random.default_rng(seed)
    folder = root / "DvsGesture"
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in (*train, *test):
        rows, columns = [], []
        for index, cls in enumerate(classes):
            start = 1000 * (index + 1)
            rows.append((cls, start, start + 800))
            inside = np.sort(rng.integers(start, start + 800, events))
            gap = np.sort(rng.integers(start + 800, start + 1000, 3))
            columns.append((np.r_[10 * cls + rng.integers(0, 3, events), np.full(3, 127)],
                            np.r_[inside, gap]))
        x = np.concatenate([c[0] for c in columns])
        t = np.concatenate([c[1] for c in columns])
        y, p = rng.integers(0, 128, len(x)), rng.integers(0, 2, len(x))
        half = len(x) // 2
        write_aedat31(folder / f"{name}.aedat", [
            aedat31_packet(x[:half], y[:half], p[:half], t[:half]),
            aedat31_packet([0], [0], [0], [t[half]], event_type=0),  # a special event: skipped
            aedat31_packet(x[half:], y[half:], p[half:], t[half:]),
        ])
        lines = ["class,startTime_usec,endTime_usec"] + [f"{c},{s},{e}" for c, s, e in rows]
        (folder / f"{name}_labels.csv").write_text("\n".join(lines) + "\n")
        written[name] = rows
    for trials, names in (("trials_to_train.txt", train), ("trials_to_test.txt", test)):
        (folder / trials).write_text("".join(f"{n}.aedat\n" for n in names) + "\n")
    return written


def write_tiny_imagenet(root: Path, classes: int = 3, per_class: int = 5, seed: int = 0) -> None:
    """Write Tiny-ImageNet's layout (wnids.txt, train/WNID/images/, val/images/ +
    val_annotations.txt) with random-pixel 64x64 PNGs, so every crop and flip shows."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    wnids = [f"n{i:08d}" for i in range(classes)]
    (root / "val" / "images").mkdir(parents=True, exist_ok=True)
    (root / "wnids.txt").write_text("\n".join(wnids))
    lines = []
    for wnid in wnids:
        folder = root / "train" / wnid / "images"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{wnid}_{i}.png")
        pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "val" / "images" / f"val_{wnid}.png")
        lines.append(f"val_{wnid}.png\t{wnid}\t0\t0\t10\t10")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
