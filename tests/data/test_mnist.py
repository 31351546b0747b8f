import gzip

import numpy as np
import pytest
import torch

from mpbn.data import create_loaders
from mpbn.data import mnist as mnist_module
from mpbn.data.mnist import parse_idx

from .writers import write_idx, write_mnist


def test_parse_idx_roundtrip(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a", array, compress=False)
    np.testing.assert_array_equal(parse_idx((tmp_path / "a").read_bytes(), "a"), array)


def test_truncated_idx_is_a_clear_error(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    blob = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(blob[:-100]))
    with pytest.raises(ValueError, match="truncated") as error:
        create_loaders("smnist", tmp_path)
    assert "train-images-idx3-ubyte.gz" in str(error.value)


def test_truncated_gzip_is_a_clear_error(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="t10k-labels.*gzip"):
        create_loaders("smnist", tmp_path)


def test_smnist_yields_pixel_sequences(tmp_path):
    _, _, test_images, test_labels = write_mnist(tmp_path)
    with pytest.warns(UserWarning, match="MD5"):
        train, test, info = create_loaders("smnist", tmp_path, batch_size=8)
    assert info.kind == "sequence" and info.timesteps == 784 and info.input_shape == (1,)
    x, y = next(iter(test))
    assert x.shape == (784, 8, 1) and x.dtype == torch.float32
    torch.testing.assert_close(x[:, 3, 0], torch.from_numpy(test_images[3]).flatten() / 255.0)
    assert y.tolist() == test_labels[:8].tolist()
    xt, _ = next(iter(train))
    assert xt.shape == (784, 8, 1) and 0 <= xt.min() and xt.max() <= 1


def test_smnist_rejects_other_timesteps(tmp_path):
    with pytest.raises(ValueError, match="784"):
        create_loaders("smnist", tmp_path, timesteps=28)


def test_smnist_download_via_file_urls(tmp_path, monkeypatch):
    source = tmp_path / "mirror"
    write_mnist(source)
    monkeypatch.setattr(mnist_module, "MIRROR", source.as_uri() + "/")
    monkeypatch.setattr(
        mnist_module,
        "FILES",
        {name: mnist_module.md5sum(source / f"{name}.gz") for name in mnist_module.FILES},
    )
    _, _, info = create_loaders("smnist", tmp_path / "root", download=True)
    assert info.num_train == 30 and info.num_test == 20
