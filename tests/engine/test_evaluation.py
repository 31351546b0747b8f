"""bf16 autocast in the engine: where it applies (training, not evaluation), and a whole CPU
run under it."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mpbn.engine.config import TrainConfig, apply_overrides
from mpbn.engine.train import RunOptions, autocast, run


def _conv_dtype(cfg: TrainConfig, device: str) -> torch.dtype:
    conv = nn.Conv2d(3, 4, 3)
    with autocast(cfg, torch.device(device)):
        return conv(torch.randn(1, 3, 8, 8)).dtype


def test_amp_runs_convolutions_in_bf16_on_cpu_and_nothing_changes_without_it():
    assert _conv_dtype(apply_overrides(TrainConfig(), dict(amp=True)), "cpu") == torch.bfloat16
    assert _conv_dtype(TrainConfig(), "cpu") == torch.float32
    assert _conv_dtype(None, "cpu") == torch.float32


def test_amp_on_a_device_without_bf16_autocast_says_which_devices_have_it():
    cfg = apply_overrides(TrainConfig(), dict(amp=True))
    with pytest.raises(ValueError,
                       match=r"run\.amp: bf16 autocast runs on cuda or cpu, not on meta"):
        autocast(cfg, torch.device("meta"))


def test_a_cpu_run_with_amp_trains_in_bf16_and_evaluates_and_folds_in_float32(tmp_path,
                                                                              tiny_config):
    """Training runs its convolutions in bf16, every evaluation in float32 (spikes are
    threshold tests: bf16 rounding flips those near it); MPBN still folds exactly."""
    cfg = apply_overrides(tiny_config, dict(amp=True, mpbn="channel", fold=True, epochs=3))
    training: set[torch.dtype] = set()
    evaluation: set[torch.dtype] = set()

    def record(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            (training if torch.is_grad_enabled() else evaluation).add(output.dtype)

    handle = nn.modules.module.register_module_forward_hook(record)
    try:
        summary = run(cfg, RunOptions(out=tmp_path, quiet=True))
    finally:
        handle.remove()
    assert training == {torch.bfloat16}
    assert evaluation == {torch.float32}
    accuracy = summary["final_test_acc"][0]
    assert math.isfinite(accuracy) and accuracy > 0.3  # 10 classes: chance is 0.1
    assert summary["spike_mismatch"] == [0]
