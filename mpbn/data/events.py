"""Event-camera readers (AEDAT 2.0 / jAER, AEDAT 3.1 / cAER, N-MNIST binary) and
event-to-frame integration.

The readers are hand-written numpy (a few lines each) rather than ``tonic``: tonic 1.7.0 is
pure Python and does not pull torch, but it requires librosa, scipy, h5py, importRosbag and
expelliarmus, a large install for three fixed binary layouts (see docs/DATA.md).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .download import read_regular_file

DVS128_SENSOR = (128, 128)
NMNIST_SENSOR = (34, 34)
_AEDAT_EVENT_BYTES = 8
#: Larger than any recording of these datasets (CIFAR10-DVS files are a few MB, the longest
#: DVS128 recordings a few hundred): a file past it is not an event sample, and is not read.
MAX_EVENT_FILE_BYTES = 2 << 30
_NMNIST_EVENT_BYTES = 5
# AEDAT 3.1 (libcaer's events/common.h and events/polarity.h): a packet is a 28-byte header of
# little-endian int16 eventType, eventSource, then int32 eventSize, eventTSOffset,
# eventTSOverflow, eventCapacity, eventNumber, eventValid, followed by eventCapacity events of
# eventSize bytes of which the first eventNumber are in use.
_AEDAT31_PACKET_HEADER = struct.Struct("<hhiiiiii")
_AEDAT31_POLARITY_EVENT = 1
_AEDAT31_TS_OVERFLOW_SHIFT = 31
_AEDAT31_END_HEADER = b"#!END-HEADER"


@dataclass
class Events:
    """A stream of address events, one entry per event.

    Attributes:
        x: Column, int64.
        y: Row, int64.
        polarity: 0 (OFF) or 1 (ON), int64.
        timestamp: Microseconds, int64.
    """

    x: np.ndarray
    y: np.ndarray
    polarity: np.ndarray
    timestamp: np.ndarray

    def __len__(self) -> int:
        return len(self.x)


def _skip_aedat_header(blob: bytes, source: Path) -> int:
    """Return the offset of the first event after the '#'-prefixed header lines."""
    position = 0
    while position < len(blob) and blob[position] == ord("#"):
        end = blob.find(b"\n", position)
        if end < 0:
            raise ValueError(f"{source}: AEDAT header line never ends (truncated file?)")
        line = blob[position:end].strip()
        if line.startswith(b"#!AER-DAT") and not line.startswith(b"#!AER-DAT2"):
            version = line[len(b"#!AER-DAT") :].decode("ascii", "replace")
            hint = "; read_aedat31 reads AEDAT 3.1" if version.startswith("3.1") else ""
            raise ValueError(
                f"{source}: AEDAT version {version} is not supported (expected 2.0{hint})"
            )
        position = end + 1
    return position


def read_aedat2(path: str | Path) -> Events:
    """Read an AEDAT 2.0 (jAER) file from a DVS128-class sensor, as CIFAR10-DVS ships.

    Layout: '#'-prefixed header lines, then big-endian uint32 ``(address, timestamp)`` pairs
    with ``x = (addr & 0xFE) >> 1``, ``y = (addr & 0x7F00) >> 8``, ``polarity = addr & 1``.
    Addresses with bit 15 set are jAER special (external) events and are dropped.

    Args:
        path: File to read.

    Returns:
        The polarity events, in file order.

    Raises:
        ValueError: One line naming the file when it is truncated, empty or of another version.
    """
    path = Path(path)
    blob = read_regular_file(path, "an AEDAT 2.0 event file", MAX_EVENT_FILE_BYTES)
    body = memoryview(blob)[_skip_aedat_header(blob, path) :]
    if len(body) % _AEDAT_EVENT_BYTES:
        raise ValueError(
            f"{path}: {len(body)} event bytes is not a multiple of 8 (truncated AEDAT 2.0 file?)"
        )
    pairs = np.frombuffer(body, dtype=">u4").reshape(-1, 2)
    address = pairs[:, 0].astype(np.int64)
    keep = (address & 0x8000) == 0
    if not keep.any():
        raise ValueError(f"{path}: no events in AEDAT file")
    address = address[keep]
    return Events(
        x=(address & 0xFE) >> 1,
        y=(address & 0x7F00) >> 8,
        polarity=address & 1,
        timestamp=pairs[keep, 1].astype(np.int64),
    )


def _aedat31_body_offset(blob: bytes, source: Path) -> int:
    """Check the version line and return the offset just past the '#!END-HEADER' line.

    The end line is required in 3.1 (3.0 had none): without it the first event packet could
    start with the byte '#' and be taken for a header line.
    """
    line_end = blob.find(b"\n")
    first = blob[: line_end if line_end >= 0 else 64].strip()
    if not first.startswith(b"#!AER-DAT"):
        raise ValueError(f"{source}: not an AEDAT file (no '#!AER-DAT' version line first)")
    version = first[len(b"#!AER-DAT") :][:16].decode("ascii", "replace")
    if version.startswith("2."):
        raise ValueError(
            f"{source}: AEDAT {version} file (jAER, as CIFAR10-DVS ships); read it with read_aedat2"
        )
    if version != "3.1":
        raise ValueError(f"{source}: AEDAT version {version} is not supported (expected 3.1)")
    position = 0
    while position < len(blob) and blob[position] == ord("#"):
        end = blob.find(b"\n", position)
        if end < 0:
            break
        if blob[position:end].strip() == _AEDAT31_END_HEADER:
            return end + 1
        position = end + 1
    raise ValueError(
        f"{source}: AEDAT 3.1 header has no '#!END-HEADER' line (truncated or not a 3.1 file?)"
    )


def read_aedat31(path: str | Path) -> Events:
    """Read the polarity events of an AEDAT 3.1 (cAER) file, as DVS128 Gesture ships.

    Layout (iniVation's AEDAT 3.1 description; libcaer ``events/common.h``, ``polarity.h``):
    ASCII header lines starting with '#', the first ``#!AER-DAT3.1``, the last
    ``#!END-HEADER``; then event packets, each a 28-byte little-endian header (``eventType``
    int16, ``eventSource`` int16, then int32 ``eventSize``, ``eventTSOffset``,
    ``eventTSOverflow``, ``eventCapacity``, ``eventNumber``, ``eventValid``) followed by
    ``eventCapacity * eventSize`` bytes, of which the first ``eventNumber`` events are in use.
    A polarity event (``eventType`` 1, 8 bytes) is uint32 ``data`` and int32 ``timestamp``:
    bit 0 of ``data`` is the validity mark, bit 1 the polarity (1 = ON), bits 2-16 y and bits
    17-31 x, origin in the upper left; the timestamp in microseconds is
    ``(eventTSOverflow << 31) + timestamp``. Packets of other types (special, frame, IMU)
    are skipped, and so are events whose validity bit is 0.

    Args:
        path: File to read.

    Returns:
        The valid polarity events, in file order.

    Raises:
        ValueError: One line naming the file when the header is missing its version or end
            line, the version is not 3.1 (an AEDAT 2.0 file: use :func:`read_aedat2`), a packet
            is truncated or malformed, or no valid polarity event is left.
    """
    path = Path(path)
    blob = read_regular_file(path, "an AEDAT 3.1 event file", MAX_EVENT_FILE_BYTES)
    offset = _aedat31_body_offset(blob, path)
    header_size = _AEDAT31_PACKET_HEADER.size
    words, overflows = [], []
    while offset < len(blob):
        if len(blob) - offset < header_size:
            raise ValueError(f"{path}: {len(blob) - offset} bytes after the last packet, less "
                             f"than a {header_size}-byte packet header (truncated AEDAT 3.1 file?)")
        kind, _, size, _, overflow, capacity, number, _ = _AEDAT31_PACKET_HEADER.unpack_from(
            blob, offset
        )
        if size <= 0 or capacity < 0 or not 0 <= number <= capacity or overflow < 0:
            raise ValueError(f"{path}: malformed AEDAT 3.1 packet header at byte {offset} "
                             f"(eventSize {size}, eventCapacity {capacity}, eventNumber {number})")
        start = offset + header_size
        offset = start + size * capacity
        if offset > len(blob):
            raise ValueError(f"{path}: the packet at byte {start - header_size} needs "
                             f"{size * capacity} bytes, {len(blob) - start} are left "
                             "(truncated AEDAT 3.1 file?)")
        if kind != _AEDAT31_POLARITY_EVENT or number == 0:
            continue
        if size != _AEDAT_EVENT_BYTES:
            raise ValueError(f"{path}: polarity packet at byte {start - header_size} has "
                             f"{size}-byte events (expected 8)")
        words.append(np.frombuffer(blob, dtype="<u4", count=2 * number, offset=start))
        overflows.append(np.full(number, overflow, dtype=np.int64))
    if not words:
        raise ValueError(f"{path}: no polarity events in AEDAT 3.1 file")
    pairs = np.concatenate(words).reshape(-1, 2)
    data = pairs[:, 0].astype(np.int64)
    keep = (data & 1) == 1
    if not keep.any():
        raise ValueError(f"{path}: no valid polarity events in AEDAT 3.1 file")
    data = data[keep]
    timestamp = pairs[keep, 1].view("<i4").astype(np.int64)
    return Events(
        x=(data >> 17) & 0x7FFF,
        y=(data >> 2) & 0x7FFF,
        polarity=(data >> 1) & 1,
        timestamp=(np.concatenate(overflows)[keep] << _AEDAT31_TS_OVERFLOW_SHIFT) + timestamp,
    )


def read_nmnist(path: str | Path) -> Events:
    """Read an N-MNIST binary sample (``.bin``/``.bs2``): 5 bytes per event.

    Byte 0 is x, byte 1 is y, bit 7 of byte 2 the polarity, and bits 6..0 of byte 2 with
    bytes 3 and 4 the 23-bit big-endian timestamp in microseconds; the sensor is 34x34.

    Raises:
        ValueError: One line naming the file when it is truncated, empty or out of range.
    """
    path = Path(path)
    raw = np.frombuffer(read_regular_file(path, "an N-MNIST event file", MAX_EVENT_FILE_BYTES),
                        dtype=np.uint8)
    if raw.size % _NMNIST_EVENT_BYTES:
        raise ValueError(
            f"{path}: {raw.size} bytes is not a multiple of 5 (truncated N-MNIST file?)"
        )
    if raw.size == 0:
        raise ValueError(f"{path}: no events in N-MNIST file")
    rows = raw.reshape(-1, _NMNIST_EVENT_BYTES).astype(np.int64)
    x, y = rows[:, 0], rows[:, 1]
    if x.max() >= NMNIST_SENSOR[1] or y.max() >= NMNIST_SENSOR[0]:
        raise ValueError(f"{path}: coordinates outside the 34x34 N-MNIST sensor")
    return Events(
        x=x,
        y=y,
        polarity=rows[:, 2] >> 7,
        timestamp=((rows[:, 2] & 0x7F) << 16) | (rows[:, 3] << 8) | rows[:, 4],
    )


def events_to_frames(events: Events, timesteps: int, sensor: tuple[int, int]) -> np.ndarray:
    """Integrate events into ``timesteps`` frames by event count, as SpikingJelly's
    ``split_by="number"`` does (``cal_fixed_frames_number_segment_index``).

    With ``N`` events and ``T`` frames, frame ``j < T - 1`` holds events
    ``[j * (N // T), (j + 1) * (N // T))`` and the last frame everything from
    ``(T - 1) * (N // T)`` on (the remainder too; with ``N < T`` all of them). Each frame
    counts events per polarity channel (0 = polarity 0, 1 = polarity 1) and pixel.

    Args:
        events: Events in time order.
        timesteps: Number of frames ``T``.
        sensor: ``(height, width)`` of the sensor.

    Returns:
        float32 counts ``[T, 2, height, width]``.
    """
    height, width = sensor
    count = len(events)
    per_frame = count // timesteps
    if per_frame == 0:  # fewer events than frames: all in the last, as SpikingJelly's j_r
        frame = np.full(count, timesteps - 1, dtype=np.int64)
    else:
        frame = np.minimum(np.arange(count, dtype=np.int64) // per_frame, timesteps - 1)
    flat = ((frame * 2 + events.polarity) * height + events.y) * width + events.x
    counts = np.bincount(flat, minlength=timesteps * 2 * height * width)
    return counts.reshape(timesteps, 2, height, width).astype(np.float32)


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Downsample frames ``[T, C, H, W]`` with area interpolation (mean count per block)."""
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    resized = F.interpolate(torch.from_numpy(frames), size=size, mode="area")
    return resized.numpy()
