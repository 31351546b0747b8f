"""A seed whose folded model differs from it in float32 gets the mismatch recounted in float64
(``spike_mismatch_float64`` in result.json and summary.json): 0 there tells rounding at the
threshold from a folding error, without a second command."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from mpbn.analysis.compare import mismatch_cell, mismatch_text
from mpbn.analysis.io import load_run
from mpbn.cli import _mismatch_note, format_summary
from mpbn.engine import train as train_module
from mpbn.engine.config import apply_overrides
from mpbn.engine.train import RunOptions, run
from mpbn.layers.fold import SpikeMismatch


def _with_float32_mismatches(count: int):
    """``fold_and_evaluate`` as the engine calls it, reporting ``count`` float32 mismatches (a
    tiny model folds without any, so the test plays the rounding a CIFAR-sized one shows)."""
    real = train_module.fold_and_evaluate

    def fold_and_evaluate(*args, **kwargs):
        folded, metrics, mismatch = real(*args, **kwargs)
        return folded, metrics, replace(mismatch, mismatches=[count] + [0] * (
            len(mismatch.mismatches) - 1))
    return fold_and_evaluate


@pytest.fixture
def folding_config(tiny_config):
    return apply_overrides(tiny_config, {"run.fold": True, "optim.epochs": 1})


def test_float32_mismatches_are_recounted_in_float64(tmp_path, folding_config, monkeypatch):
    monkeypatch.setattr(train_module, "fold_and_evaluate", _with_float32_mismatches(5))
    summary = run(folding_config, RunOptions(out=tmp_path, quiet=True))
    result = json.loads((tmp_path / "seed_0/result.json").read_text())
    assert result["spike_mismatch"] == 5
    assert result["spike_mismatch_float64"] == 0  # the real recount of this model's fold
    assert summary["spike_mismatch_float64"] == [0]
    assert "5 (" in format_summary(summary) and "; 0 in float64)" in format_summary(summary)
    assert _mismatch_note(summary).endswith("0 in float64 means the fold is exact")


def test_the_record_is_the_recount_not_the_float32_count(tmp_path, folding_config,
                                                         monkeypatch):
    monkeypatch.setattr(train_module, "fold_and_evaluate", _with_float32_mismatches(5))
    calls = []

    def recount(model, test_loader, cfg):
        calls.append(next(model.parameters()).dtype)
        return SpikeMismatch(layers=["a", "b"], mismatches=[2, 1], totals=[10, 10])
    monkeypatch.setattr(train_module, "float64_spike_mismatch", recount)
    run(folding_config, RunOptions(out=tmp_path, quiet=True))
    assert json.loads((tmp_path / "seed_0/result.json").read_text())[
        "spike_mismatch_float64"] == 3
    assert len(calls) == 1


def test_no_recount_when_float32_agrees(tmp_path, folding_config, monkeypatch):
    monkeypatch.setattr(train_module, "fold_and_evaluate", _with_float32_mismatches(0))

    def recount(*args):
        raise AssertionError("nothing to recount")
    monkeypatch.setattr(train_module, "float64_spike_mismatch", recount)
    summary = run(folding_config, RunOptions(out=tmp_path, quiet=True))
    assert summary["spike_mismatch"] == [0] and summary["spike_mismatch_float64"] == [None]


def test_records_without_a_recount_point_to_mpbn_eval():
    old = {"seeds": [0, 1], "spike_mismatch": [496, 0]}  # written before the recount existed
    assert "`mpbn eval RUN --fold-check float64`" in _mismatch_note(old)
    mixed = {**old, "spike_mismatch": [496, 372], "spike_mismatch_float64": [None, 0]}
    assert "`mpbn eval RUN --fold-check float64`" in _mismatch_note(mixed)
    done = {**old, "spike_mismatch_float64": [0, None]}  # seed 1 had nothing to recount
    assert _mismatch_note(done).endswith("0 in float64 means the fold is exact")


def test_tables_show_the_recount_beside_the_float32_count(tmp_path):
    for seed, (count, rate, exact) in enumerate([(496, 2.2e-5, None), (372, 1.6e-5, 0),
                                                  (0, 0.0, None)]):
        folder = tmp_path / f"seed_{seed}"
        folder.mkdir()
        (folder / "result.json").write_text(json.dumps(
            {"final_test_acc": 0.8, "spike_mismatch": count, "spike_mismatch_rate": rate,
             "spike_mismatch_float64": exact}))
    run_ = load_run(tmp_path)
    assert mismatch_text(run_) == "496, 372, 0 (2.2e-05 max; in float64: -, 0, -)"
    assert mismatch_cell(372, 0) == "372 (0 in float64)"
    assert mismatch_cell(496, None) == "496" and mismatch_cell(None, None) == "-"
    # the summary table after training and `mpbn eval` add the rate, where there is a mismatch
    assert mismatch_cell(4, 0, rate=5.1e-6) == "4 (5.1e-06; 0 in float64)"
    assert mismatch_cell(4, rate=5.1e-6) == "4 (5.1e-06)"
    assert mismatch_cell(0, 0, rate=0.0) == "0 (0 in float64)"
    assert mismatch_cell(0, rate=0.0) == "0"
    (tmp_path / "seed_1/result.json").write_text(json.dumps(
        {"final_test_acc": 0.8, "spike_mismatch": 372, "spike_mismatch_rate": 1.6e-5}))
    assert mismatch_text(load_run(tmp_path)) == "496, 372, 0 (2.2e-05 max)"
    for seed in range(3):
        (tmp_path / f"seed_{seed}/result.json").write_text(json.dumps(
            {"final_test_acc": 0.8, "spike_mismatch": 0, "spike_mismatch_rate": 0.0}))
    assert mismatch_text(load_run(tmp_path)) == "0, 0, 0"  # no "(0.0e+00 max)"
