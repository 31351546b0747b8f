import io
import pickle
import tarfile
import time
import warnings
import zlib

import numpy as np
import pytest
import torch

from mpbn.data import cifar as cifar_module
from mpbn.data import create_loaders
from mpbn.data import download as download_module
from mpbn.data.cifar import load_cifar
from mpbn.data.download import md5sum
from mpbn.data.safe_pickle import load_pickle

from .writers import tar_folder, write_cifar_folder


def _expected(written, names):
    images = np.concatenate([written[n][0] for n in names])
    labels = np.concatenate([written[n][1] for n in names])
    return images, labels


def test_folder_loads_in_official_order(cifar10_root):
    root, written = cifar10_root
    with pytest.warns(UserWarning, match="differ from the official"):
        train, test = load_cifar("cifar10", root)
    images, labels = _expected(written, [f"data_batch_{i}" for i in range(1, 6)])
    np.testing.assert_array_equal(train.images, images)
    np.testing.assert_array_equal(train.labels, labels)
    np.testing.assert_array_equal(test.images, written["test_batch"][0])


def test_checksum_mismatch_raises_when_strict(cifar10_root):
    root, _ = cifar10_root
    with pytest.raises(ValueError, match="strict_checksum"):
        load_cifar("cifar10", root, strict_checksum=True)


def test_matching_checksums_load_silently(cifar10_root, monkeypatch):
    root, _ = cifar10_root
    folder = root / "cifar-10-batches-py"
    variant = cifar_module.CIFAR10
    patched = cifar_module.CifarVariant(
        **{
            **variant.__dict__,
            "train_files": tuple((n, md5sum(folder / n)) for n, _ in variant.train_files),
            "test_files": tuple((n, md5sum(folder / n)) for n, _ in variant.test_files),
        }
    )
    monkeypatch.setitem(cifar_module.VARIANTS, "cifar10", patched)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_cifar("cifar10", root, strict_checksum=True)


def test_archive_is_read_without_extracting(tmp_path):
    written = write_cifar_folder(tmp_path / "src" / "cifar-100-python", "cifar100")
    root = tmp_path / "root"
    root.mkdir()
    tar_folder(tmp_path / "src" / "cifar-100-python", root / "cifar-100-python.tar.gz")
    with pytest.warns(UserWarning, match="MD5"):
        train, test = load_cifar("cifar100", root)
    np.testing.assert_array_equal(train.labels, written["train"][1])
    assert sorted(p.name for p in root.iterdir()) == ["cifar-100-python.tar.gz"]


def _raises_zlib_error(blob: bytes) -> bool:
    """Whether reading every member of the .tar.gz ``blob`` raises zlib.error."""
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
            for member in tar.getmembers():
                handle = tar.extractfile(member)
                if handle is not None:
                    handle.read()
    except zlib.error:
        return True
    except Exception:  # any other failure is not the case under test
        return False
    return False


def test_damaged_deflate_stream_in_archive_is_a_one_line_value_error(tmp_path):
    """A zeroed stretch inside the compressed stream makes zlib raise zlib.error (neither an
    OSError nor a TarError) while a member is read; the reader reports it as ValueError."""
    write_cifar_folder(tmp_path / "src" / "cifar-10-batches-py", per_file=4)
    tar_folder(tmp_path / "src" / "cifar-10-batches-py", tmp_path / "good.tar.gz")
    good = (tmp_path / "good.tar.gz").read_bytes()
    damaged = None
    for start in range(16, len(good) - 8, 5):
        blob = good[:start] + bytes(min(64, len(good) - start)) + good[start + 64:]
        if _raises_zlib_error(blob):
            damaged = blob
            break
    assert damaged is not None, "no zeroed window produced zlib.error; the test needs another"
    root = tmp_path / "root"
    root.mkdir()
    (root / "cifar-10-python.tar.gz").write_bytes(damaged)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the MD5 mismatch warning
        with pytest.raises(ValueError, match=r"not a readable \.tar\.gz archive \(Error -3"):
            load_cifar("cifar10", root)


def test_test_archives_are_byte_reproducible(tmp_path):
    write_cifar_folder(tmp_path / "a" / "cifar-10-batches-py", per_file=4)
    tar_folder(tmp_path / "a" / "cifar-10-batches-py", tmp_path / "one.tar.gz")
    time.sleep(1.1)  # a later mtime on the files would change a naive archive
    write_cifar_folder(tmp_path / "b" / "cifar-10-batches-py", per_file=4)
    tar_folder(tmp_path / "b" / "cifar-10-batches-py", tmp_path / "two.tar.gz")
    assert (tmp_path / "one.tar.gz").read_bytes() == (tmp_path / "two.tar.gz").read_bytes()


