"""The benchmark scripts run on a tiny config (so they do not rot), and their accounting is right.

The scripts live in ``benchmarks/`` (not a package); they are loaded from their files.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from mpbn.layers import LIF
from mpbn.layers.norm import SeqBatchNorm
from mpbn.models import ConvNorm, create

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    if name in sys.modules:
        return sys.modules[name]
    if str(BENCHMARKS) not in sys.path:  # as `python benchmarks/x.py` has it: for `_host`
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench_train_step():
    return _load("bench_train_step")


@pytest.fixture(scope="module")
def bench_memory():
    return _load("bench_memory")


# One thread: on a busy machine, OpenMP threads waiting for each other's cores make tiny
# models 10-50x slower (the fixture restores the thread count for the other tests).
TINY = ["--model", "resnet19", "--width", "4", "--batch", "2", "--input-size", "8",
        "--threads", "1", "--device", "cpu"]


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_train_step_main_runs_on_a_tiny_config(bench_train_step, capsys):
    result = bench_train_step.main([*TINY, "--timesteps", "2", "--rounds", "2", "--warmup", "1"])
    out = capsys.readouterr().out
    assert "load average" in out and "allocator" in out
    medians = result["medians_ms"]
    assert set(medians) == {"ANN T=1 B=4"} | {
        f"SNN mpbn={m} {b}" for m in ("none", "channel", "element")
        for b in ("fused", "reference")}
    ratios = result["ratios"]
    assert "SNN T=2 (fused) / ANN T=1 B=4" in ratios
    assert "MPBN channel / no MPBN (fused)" in ratios
    assert "reference / fused (mpbn=element)" in ratios
    assert all(math.isfinite(v) and v > 0 for v in [*medians.values(), *ratios.values()])


def test_train_step_speedups_are_applied_and_compared(bench_train_step, capsys, monkeypatch):
    # torch.compile is replaced by a recorder: the real one would spend minutes of gcc here.
    compiled = []
    monkeypatch.setattr(bench_train_step.torch, "compile",
                        lambda module: compiled.append(module) or module)
    result = bench_train_step.main([*TINY, "--timesteps", "1", "--rounds", "1", "--warmup", "0",
                                    "--no-ann", "--backends", "fused", "--mpbn", "none",
                                    "--speedups", "model-compile", "channels-last"])
    assert len(compiled) == 1 and isinstance(compiled[0], nn.Module)
    plain = "SNN mpbn=none fused"
    assert set(result["medians_ms"]) == {plain, f"{plain} +model-compile",
                                         f"{plain} +channels-last"}
    assert set(result["ratios"]) == {"+model-compile / without (mpbn=none, fused)",
                                     "+channels-last / without (mpbn=none, fused)"}
    assert "+channels-last" in capsys.readouterr().out


def test_neuron_compile_switch_is_on_inside_the_step_and_restored(bench_train_step):
    from mpbn.functional.lif_backend import compile_enabled, set_compile

    set_compile(False)
    inside = []
    step = bench_train_step.with_neuron_compile(lambda: inside.append(compile_enabled()))
    step()
    assert inside == [True] and not compile_enabled()


def test_channels_last_speedup_converts_weights_and_input(bench_train_step, monkeypatch):
    captured = {}
    monkeypatch.setattr(bench_train_step, "make_step",
                        lambda model, images, labels, amp: captured.update(m=model, x=images))
    model = create("resnet19", timesteps=1, width=4, input_size=8)
    images = torch.rand(2, 3, 8, 8)
    bench_train_step.sped_up_step(model, images, torch.zeros(2, dtype=torch.long), False,
                                  "channels-last")
    conv = next(m for m in captured["m"].modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    assert captured["x"].is_contiguous(memory_format=torch.channels_last)


def test_to_ann_replaces_every_neuron_and_keeps_the_rest(bench_train_step):
    torch.set_num_threads(1)
    snn = create("resnet19", timesteps=1, width=4, input_size=8)
    ann = bench_train_step.to_ann(snn)
    n_lif = sum(isinstance(m, LIF) for m in snn.modules())
    assert n_lif > 0 and not any(isinstance(m, LIF) for m in ann.modules())
    assert sum(isinstance(m, nn.ReLU) for m in ann.modules()) == n_lif
    assert sum(p.numel() for p in ann.parameters()) == sum(p.numel() for p in snn.parameters())
    assert ann(torch.rand(6, 3, 8, 8)).shape == (6, 10)


def test_memory_main_runs_on_a_tiny_config(bench_memory, capsys):
    rows = bench_memory.main([*TINY, "--timesteps", "1", "2", "3"])
    assert "saved/need" in capsys.readouterr().out
    assert len(rows) == 3 * 2 * 3  # mpbn modes x backends x T
    for row in rows:
        assert row["saved"] >= row["need"] > 0  # need is a lower bound
        assert 0 <= row["binary_float"] < row["saved"]
    # Spike inputs of convs are saved as bool (mpbn.functional.spike_ops), and the fused
    # neurons keep no float spikes, with or without MPBN.
    assert all(r["binary_float"] == 0 for r in rows if r["backend"] == "fused")
    fused = {(r["mpbn"], r["T"]): r for r in rows if r["backend"] == "fused"}
    # Fused, the saved bytes are linear in T (B x (a T + b)): equal second differences.
    for mode in ("none", "channel", "element"):
        s1, s2, s3 = (fused[mode, t]["saved"] for t in (1, 2, 3))
        assert s3 - s2 == s2 - s1


def test_memory_checkpointing_table_runs(bench_memory, capsys):
    pytest.importorskip("torch.distributed._tools.mem_tracker")
    rows = bench_memory.main([*TINY, "--timesteps", "2", "--mpbn", "channel", "--backends",
                              "fused", "--checkpointing", "1"])
    assert "checkpointing every N units" in capsys.readouterr().out
    peaks = rows[-1]["peaks"]
    assert set(peaks) == {0, 1} and all(p["total"] > 0 for p in peaks.values())


def _tiny(membrane_norm: str | None) -> nn.Module:
    return nn.Sequential(
        ConvNorm(nn.Conv2d(2, 4, 1, bias=False), SeqBatchNorm(4)),
        LIF(membrane_norm=membrane_norm, num_features=4, backend="fused"),
    )


@pytest.mark.parametrize("membrane_norm", [None, "channel"])
def test_saved_bytes_match_a_hand_count(bench_memory, membrane_norm):
    steps, batch, f32 = 2, 3, 4
    x = torch.randint(0, 2, (steps, batch, 2, 4, 4)).float()  # spikes in float32
    report, out = bench_memory.account(_tiny(membrane_norm), x)
    n_in = steps * batch * 2 * 16  # conv input elements
    n_out = steps * batch * 4 * 16  # conv output = BN input = LIF input elements
    # conv: its input x; BN: its input and save_mean/save_invstd [4]; LIF: u_pre. The conv
    # weight, BN weight/running statistics (and MPBN weight/bias) are state, counted apart.
    saved = n_in * f32 + n_out * f32 + 2 * 4 * f32 + n_out * f32
    binary = n_in * f32
    # need: the conv input at 1 B (spikes), BN input, BN statistics, u_pre.
    need = n_in * 1 + n_out * f32 + 2 * 4 * f32 + n_out * f32
    if membrane_norm == "channel":
        # MPBN-LIF (hard reset) also keeps its spikes as uint8 and per-step mean/invstd
        # [T, 4, 1, 1]; need counts the spikes once, at the next conv.
        saved += n_out * 1 + 2 * steps * 4 * f32
        need += 2 * steps * 4 * f32
    assert report.saved_bytes == saved
    assert report.binary_float_bytes == binary
    assert report.need_bytes == need
    assert report.saved_bytes_if_bool == saved - binary * 3 // 4
    assert report.state_bytes > 0
    input_record = report.saved[x.untyped_storage().data_ptr()]
    assert input_record.binary and input_record.savers == ["0.conv"]
    out.sum().backward()  # the accounting hooks left the graph usable


def test_neuron_main_runs_and_times_the_floor_beside_every_variant(capsys):
    rows = _load("bench_neuron").main(["--small", "--steps", "1", "2", "--repeats", "2", "--split",
                                       "--no-compile", "--threads", "1", "--device", "cpu"])
    out = capsys.readouterr().out
    assert "allocator" in out and "load average" in out
    assert "eager: forward and backward apart" in out
    assert [(r["kind"], r["steps"]) for r in rows] == [
        ("LIF", 1), ("LIF", 2), ("MPBN-LIF", 1), ("MPBN-LIF", 2)]
    for row in rows:
        assert {"floor", "reference", "eager"} <= set(row["medians"])
        assert set(row["over_floor"]) >= {"reference", "eager"}
        assert all(math.isfinite(v) and v > 0 for v in row["over_floor"].values())
        assert row["bandwidth_gbs"] > 0


def test_neuron_floor_streams_the_bytes_it_is_asked_to():
    out = _load("bench_neuron").stream(24 * 1000, torch.device("cpu"))()
    assert out.numel() == 2000  # 12 B per element: read a, read b, write c


def test_reference_epoch_times_steps_and_scales_the_budget(tmp_path, capsys):
    reference = _load("reference_epoch")
    assert reference.budget_minutes(70.0) == pytest.approx(60.0)
    assert reference.budget_minutes(140.0) == pytest.approx(120.0)
    threads = torch.get_num_threads()
    try:
        result = reference.main(["--steps", "2", "--warmup", "1", "--threads", "1",
                                 "--json", str(tmp_path / "ref.json"), "--also",
                                 "cifar10-fast-t1-baseline", "--log", str(tmp_path / "log")])
    finally:
        torch.set_num_threads(threads)  # the setting is process-wide
    assert result["steps_timed"] == 2 and result["steps_per_epoch"] == 391
    assert result["epoch_seconds"] == pytest.approx(result["seconds_timed"] * 391 / 2)
    assert "allocator" in result and (tmp_path / "ref.json").exists()
    (fast,) = result["also"]
    assert fast["images"] == 45_000 and fast["steps_per_epoch"] == 176  # 5k held out, batch 256
    assert fast["epochs_in_budget"] == pytest.approx(
        result["budget_minutes"] * 60 / fast["epoch_seconds"])
    assert len((tmp_path / "log").read_text().splitlines()) == 1
    out = capsys.readouterr().out
    assert "budget: 60 min x" in out and "epochs fit the budget" in out


def test_reference_epoch_set_changes_only_the_also_presets(tmp_path):
    reference = _load("reference_epoch")
    threads = torch.get_num_threads()
    try:
        result = reference.main(["--steps", "1", "--warmup", "1", "--threads", "1", "--also",
                                 "cifar10-fast-t1-baseline", "--set", "data.batch_size=500"])
    finally:
        torch.set_num_threads(threads)
    assert result["steps_per_epoch"] == 391  # the reference preset as defined (batch 128)
    assert result["also"][0]["steps_per_epoch"] == 90  # 45,000 / 500
    assert result["overrides"] == {"data.batch_size": 500}


def test_bf16_speedups_turn_autocast_on_alone_and_with_the_compiled_model(
        bench_train_step, monkeypatch):
    compiled, captured = [], []
    monkeypatch.setattr(bench_train_step.torch, "compile",
                        lambda module: compiled.append(module) or module)
    monkeypatch.setattr(bench_train_step, "make_step",
                        lambda model, images, labels, amp: captured.append(amp))
    model = create("resnet19", timesteps=1, width=4, input_size=8)
    images, labels = torch.rand(2, 3, 8, 8), torch.zeros(2, dtype=torch.long)
    for speedup in ("bf16", "model-compile+bf16", "model-compile"):
        bench_train_step.sped_up_step(model, images, labels, False, speedup)
    assert captured == [True, True, False] and len(compiled) == 2
