"""The weight EMA (``optim.ema_decay``): its recurrence, and a run that measures, keeps,
folds and resumes the average rather than the raw weights."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from mpbn.engine.checkpoint import load_checkpoint
from mpbn.engine.config import ConfigError, apply_overrides
from mpbn.engine.distributed import DistInfo
from mpbn.engine.ema import WeightEMA
from mpbn.engine.evaluation import evaluate
from mpbn.engine.loading import load_model
from mpbn.engine.train import RunOptions, build_loaders, run

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def test_the_average_follows_the_recurrence_for_weights_and_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    decay = 0.75
    ema = WeightEMA(model, decay)
    expected: dict[str, torch.Tensor] = {}
    for step in range(4):
        with torch.no_grad():  # a new state after each "optimizer step"
            for tensor in [*model.parameters(), model[1].running_mean, model[1].running_var]:
                tensor.copy_(torch.randn_like(tensor))
            model[1].num_batches_tracked.fill_(10 + step)
        ema.update(model)
        for name, value in model.state_dict().items():
            if not value.is_floating_point():
                continue
            value = value.double()  # the float64 reference of W_ema <- d W_ema + (1 - d) W
            expected[name] = value if step == 0 else decay * expected[name] + (1 - decay) * value
    averaged = ema.module.state_dict()
    for name, value in expected.items():
        torch.testing.assert_close(averaged[name].double(), value, rtol=1e-6, atol=1e-7)
    assert averaged["1.num_batches_tracked"].item() == 13  # copied, not scaled by the decay
    assert ema.steps == 4


def test_the_decay_must_be_inside_the_unit_interval(tiny_config):
    for bad in (1.0, -0.1):
        with pytest.raises(ConfigError, match=r"optim.ema_decay must be in \[0, 1\)"):
            apply_overrides(tiny_config, dict(ema_decay=bad)).validate()
    with pytest.raises(ValueError, match="EMA decay"):
        WeightEMA(nn.Linear(1, 1), 0.0)


def _losses(model, cfg):
    _, test_loader, _ = build_loaders(cfg, 0, DistInfo(device=torch.device("cpu")))
    return evaluate(model, test_loader, cfg)


def test_a_run_measures_keeps_and_folds_the_average(tiny_config, tmp_path):
    cfg = apply_overrides(tiny_config, dict(ema_decay=0.8, fold=True))
    summary = run(cfg, RunOptions(out=tmp_path / "run", quiet=True))
    seed_dir = tmp_path / "run" / "seed_0"
    ckpt = load_checkpoint(seed_dir / "last.pt")
    steps_per_epoch = 256 // 64
    assert ckpt["ema_steps"] == ckpt["global_step"] == 2 * steps_per_epoch
    assert ckpt["model"].keys() == ckpt["train_model"].keys()

    average, saved_cfg, _ = load_model(seed_dir / "last.pt")  # what every loader deploys
    raw, _, _ = load_model(seed_dir / "last.pt")
    raw.load_state_dict(ckpt["train_model"])
    on_average, on_raw = _losses(average, saved_cfg), _losses(raw, saved_cfg)
    assert on_average["test_loss"] != pytest.approx(on_raw["test_loss"], rel=1e-4)

    last = json.loads((seed_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["test_loss"] == pytest.approx(on_average["test_loss"], rel=1e-6)
    assert summary["final_test_acc"] == [pytest.approx(on_average["test_acc"])]
    # The fold folds the average: exact, so the same accuracy and no spike differs.
    assert summary["folded_test_acc"] == [pytest.approx(on_average["test_acc"])]
    assert summary["spike_mismatch"] == [0]


def test_resume_continues_the_average_exactly(tmp_path, tiny_config):
    cfg = apply_overrides(tiny_config, dict(ema_decay=0.8))
    run(cfg, RunOptions(out=tmp_path / "a", quiet=True))
    assert run(cfg, RunOptions(out=tmp_path / "b", quiet=True, stop_after=1)) is None
    run(cfg, RunOptions(out=tmp_path / "b", quiet=True, resume=True))
    a = load_checkpoint(tmp_path / "a/seed_0/last.pt")
    b = load_checkpoint(tmp_path / "b/seed_0/last.pt")
    assert a["ema_steps"] == b["ema_steps"] == a["global_step"]
    for part in ("model", "train_model"):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), (part, key)


def test_a_run_without_the_average_cannot_resume_with_one(tmp_path, tiny_config):
    assert run(tiny_config, RunOptions(out=tmp_path, quiet=True, stop_after=1)) is None
    with pytest.raises(ConfigError, match="cannot resume .*ema_decay"):
        run(apply_overrides(tiny_config, dict(ema_decay=0.9)),
            RunOptions(out=tmp_path, quiet=True, resume=True))


def test_the_exploration_averages_equal_the_engines(tmp_path, tiny_config):
    """scripts/explore_ema.py keeps its averages through the "after_step" hook: each must be
    the average `optim.ema_decay` keeps, measured on the same held-out split."""
    spec = importlib.util.spec_from_file_location("explore_ema", SCRIPTS / "explore_ema.py")
    explore_ema = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(explore_ema)
    cfg = apply_overrides(tiny_config, dict(holdout=64, test_subset=None))
    rows = explore_ema.explore(cfg, [0.8, 0.5], tmp_path / "explore", eval_epochs={1, 2})
    assert [(r["epoch"], r["decay"]) for r in rows] == [(1, 0.8), (1, 0.5), (2, 0.8), (2, 0.5)]
    raw = [json.loads(x)["val_acc"] for x in
           (tmp_path / "explore/seed_0/metrics.jsonl").read_text().splitlines()]
    assert [r["raw_val_acc"] for r in rows] == [raw[0], raw[0], raw[1], raw[1]]

    run(apply_overrides(cfg, dict(ema_decay=0.8)), RunOptions(out=tmp_path / "ema", quiet=True))
    engine = [json.loads(x)["val_acc"] for x in
              (tmp_path / "ema/seed_0/metrics.jsonl").read_text().splitlines()]
    assert [r["val_acc"] for r in rows if r["decay"] == 0.8] == engine
    assert json.loads((tmp_path / "explore/ema_heldout.jsonl").read_text().splitlines()[0]) \
        == rows[0]


def test_the_exploration_refuses_bad_decays_and_a_used_folder(tmp_path, tiny_config, capsys):
    spec = importlib.util.spec_from_file_location("explore_ema", SCRIPTS / "explore_ema.py")
    explore_ema = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(explore_ema)
    with pytest.raises(SystemExit):
        explore_ema.main(["cifar10-fast-t1-baseline", "--data-root", str(tmp_path), "--out",
                          str(tmp_path / "x"), "--decays", "0.99", "1.5"])
    assert "--decays must each be in (0, 1), got 1.5" in capsys.readouterr().err
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit, match="is not empty"):
        explore_ema.explore(apply_overrides(tiny_config, dict(holdout=64)), [0.9],
                            tmp_path / "used")
    assert (tmp_path / "used" / "keep.txt").read_text() == "mine"
