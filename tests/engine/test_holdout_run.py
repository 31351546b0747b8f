"""A run with a held-out split: epochs measured on it, the test set once at the end."""

from __future__ import annotations

import json

import pytest
import torch

from mpbn.engine.config import apply_overrides
from mpbn.engine.distributed import DistInfo
from mpbn.engine.evaluation import evaluate
from mpbn.engine.loading import load_model
from mpbn.engine.metrics import allocator
from mpbn.engine.train import FlipAveraged, RunOptions, build_loaders, lr_factor, run


def test_holdout_run_reports_validation_per_epoch_and_test_once(tiny_config, tmp_path):
    cfg = apply_overrides(tiny_config, dict(holdout=200, test_subset=None, tta_flip=True,
                                            fold=True))
    summary = run(cfg, RunOptions(out=tmp_path / "run", quiet=True))
    seed_dir = tmp_path / "run" / "seed_0"
    lines = [json.loads(line) for line in (seed_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2
    for line in lines:
        assert {"val_loss", "val_acc", "spike_rate"} <= set(line)
        assert not any(key.startswith("test_") for key in line), line
    result = json.loads((seed_dir / "result.json").read_text())
    assert result["final_val_acc"] == pytest.approx(lines[-1]["val_acc"])
    assert result["best_val_acc"] == pytest.approx(max(line["val_acc"] for line in lines))
    assert result["best_test_acc"] is None  # the test set was not looked at per epoch
    assert summary["final_val_acc"] == [result["final_val_acc"]]
    assert result["commit"] is None or len(result["commit"]) >= 40
    # What the seed ran on: the settings that move train_time, in result.json and the summary.
    assert result["runtime"] == {"device": "cpu", "processes": 1,
                                 "threads": torch.get_num_threads(), "compile": False,
                                 "grad_checkpointing": 0, "allocator": allocator(),
                                 "torch": torch.__version__}
    assert summary["runtimes"] == [result["runtime"]]

    # The reported test accuracy is the final model's on the whole test set.
    model, saved_cfg, _ = load_model(seed_dir / "last.pt")
    _, test_loader, info = build_loaders(saved_cfg, 0, DistInfo(device=torch.device("cpu")))
    assert info.num_test == 359
    assert result["final_test_acc"] == pytest.approx(
        evaluate(model, test_loader, saved_cfg)["test_acc"])
    flip = evaluate(FlipAveraged(model), test_loader, saved_cfg)["test_acc"]
    assert result["test_acc_flip"] == pytest.approx(flip)


def test_flip_averaged_is_the_mean_of_the_image_and_its_mirror():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    x = torch.randn(5, 1, 3, 4)
    expected = 0.5 * (net(x) + net(torch.flip(x, dims=[3])))
    assert torch.allclose(FlipAveraged(net)(x), expected)


def test_linear_schedule_is_the_one_cycle_triangle(tiny_config):
    cfg = apply_overrides(tiny_config, dict(epochs=4, warmup_epochs=1, schedule="linear"))
    factors = [lr_factor(cfg, step, 10) for step in range(40)]
    assert factors[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert factors[10:] == pytest.approx([1 - s / 30 for s in range(30)])
