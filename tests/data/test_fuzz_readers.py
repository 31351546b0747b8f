"""Fuzz the readers with a fixed seed: a few hundred malformed inputs made from small valid
files (truncations, bit flips, wrong headers, huge declared sizes, wrong types).

The inputs are byte-reproducible (archives and gzip members carry no times), so a case that
fails here fails on every machine. Every case must end in a correct load or a one-line error
of a documented type (ValueError, FileNotFoundError, CheckpointError), never another
exception, a hang (a per-case alarm), a large allocation (peak RSS over the whole test) or a
file written anywhere (the tmp tree is compared before and after every case). Failures are
collected and reported together.
"""

from __future__ import annotations

import gzip
import io
import pickle
import random
import resource
import shutil
import signal
import struct
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from data.writers import (
    aedat31_packet,
    tar_folder,
    write_aedat,
    write_aedat31,
    write_bs2,
    write_cifar_folder,
    write_mnist,
)
from mpbn.data import cifar, mnist
from mpbn.data.events import read_aedat2, read_aedat31, read_nmnist
from mpbn.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

SEED = 15
CASE_SECONDS = 10
#: Peak-RSS growth allowed over the whole test (ru_maxrss is in KiB on Linux).
MAX_RSS_GROWTH_KIB = 500 * 1024
ALLOWED = (ValueError, FileNotFoundError, CheckpointError)


class CaseTimeout(BaseException):
    """Raised by the alarm; a BaseException so no reader's ``except Exception`` eats it."""


def _mutations(blob: bytes, rng: random.Random, count: int) -> Iterator[tuple[str, bytes]]:
    """``count`` malformed variants of ``blob``, drawn from a few kinds."""
    for index in range(count):
        kind = ("truncate", "flip", "header", "huge", "zero", "append")[index % 6]
        data = bytearray(blob)
        if kind == "truncate":
            data = data[: rng.randrange(len(data))]
        elif kind == "flip":
            for _ in range(rng.randint(1, 4)):
                bit = rng.randrange(8 * len(data))
                data[bit // 8] ^= 1 << (bit % 8)
        elif kind == "header":
            for _ in range(rng.randint(1, 6)):
                data[rng.randrange(min(64, len(data)))] = rng.randrange(256)
        elif kind == "huge":  # a size field declaring gigabytes, big- or little-endian
            value = rng.choice([0xFFFFFFFF, 0x7FFFFFFF, 0x40000000, 0x80000000])
            at = rng.randrange(max(1, min(96, len(data) - 4)))
            data[at: at + 4] = struct.pack(rng.choice([">I", "<I"]), value)
        elif kind == "zero":
            start = rng.randrange(len(data))
            data[start: start + rng.randint(1, 512)] = bytes(min(512, len(data) - start))
        else:
            data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))
        yield f"{kind}#{index}", bytes(data)


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


