"""An output folder that cannot be written (`train --out`, `fold -o`): one line, exit 2."""

from __future__ import annotations

import os

import pytest

from mpbn.cli import main

TINY = ["--set", "epochs=1", "train_subset=64", "test_subset=64", "batch_size=64",
        "timesteps=2", "fold=false"]


def _one_line_error(capsys, status, path):
    err = capsys.readouterr().err.strip()
    assert status == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("mpbn: error: "), err
    assert "Traceback" not in err and str(path) in err
    return err


def _read_only_dir(tmp_path):
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o500)
    if os.access(folder, os.W_OK):  # root writes anyway
        folder.chmod(0o700)
        pytest.skip("running as root: a 0o500 folder is still writable")
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", *TINY, "--out", str(out), "--quiet"]) == 0
    return out / "seed_0/last.pt"


def test_train_out_under_a_file(tmp_path, capsys):
    (tmp_path / "afile").write_text("not a folder")
    target = tmp_path / "afile/run"
    err = _one_line_error(capsys, main(["train", *TINY, "--out", str(target)]), target)
    assert "--out" in err


def test_train_out_in_a_read_only_folder(tmp_path, capsys):
    target = _read_only_dir(tmp_path) / "run"
    try:
        _one_line_error(capsys, main(["train", *TINY, "--out", str(target)]), target)
    finally:
        target.parent.chmod(0o700)


def test_fold_out_under_a_file(tmp_path, capsys, checkpoint):
    (tmp_path / "afile").write_text("not a folder")
    target = tmp_path / "afile/folded"
    err = _one_line_error(capsys, main(["fold", str(checkpoint), "-o", str(target)]), target)
    assert "-o" in err
    assert (tmp_path / "afile").read_text() == "not a folder"


def test_fold_out_in_a_read_only_folder(tmp_path, capsys, checkpoint):
    target = _read_only_dir(tmp_path) / "folded"
    try:
        _one_line_error(capsys, main(["fold", str(checkpoint), "-o", str(target)]), target)
    finally:
        target.parent.chmod(0o700)
