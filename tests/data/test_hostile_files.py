"""Files that are not what their names say: no hang, no runaway allocation, one-line errors.

A FIFO named like a data file would block a plain read forever, a link to ``/dev/zero`` would
be read until memory runs out, and a few bytes of pickle can ask for gigabytes; every reader
checks first (``mpbn.data.download.require_regular_file``, ``mpbn.data.safe_pickle``).
"""

from __future__ import annotations

import gzip
import os
import pickle
import signal
from pathlib import Path

import numpy as np
import pytest

from mpbn.data import cifar, mnist
from mpbn.data.events import read_aedat2, read_aedat31, read_nmnist
from mpbn.data.safe_pickle import load_pickle


@pytest.fixture(autouse=True)
def no_hang():
    """A read that blocks (the regression this file guards against) fails instead of hanging."""
    def expire(signum, frame):
        raise TimeoutError("a reader blocked on a file that is not a regular file")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("reader", [read_aedat2, read_aedat31, read_nmnist])
def test_event_readers_refuse_a_fifo_a_device_and_a_directory(tmp_path, reader):
    fifo = tmp_path / "sample.aedat"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"is a FIFO \(named pipe\), not a regular file"):
        reader(fifo)
    zero = tmp_path / "zero.bin"
    zero.symlink_to("/dev/zero")
    with pytest.raises(ValueError, match="is a character device, not a regular file"):
        reader(zero)
    folder = tmp_path / "folder.bs2"
    folder.mkdir()
    with pytest.raises(ValueError, match="is a directory, not a regular file"):
        reader(folder)


def test_cifar_refuses_a_fifo_batch(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name, _ in cifar.CIFAR10.train_files + cifar.CIFAR10.test_files:
        os.mkfifo(folder / name)
    with pytest.raises(ValueError, match="data_batch_1 is a FIFO"):
        cifar.load_cifar("cifar10", tmp_path)


def test_cifar_refuses_a_fifo_archive(tmp_path):
    os.mkfifo(tmp_path / "cifar-10-python.tar.gz")
    with pytest.raises(ValueError, match="cifar-10-python.tar.gz is a FIFO"):
        cifar.load_cifar("cifar10", tmp_path)


@pytest.mark.parametrize("blob, what", [
    (b"\x80\x02cbuiltins\nbytearray\nJ\x00\x00\x00\x50\x85R.", r"bytearray\(1342177280\)"),
    (b"\x80\x02cbuiltins\nbytes\nJ\x00\x00\x00\x50\x85R.", r"bytes\(1342177280\)"),
    (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nJ\x00\x00\x00\x50\x85"
     b"C\x01b\x87R.", r"_reconstruct of ndarray with shape \(1342177280,\)"),
])
def test_a_tiny_pickle_cannot_ask_for_gigabytes(blob, what):
    assert len(blob) < 80
    with pytest.raises(ValueError, match=rf"evil.pkl: refusing .*{what}"):
        load_pickle(blob, "evil.pkl")


def test_real_numpy_pickles_still_load():
    batch = {"data": np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072), "labels": [3, 4]}
    for protocol in (2, 3):  # what CIFAR (2) and numpy.save-era pickles use
        loaded = load_pickle(pickle.dumps(batch, protocol=protocol), "ok.pkl")
        assert np.array_equal(loaded["data"], batch["data"]) and loaded["labels"] == [3, 4]


def test_a_gzip_that_inflates_past_any_idx_file_is_not_inflated(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist, "MAX_IDX_BYTES", 1000)
    bomb = tmp_path / "train-images-idx3-ubyte.gz"
    bomb.write_bytes(gzip.compress(bytes(10_000)))
    with pytest.raises(ValueError, match="inflates past 1,000 bytes"):
        mnist._read(Path(bomb))
    fine = tmp_path / "small.gz"
    fine.write_bytes(gzip.compress(bytes(500)))
    assert mnist._read(fine) == bytes(500)
    cut = tmp_path / "cut.gz"
    cut.write_bytes(gzip.compress(bytes(500))[:-12])
    with pytest.raises(ValueError, match="not a complete gzip file"):
        mnist._read(cut)
