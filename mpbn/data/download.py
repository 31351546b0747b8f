"""Dataset files on disk: the root check, reading only regular files, downloads with MD5
verification, and the checksum policy for local copies."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import urllib.error
import urllib.request
import warnings
from pathlib import Path

DEFAULT_TIMEOUT_S = 60.0


class DownloadError(RuntimeError):
    """A file could not be fetched; the message says where to place it by hand."""


def check_root(root: Path, expected: str, *, create: bool = False) -> None:
    """Raise a one-line ``FileNotFoundError`` unless ``root`` is an existing folder.

    Args:
        root: Dataset folder.
        expected: What should be in it, for the message.
        create: Create ``root`` first (a download is about to fill it).
    """
    if create:
        root.mkdir(parents=True, exist_ok=True)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist: expected {expected}")


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def require_regular_file(path: str | os.PathLike, what: str = "a data file",
                         max_bytes: int | None = None) -> int:
    """The size of ``path`` if it is a regular file (symlinks followed), else a one-line error.

    A FIFO named like a data file would block a read forever and a link to ``/dev/zero`` would
    be read until memory runs out, so every reader checks before it opens anything.

    Args:
        path: The file.
        what: What the file should be, for the message.
        max_bytes: Refuse larger files (a size no valid file of the format reaches).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: Not a regular file, or larger than ``max_bytes``.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist (expected {what})") from None
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _KINDS if test(info.st_mode)), "not a regular file")
        raise ValueError(f"{path} is {kind}, not a regular file; expected {what}")
    if max_bytes is not None and info.st_size > max_bytes:
        raise ValueError(f"{path} holds {info.st_size:,} bytes, more than any {what} "
                         f"({max_bytes:,}); not read")
    return info.st_size


def read_regular_file(path: str | os.PathLike, what: str = "a data file",
                      max_bytes: int | None = None) -> bytes:
    """The bytes of ``path`` after :func:`require_regular_file`."""
    require_regular_file(path, what, max_bytes)
    return Path(path).read_bytes()


def md5sum(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex MD5 of a regular file, read in chunks."""
    require_regular_file(path)
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_md5(path: Path, expected: str | None, *, strict: bool) -> bool:
    """Compare a local file with its published MD5.

    A mismatch is a warning by default because legitimate local copies (re-encoded, repacked)
    differ from the official files; ``strict`` turns it into an error.

    Args:
        path: File to check.
        expected: Published MD5, or ``None`` to skip.
        strict: Raise instead of warning on mismatch.

    Returns:
        ``True`` when the checksum matches or was skipped.

    Raises:
        ValueError: On mismatch with ``strict``.
    """
    if expected is None:
        return True
    actual = md5sum(path)
    if actual == expected:
        return True
    message = f"{path}: MD5 {actual} does not match the official {expected}"
    if strict:
        raise ValueError(message + " (strict_checksum=True)")
    warnings.warn(
        message + "; loading it anyway (pass strict_checksum=True to refuse)", stacklevel=3
    )
    return False


def fetch(url: str, destination: Path, timeout: float = DEFAULT_TIMEOUT_S,
          place_as: Path | None = None) -> None:
    """Copy ``url`` to ``destination`` (any scheme urllib knows, including ``file://``).

    Args:
        place_as: The file a user should put in place by hand if the download fails (the final
            name, when ``destination`` is a temporary one); default ``destination``.

    Raises:
        DownloadError: When the URL cannot be reached.
    """
    place_as = destination if place_as is None else place_as
    try:
        with (
            urllib.request.urlopen(url, timeout=timeout) as response,
            open(destination, "wb") as out,
        ):
            shutil.copyfileobj(response, out, length=1 << 20)
    except (TimeoutError, urllib.error.URLError, ConnectionError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(
            f"could not download {url} ({reason}); without network access, download it "
            f"elsewhere and place it as {place_as}"
        ) from None


def download(url: str, root: Path, filename: str, md5: str | None) -> Path:
    """Download ``url`` to ``root/filename`` unless it exists, verifying the MD5 first.

    The file is written under a temporary name and renamed only after the checksum matches,
    so an interrupted or corrupted download never masquerades as the real file, and an existing
    user file is never overwritten.

    Args:
        url: Source URL.
        root: Target folder, created if needed.
        filename: Name of the file under ``root``.
        md5: Expected MD5, or ``None`` to skip verification.

    Returns:
        Path of the downloaded (or already present) file.

    Raises:
        DownloadError: When the URL is unreachable or the checksum does not match.
    """
    root.mkdir(parents=True, exist_ok=True)
    target = root / filename
    if target.exists():
        return target
    partial = root / f".{filename}.part{os.getpid()}"
    try:
        fetch(url, partial, place_as=target)
        actual = md5sum(partial)
        if md5 is not None and actual != md5:
            raise DownloadError(f"downloaded {url} has MD5 {actual}, expected {md5}; not kept")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def report_mismatches(mismatches: list[str], *, strict: bool) -> None:
    """Warn once (or raise with ``strict``) about local files whose MD5 is not the official one.

    Args:
        mismatches: One ``"path: MD5 x, expected y"`` entry per file.
        strict: Raise ``ValueError`` instead of warning.
    """
    if not mismatches:
        return
    message = "checksum mismatch: " + "; ".join(mismatches)
    if strict:
        raise ValueError(message + " (strict_checksum=True)")
    warnings.warn(message + "; loading anyway (pass strict_checksum=True to refuse)", stacklevel=3)