def test_download_verifies_md5_and_uses_file_url(tmp_path, monkeypatch):
    write_cifar_folder(tmp_path / "src" / "cifar-10-batches-py")
    archive = tmp_path / "served.tar.gz"
    tar_folder(tmp_path / "src" / "cifar-10-batches-py", archive)
    variant = cifar_module.CifarVariant(
        **{**cifar_module.CIFAR10.__dict__, "url": archive.as_uri(), "archive_md5": md5sum(archive)}
    )
    monkeypatch.setitem(cifar_module.VARIANTS, "cifar10", variant)
    root = tmp_path / "empty"
    train_loader, _, info = create_loaders("cifar10", root, download=True, batch_size=10)
    assert (root / "cifar-10-python.tar.gz").is_file()
    assert info.num_train == 100 and info.num_test == 20
    assert not [p for p in root.iterdir() if p.name.startswith(".")]


def test_download_with_wrong_md5_keeps_nothing(tmp_path, monkeypatch):
    write_cifar_folder(tmp_path / "src" / "cifar-10-batches-py")
    archive = tmp_path / "served.tar.gz"
    tar_folder(tmp_path / "src" / "cifar-10-batches-py", archive)
    variant = cifar_module.CifarVariant(
        **{**cifar_module.CIFAR10.__dict__, "url": archive.as_uri()}
    )
    monkeypatch.setitem(cifar_module.VARIANTS, "cifar10", variant)
    root = tmp_path / "empty"
    with pytest.raises(download_module.DownloadError, match="MD5"):
        load_cifar("cifar10", root, download_missing=True)
    assert list(root.iterdir()) == []


def test_unreachable_download_says_where_to_put_files(tmp_path):
    with pytest.raises(download_module.DownloadError) as error:
        download_module.download((tmp_path / "nope.tar.gz").as_uri(), tmp_path / "r", "x", None)
    # The final name, never the temporary .part file.
    target = tmp_path / "r" / "x"
    assert str(error.value).endswith(f"download it elsewhere and place it as {target}")
    assert ".part" not in str(error.value)


def test_an_offline_download_is_a_one_line_cli_error(tmp_path, monkeypatch, capsys):
    from mpbn.cli import main

    monkeypatch.setitem(cifar_module.VARIANTS, "cifar10", type(cifar_module.CIFAR10)(
        **{**cifar_module.CIFAR10.__dict__, "url": (tmp_path / "offline.tar.gz").as_uri()}))
    status = main(["train", "--set", "data.name=cifar10", "model.name=small_cnn",
                   "optim.epochs=1", "--data-root", str(tmp_path), "--download",
                   "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1, err
    assert "could not download" in err and "cifar-10-python.tar.gz" in err


def test_pickle_with_os_system_is_refused(cifar10_root):
    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    root, _ = cifar10_root
    (root / "cifar-10-batches-py" / "data_batch_1").write_bytes(pickle.dumps(Evil(), protocol=2))
    with pytest.raises(ValueError, match=r"data_batch_1: refusing to load (posix|os|nt)\.system"):
        load_cifar("cifar10", root)


def test_restricted_unpickler_reads_numpy_arrays():
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    loaded = load_pickle(pickle.dumps({"a": array, "b": [1, 2]}, protocol=2), "x")
    np.testing.assert_array_equal(loaded["a"], array)


@pytest.mark.parametrize("blob", [b"not a pickle", pickle.dumps({"data": [1, 2]}, protocol=2)])
def test_malformed_batch_is_one_line_error(cifar10_root, blob):
    root, _ = cifar10_root
    (root / "cifar-10-batches-py" / "test_batch").write_bytes(blob)
    with pytest.raises(ValueError, match="test_batch") as error:
        load_cifar("cifar10", root)
    assert "\n" not in str(error.value)


def test_missing_root_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "absent")):
        create_loaders("cifar10", tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        create_loaders("cifar10", tmp_path / "empty")


def test_cifar_loaders_end_to_end(cifar10_root):
    root, written = cifar10_root
    with pytest.warns(UserWarning):
        train, test, info = create_loaders("cifar10", root, batch_size=16, train_subset=50)
    assert info.input_shape == (3, 32, 32) and info.num_train == 50 and info.num_test == 20
    assert info.mean == (0.4914, 0.4822, 0.4465) and info.kind == "static"
    x, y = next(iter(test))
    mean = torch.tensor(info.mean).view(1, 3, 1, 1)
    std = torch.tensor(info.std).view(1, 3, 1, 1)
    raw = torch.from_numpy(written["test_batch"][0][:16]).float() / 255
    torch.testing.assert_close(x, (raw - mean) / std)
    assert y.tolist() == written["test_batch"][1][:16].tolist()
    xb, yb = next(iter(train))
    assert xb.shape == (16, 3, 32, 32) and yb.dtype == torch.int64


@pytest.mark.parametrize("cutout, expected", [(None, 16), (0, 0), (8, 8)])
def test_cutout_is_configurable(cifar10_root, cutout, expected):
    root, _ = cifar10_root
    with pytest.warns(UserWarning):
        train, _, _ = create_loaders("cifar10", root, batch_size=16, cutout=cutout)
    assert train.augment.cutout == expected
