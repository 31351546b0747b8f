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
    """Pack ``folder`` into a ``.tar.gz`` with the folder as top-level member."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    """Write a uint8 array as an IDX file (gzipped when ``compress``)."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    blob = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(blob) if compress else blob)


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
