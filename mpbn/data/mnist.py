"""MNIST IDX files (plain or gzipped), the source of Sequential MNIST (``"smnist"``)."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from .arrays import ArrayDataset, in_memory_loaders
from .download import check_root, download, md5sum, read_regular_file, report_mismatches
from .registry import LoaderRequest, register

MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
# Published MD5s of the gzipped files (as torchvision lists them).
FILES = {
    "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
}
_UBYTE = 0x08


def parse_idx(blob: bytes, source: str) -> np.ndarray:
    """Parse an IDX file of unsigned bytes.

    Format: 2 zero bytes, a type byte (0x08 = ubyte), a dimension count ``d``, ``d`` big-endian
    uint32 sizes, then the data in C order.

    Args:
        blob: Whole file content (decompressed).
        source: File name for error messages.

    Returns:
        uint8 array of the declared shape.

    Raises:
        ValueError: One line naming ``source`` when the header or the length is wrong.
    """
    if len(blob) < 4 or blob[0] != 0 or blob[1] != 0 or blob[2] != _UBYTE or blob[3] == 0:
        raise ValueError(f"{source}: not an IDX ubyte file (bad magic {blob[:4].hex()})")
    ndim = blob[3]
    header = 4 + 4 * ndim
    if len(blob) < header:
        raise ValueError(f"{source}: truncated IDX header")
    shape = tuple(int(v) for v in np.frombuffer(blob, ">u4", count=ndim, offset=4))
    expected = int(np.prod(shape))
    if len(blob) - header != expected:
        raise ValueError(
            f"{source}: IDX header declares shape {shape} ({expected} bytes) but the file holds "
            f"{len(blob) - header} bytes (truncated or corrupt)"
        )
    return np.frombuffer(blob, np.uint8, offset=header).reshape(shape)


#: Far above the largest MNIST IDX file (the 60,000 training images: 47,040,016 bytes), with room
#: for larger variants: nothing larger is read or inflated.
MAX_IDX_BYTES = 1 << 30


def _read(path: Path) -> bytes:
    blob = read_regular_file(path, "an IDX file", MAX_IDX_BYTES)
    if path.suffix != ".gz":
        return blob
    try:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip framing
        data = inflater.decompress(blob, MAX_IDX_BYTES + 1)
        if len(data) > MAX_IDX_BYTES:
            raise ValueError(f"{path}: inflates past {MAX_IDX_BYTES:,} bytes, more than any "
                             "IDX file; not read")
        if not inflater.eof:
            raise EOFError("compressed data ended before the end-of-stream marker")
        return data
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(f"{path}: not a complete gzip file ({error})") from None


def _locate(root: Path, stem: str, download_missing: bool) -> Path:
    for candidate in (
        root / stem,
        root / f"{stem}.gz",
        root / "raw" / stem,
        root / "raw" / f"{stem}.gz",
    ):
        if candidate.is_file():
            return candidate
    if download_missing:
        return download(MIRROR + f"{stem}.gz", root, f"{stem}.gz", FILES[stem])
    raise FileNotFoundError(
        f"{root}: expected {stem}[.gz] (MNIST IDX files; `mpbn train --download`, or "
        "download=True in Python, fetches them)"
    )


def load_mnist(
    root: Path, *, download_missing: bool = False, strict_checksum: bool = False
) -> tuple[ArrayDataset, ArrayDataset]:
    """Load MNIST as uint8 ``[N, 1, 28, 28]`` images and int64 labels.

    Args:
        root: Folder holding the four IDX files (optionally gzipped, optionally under raw/).
        download_missing: Fetch missing files from the mirror, verifying their MD5.
        strict_checksum: Refuse gzipped local files whose MD5 is not the published one.

    Returns:
        ``(train, test)``.
    """
    splits = []
    mismatches = []
    for prefix in ("train", "t10k"):
        arrays = []
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
            stem = f"{prefix}-{kind}"
            path = _locate(root, stem, download_missing)
            if path.suffix == ".gz" and md5sum(path) != FILES[stem]:
                mismatches.append(f"{path}: MD5 differs from the published {FILES[stem]}")
            arrays.append((path, parse_idx(_read(path), str(path))))
        (image_path, images), (label_path, labels) = arrays
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"{image_path}: {images.shape} images do not match {labels.shape} labels "
                f"in {label_path}"
            )
        if labels.size and labels.max() > 9:
            raise ValueError(f"{label_path}: labels outside 0..9")
        splits.append(ArrayDataset(images[:, None].copy(), labels.astype(np.int64)))
    report_mismatches(mismatches, strict=strict_checksum)
    return splits[0], splits[1]


#: Class names in label order (the label is the digit).
MNIST_CLASSES = tuple(str(d) for d in range(10))


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
        class_names=MNIST_CLASSES,
    )
