"""scripts/norm_params.py on a checkpoint the test writes: its numbers are those of the saved
tensors, moves are measured from each parameter's initial value, and bad arguments are one-line
errors."""

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch

from mpbn.engine.checkpoint import save_checkpoint
from mpbn.engine.config import TrainConfig

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "norm_params.py"


def _run(monkeypatch, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *args])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    assert stop.value.code == 0


def test_reports_the_saved_tensors_and_how_far_they_moved(tmp_path, monkeypatch):
    state = {
        "stem.conv.weight": torch.randn(2, 3, 3, 3),  # not a norm: left out
        "stem.norm.weight": torch.tensor([1.0, 1.5]),
        "stem.norm.bias": torch.tensor([0.0, -0.25]),
        "body.0.membrane_norm.weight": torch.tensor([[0.5, 1.0], [1.0, 1.0]]),
        "body.0.membrane_norm.running_var": torch.tensor([2.0, 4.0]),
        "body.0.membrane_norm.num_batches_tracked": torch.tensor(7),  # not floating point
    }
    average = {key: torch.zeros_like(value) for key, value in state.items()}
    path = tmp_path / "runs" / "my-run" / "seed_0" / "last.pt"
    # With a weight average, "model" is the average and "train_model" what trained.
    save_checkpoint(path, {"model": average, "train_model": state, "epoch": 3,
                           "config": TrainConfig().to_dict()})
    _run(monkeypatch, f"mine={path}", "--out", str(tmp_path / "out"))
    report = json.loads((tmp_path / "out" / "norm_params.json").read_text())["mine"]
    assert report["checkpoint"] == "my-run/seed_0" and report["epoch"] == 3
    rows = {row["tensor"]: row for row in report["tensors"]}
    assert list(rows) == ["stem.norm.weight", "stem.norm.bias", "body.0.membrane_norm.weight",
                          "body.0.membrane_norm.running_var"]
    assert rows["stem.norm.weight"]["mean"] == pytest.approx(1.25)
    assert rows["stem.norm.weight"]["max_moved"] == pytest.approx(0.5)  # from 1
    assert rows["stem.norm.bias"]["max_moved"] == pytest.approx(0.25)  # from 0
    lam = rows["body.0.membrane_norm.weight"]
    assert lam["shape"] == [2, 2] and lam["min"] == 0.5 and lam["max"] == 1.0
    assert lam["std"] == pytest.approx(torch.tensor([0.5, 1.0, 1.0, 1.0]).std().item())
    assert rows["body.0.membrane_norm.running_var"]["max_moved"] is None  # an estimate
    page = (tmp_path / "out" / "norm_params.md").read_text()
    assert "`my-run/seed_0`, after epoch 3" in page and "| stem.norm.bias | 2 |" in page


def test_a_missing_checkpoint_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), f"x={tmp_path / 'none.pt'}", "--out",
                                      str(tmp_path)])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    assert stop.value.code == 2
    assert "give NAME=CHECKPOINT with an existing checkpoint file" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), f"x={tmp_path / 'junk.pt'}", "--out",
                                      str(tmp_path)])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "is corrupt or truncated" in err and "Traceback" not in err
