"""``run.eval_every``: which epochs are measured, and that the cadence never changes training."""

from __future__ import annotations

import json

import pytest
import torch

from mpbn.engine.checkpoint import load_checkpoint
from mpbn.engine.config import ConfigError, apply_overrides
from mpbn.engine.train import RunOptions, run


def _records(seed_dir):
    return [json.loads(line) for line in (seed_dir / "metrics.jsonl").read_text().splitlines()]


def _weights(seed_dir):
    return load_checkpoint(seed_dir / "last.pt", map_location="cpu")["model"]


def test_skipped_epochs_log_training_only_and_train_the_same_weights(tiny_config, tmp_path):
    every_epoch = apply_overrides(tiny_config, dict(epochs=3))
    run(every_epoch, RunOptions(out=tmp_path / "every", quiet=True))
    # The same run measured every second epoch, stopped after epoch 1 and resumed with the
    # test set looked at only after the last epoch (eval_every may change on resume).
    second = apply_overrides(every_epoch, dict(eval_every=2))
    run(second, RunOptions(out=tmp_path / "sparse", quiet=True, stop_after=1))
    run(apply_overrides(every_epoch, dict(eval_every=0)),
        RunOptions(out=tmp_path / "sparse", quiet=True, resume=True))

    reference, sparse = tmp_path / "every" / "seed_0", tmp_path / "sparse" / "seed_0"
    want, got = _weights(reference), _weights(sparse)
    assert want.keys() == got.keys()
    for name in want:
        assert torch.equal(want[name], got[name]), name

    full, lines = _records(reference), _records(sparse)
    assert [line["epoch"] for line in lines] == [1, 2, 3]
    assert not any(key.startswith("test_") or key == "spike_rate" for key in lines[0])
    assert not any(key.startswith("test_") for key in lines[1])  # resumed with 0: skipped
    assert lines[2]["test_acc"] == full[2]["test_acc"]  # the same final model, measured
    for mine, theirs in zip(lines, full, strict=True):
        assert mine["train_loss"] == theirs["train_loss"]

    result = json.loads((sparse / "result.json").read_text())
    assert result["final_test_acc"] == pytest.approx(full[2]["test_acc"])
    assert result["best_test_acc"] == pytest.approx(full[2]["test_acc"])  # the one measured
    # best.pt is the best *measured* epoch: here the last, the only one.
    assert load_checkpoint(sparse / "best.pt", map_location="cpu")["epoch"] == 3


def test_eval_every_2_measures_the_even_epochs_and_the_last(tiny_config, tmp_path):
    cfg = apply_overrides(tiny_config, dict(epochs=5, eval_every=2, holdout=100,
                                            test_subset=None))
    run(cfg, RunOptions(out=tmp_path / "run", quiet=True))
    lines = _records(tmp_path / "run" / "seed_0")
    assert [line["epoch"] for line in lines if "val_acc" in line] == [2, 4, 5]
    result = json.loads((tmp_path / "run" / "seed_0" / "result.json").read_text())
    assert result["best_val_acc"] == pytest.approx(
        max(line["val_acc"] for line in lines if "val_acc" in line))


def test_a_negative_eval_every_is_refused(tiny_config):
    with pytest.raises(ConfigError, match=r"run.eval_every must be >= 0 .*-1"):
        apply_overrides(tiny_config, dict(eval_every=-1)).validate()