class Fuzzer:
    """Runs cases, each under an alarm and a file-tree comparison; collects what went wrong."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.failures: list[str] = []
        self.cases = 0
        self.rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def case(self, name: str, load: Callable[[], object], names: str) -> None:
        """Run ``load``; an error must be one line naming the file ``names``."""
        self.cases += 1
        before = _snapshot(self.tmp_path)

        def expire(signum, frame):
            raise CaseTimeout

        previous = signal.signal(signal.SIGALRM, expire)
        signal.alarm(CASE_SECONDS)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # checksum mismatches warn: expected here
                load()
        except ALLOWED as error:
            message = str(error).strip()
            if not message or "\n" in message or names not in message:
                self.failures.append(f"{name}: not one line naming {names}: "
                                     f"{type(error).__name__}: {message[:300]!r}")
        except CaseTimeout:
            self.failures.append(f"{name}: no answer within {CASE_SECONDS} s")
        except Exception as error:  # noqa: BLE001 - any other type is what this test finds
            self.failures.append(f"{name}: {type(error).__name__}: {str(error)[:300]}")
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
        after = _snapshot(self.tmp_path)
        if after != before:
            changed = sorted(set(after.items()) ^ set(before.items()))
            self.failures.append(f"{name}: files written or changed: {changed[:5]}")
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.rss_start
        if grown > MAX_RSS_GROWTH_KIB:
            self.failures.append(f"{name}: peak memory grew by {grown // 1024} MiB")
            self.rss_start += grown  # report each jump once


def _cifar_wrong_types() -> list[tuple[str, bytes]]:
    rows = np.zeros((4, 3072), np.uint8)
    entries = {
        "list": [1, 2, 3],
        "str data": {b"data": "pixels", b"labels": [0] * 4},
        "float data": {b"data": rows.astype(np.float32), b"labels": [0] * 4},
        "short rows": {b"data": rows[:, :3071], b"labels": [0] * 4},
        "3-d data": {b"data": rows.reshape(4, 3, 1024), b"labels": [0] * 4},
        "few labels": {b"data": rows, b"labels": [0] * 3},
        "label 10": {b"data": rows, b"labels": [0, 1, 2, 10]},
        "negative label": {b"data": rows, b"labels": [0, 1, 2, -1]},
        "str labels": {b"data": rows, b"labels": ["a", "b", "c", "d"]},
        "nested labels": {b"data": rows, b"labels": [[0, 1]] * 4},
        "dict labels": {b"data": rows, b"labels": {0: 1}},
        "huge label": {b"data": rows, b"labels": [2 ** 70] * 4},
        "no labels": {b"data": rows},
        "int keys": {0: rows, 1: [0] * 4},
        "none": None,
    }
    return [(name, pickle.dumps(entry, protocol=2)) for name, entry in entries.items()]


def _jpeg(size: tuple[int, int] = (24, 20)) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def _jpeg_with_size(blob: bytes, width: int, height: int) -> bytes:
    """``blob`` with its SOF0 frame header declaring ``width`` x ``height``."""
    at = blob.index(b"\xff\xc0")
    data = bytearray(blob)
    data[at + 5: at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _checkpoint_wrong_types(tmp: Path) -> list[tuple[str, bytes]]:
    out = []
    for name, payload in {
        "list": [1, 2],
        "tensor": torch.zeros(3),
        "no model": {"config": "{}"},
        "config not a string": {"model": {}, "config": 3},
        "config not json": {"model": {}, "config": "{not json"},
        "format 2 without digest": {"format_version": 2, "model": {}, "config": "{}"},
        "digest of another kind": {"format_version": 2, "model": {}, "config": "{}",
                                   "digest": {"algorithm": "md5", "tensors": {}}},
        "digest a string": {"format_version": 2, "model": {}, "config": "{}",
                            "digest": "abc"},
        "digest tensors a list": {"format_version": 2, "model": {}, "config": "{}",
                                  "digest": {"algorithm": "blake2b-128", "tensors": [1]}},
    }.items():
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        out.append((name, buffer.getvalue()))
    return out


def test_readers_survive_malformed_inputs(tmp_path):
    pytest.importorskip("PIL")
    from mpbn.data.folders import FolderTransform, ImageFolderDataset

    rng = random.Random(SEED)
    fuzz = Fuzzer(tmp_path)
    valid = tmp_path / "valid"  # the originals, read only by this test
    case_root = tmp_path / "case"

    def fresh_root() -> Path:
        shutil.rmtree(case_root, ignore_errors=True)
        case_root.mkdir()
        return case_root

    # CIFAR-10: a folder of python batches (one mutated per case) and the .tar.gz of it.
    write_cifar_folder(valid / "cifar-10-batches-py", per_file=4)
    batches = sorted((valid / "cifar-10-batches-py").iterdir())
    good_batch = batches[0].read_bytes()
    cifar_cases = list(_mutations(good_batch, rng, 42)) + _cifar_wrong_types()
    for label, blob in cifar_cases:
        root = fresh_root()
        shutil.copytree(valid / "cifar-10-batches-py", root / "cifar-10-batches-py")
        (root / "cifar-10-batches-py" / rng.choice(batches).name).write_bytes(blob)
        fuzz.case(f"cifar folder {label}", lambda root=root: cifar.load_cifar("cifar10", root),
                  names="cifar-10-batches-py")
    tar_folder(valid / "cifar-10-batches-py", valid / "cifar-10-python.tar.gz")
    archive = (valid / "cifar-10-python.tar.gz").read_bytes()
    inner = gzip.decompress(archive)
    archive_cases = list(_mutations(archive, rng, 24))
    archive_cases += [(f"tar {name}", gzip.compress(blob, mtime=0)) for name, blob in
                      _mutations(inner, rng, 24)]
    for label, blob in archive_cases:
        root = fresh_root()
        (root / "cifar-10-python.tar.gz").write_bytes(blob)
        fuzz.case(f"cifar archive {label}", lambda root=root: cifar.load_cifar("cifar10", root),
                  names="cifar-10-python.tar.gz")

    # Event files: AEDAT 2.0, AEDAT 3.1, N-MNIST.
    events = np.random.default_rng(1)
    x, y = events.integers(0, 34, 60), events.integers(0, 34, 60)
    p, t = events.integers(0, 2, 60), np.sort(events.integers(0, 1 << 20, 60))
    write_aedat(valid / "a.aedat", x, y, p, t)
    write_aedat31(valid / "b.aedat", [aedat31_packet(x[:30], y[:30], p[:30], t[:30]),
                                      aedat31_packet([0], [0], [0], [t[30]], event_type=0),
                                      aedat31_packet(x[30:], y[30:], p[30:], t[30:])])
    write_bs2(valid / "c.bin", x, y, p, t)
    headers = [b"", b"#!AER-DAT3.1\r\n", b"#!AER-DAT2.0", b"#" * 5000, b"#!AER-DAT9.9\r\n#x\r\n",
               b"#!AER-DAT3.1\r\n#!END-HEADER\r\n"]
    for reader, name, count in ((read_aedat2, "a.aedat", 40), (read_aedat31, "b.aedat", 48),
                                (read_nmnist, "c.bin", 36)):
        good = (valid / name).read_bytes()
        cases = list(_mutations(good, rng, count)) + [
            (f"header {i}", head + good[len(good) // 2:]) for i, head in enumerate(headers)]
        for label, blob in cases:
            path = fresh_root() / name
            path.write_bytes(blob)
            fuzz.case(f"{reader.__name__} {label}", lambda path=path, reader=reader: reader(path),
                      names=str(path))
    path = fresh_root() / "huge.aedat"  # a packet declaring 2^31 events of 2^31 bytes each
    write_aedat31(path, [struct.pack("<hhiiiiii", 1, 1, 0x7FFFFFFF, 4, 0, 0x7FFFFFFF,
                                   0x7FFFFFFF, 1) + bytes(64)])
    fuzz.case("read_aedat31 huge packet", lambda path=path: read_aedat31(path), names=str(path))

    # MNIST IDX files, gzipped and plain: one of the four mutated per case.
    for compress in (True, False):
        source = valid / f"mnist-{compress}"
        write_mnist(source, n_train=12, n_test=8)
        if not compress:
            for gz in sorted(source.glob("*.gz")):
                gz.with_suffix("").write_bytes(gzip.decompress(gz.read_bytes()))
                gz.unlink()
        files = sorted(source.iterdir())
        plain_images = gzip.decompress(files[0].read_bytes()) if compress else \
            files[0].read_bytes()
        cases = list(_mutations(files[0].read_bytes(), rng, 30))
        huge = bytearray(plain_images)
        huge[4:8] = struct.pack(">I", 0xFFFFFFFF)
        huge_blob = gzip.compress(bytes(huge), mtime=0) if compress else bytes(huge)
        cases += [("declares 4G images", huge_blob),
                  ("255 dims", bytes([0, 0, 8, 255]) + bytes(64)),
                  ("float type", bytes([0, 0, 0x0D, 1, 0, 0, 0, 1, 0, 0, 0, 0]))]
        for label, blob in cases:
            root = fresh_root()
            for file in files:
                shutil.copy(file, root / file.name)
            (root / rng.choice(files).name).write_bytes(blob)
            fuzz.case(f"mnist gz={compress} {label}", lambda root=root: mnist.load_mnist(root),
                      names=str(root))

    # An image folder sample: a corrupt or lying JPEG.
    jpeg = _jpeg()
    transforms = (FolderTransform(size=16, train=True, resize=18),
                  FolderTransform(size=16, train=False, resize=18))
    cases = list(_mutations(jpeg, rng, 30)) + [
        ("declares 65500x65500", _jpeg_with_size(jpeg, 65500, 65500)),
        ("declares 12000x12000", _jpeg_with_size(jpeg, 12000, 12000)),
        ("declares 0x0", _jpeg_with_size(jpeg, 0, 0)),
        ("png named jpeg", b"\x89PNG\r\n\x1a\n" + bytes(40)),
        ("empty", b"")]
    for index, (label, blob) in enumerate(cases):
        path = fresh_root() / "n01440764_1.JPEG"
        path.write_bytes(blob)
        dataset = ImageFolderDataset([(path, 0)], transforms[index % 2])
        fuzz.case(f"image {label}", lambda dataset=dataset, index=index: dataset[(0, index)],
                  names=str(path))

    # Training checkpoints: mutated bytes of a real one, and well-formed files of wrong types.
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    save_checkpoint(valid / "last.pt", {"model": model.state_dict(),
                                        "optimizer": optimizer.state_dict(),
                                        "config": {"name": "fuzz"}, "epoch": 1})
    good = (valid / "last.pt").read_bytes()
    assert load_checkpoint(valid / "last.pt")["epoch"] == 1
    for label, blob in list(_mutations(good, rng, 48)) + _checkpoint_wrong_types(tmp_path):
        path = fresh_root() / "last.pt"
        path.write_bytes(blob)
        fuzz.case(f"checkpoint {label}", lambda path=path: load_checkpoint(path),
                  names=str(path))

    assert fuzz.cases >= 300
    assert not fuzz.failures, (f"{len(fuzz.failures)} of {fuzz.cases} cases failed:\n"
                               + "\n".join(fuzz.failures))
