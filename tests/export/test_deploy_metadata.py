"""Deploy folders say how to preprocess: `mpbn fold` writes the loaders' normalization, encoding,
T, dataset and class names into model.json and the NIR metadata, with normal file modes."""

from __future__ import annotations

import json
import os
import stat

import pytest

from mpbn.cli import main
from mpbn.data import create_loaders
from mpbn.data.digits import DIGIT_CLASSES
from mpbn.engine.config import TrainConfig, apply_overrides
from mpbn.engine.train import RunOptions, run


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The default demo config, one epoch on a digits subset, not folded during training."""
    cfg = apply_overrides(TrainConfig(), dict(epochs=1, train_subset=64, test_subset=32,
                                              batch_size=32, timesteps=2, fold=False))
    out = tmp_path_factory.mktemp("demo")
    run(cfg, RunOptions(out=out, quiet=True, force=True))
    return cfg, out


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_model_json_carries_the_preprocessing_the_loaders_used(demo_run, tmp_path, umask_022):
    cfg, out = demo_run
    deploy = tmp_path / "deploy"
    assert main(["fold", str(out / "seed_0" / "last.pt"), "-o", str(deploy), "--nir"]) == 0
    meta = json.loads((deploy / "model.json").read_text())
    pre = meta["preprocessing"]
    # The loader the run trained with, rebuilt: its own normalization is the expected value.
    train_loader, _, info = create_loaders(cfg.data.name, batch_size=8, timesteps=2,
                                           train_subset=64, test_subset=32)
    assert info.mean is not None
    assert pre["mean"] == list(train_loader.mean) == list(info.mean)
    assert pre["std"] == list(train_loader.std) == list(info.std)
    assert pre["pixel_scale"] == train_loader.scale == 1 / 255
    assert pre["encoding"] == cfg.model.encoding == "direct"
    assert pre["timesteps"] == cfg.model.timesteps == 2
    assert pre["dataset"] == "digits" and pre["kind"] == "static"
    assert pre["input_shape"] == [1, 8, 8]
    assert pre["class_names"] == list(DIGIT_CLASSES)
    for name in ("model.json", "model.safetensors", "model.nir"):
        assert stat.S_IMODE((deploy / name).stat().st_mode) == 0o644, name

    from mpbn.export import read_nir

    metadata = read_nir(deploy / "model.nir").metadata
    assert json.loads(metadata["preprocessing"]) == pre
    assert list(metadata["mean"]) == pre["mean"] and list(metadata["std"]) == pre["std"]
    assert metadata["dataset"] == "digits"


def test_preprocessing_of_sequence_data_says_sequence():
    from mpbn.engine.deploy import preprocessing
    from mpbn.engine.presets import get_preset

    cfg = get_preset("bntt-fc-smnist-t784")
    info = {"num_classes": 10, "input_shape": [1], "kind": "sequence", "name": "smnist",
            "scale": 1 / 255, "mean": None, "std": None, "class_names": None}
    pre = preprocessing(cfg, info)
    assert pre["encoding"] == "sequence" and pre["timesteps"] == 784
    assert pre["mean"] is None and pre["pixel_scale"] == 1 / 255


def test_old_checkpoint_data_info_gives_nulls():
    from mpbn.engine.deploy import preprocessing

    pre = preprocessing(TrainConfig(), {"num_classes": 10, "input_shape": [1, 8, 8]})
    assert pre["dataset"] == "digits" and pre["mean"] is None and pre["class_names"] is None
