"""Fixtures of the data tests."""

import pytest

from .writers import write_cifar_folder


@pytest.fixture
def cifar10_root(tmp_path):
    root = tmp_path / "cifar10"
    written = write_cifar_folder(root / "cifar-10-batches-py")
    return root, written
