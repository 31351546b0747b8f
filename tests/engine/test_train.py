"""The training loop: default run, resume == uninterrupted, NaN stop, checkpoints."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mpbn.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mpbn.engine.config import ConfigError, TrainConfig, apply_overrides, parse_set
from mpbn.engine.presets import PRESETS, get_preset, list_presets
from mpbn.engine.train import (
    RunOptions,
    TrainingDiverged,
    run,
)

EPOCH_KEYS = {"epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "epoch_time",
              "images_per_s", "spike_rate"}


def test_default_run_end_to_end(tmp_path):
    cfg = apply_overrides(TrainConfig(), dict(epochs=3, log_interval=5))
    summary = run(cfg, RunOptions(out=tmp_path / "run", quiet=True))
    run_dir = tmp_path / "run"
    assert json.loads((run_dir / "config.json").read_text()) == cfg.to_dict()
    saved = json.loads((run_dir / "summary.json").read_text())
    for key in ("name", "config", "seeds", "final_test_acc", "best_test_acc", "mean", "std",
                "commit", "folded_test_acc"):
        assert key in saved
    assert saved["seeds"] == [0]
    # Folding MPBN into thresholds changes nothing: same spikes, same accuracy.
    assert summary["spike_mismatch"] == [0]
    assert summary["folded_test_acc"] == pytest.approx(summary["final_test_acc"])
    assert summary["final_test_acc"][0] > 0.5
    lines = [json.loads(x) for x in (run_dir / "seed_0/metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2, 3]
    assert EPOCH_KEYS <= set(lines[0])
    assert 0 < lines[-1]["spike_rate"] < 1
    for name in ("last.pt", "best.pt"):
        ckpt = load_checkpoint(run_dir / "seed_0" / name)
        assert ckpt["config"] == cfg.to_dict()
        assert {"model", "optimizer", "scheduler", "scaler", "epoch", "rng"} <= set(ckpt)


def test_seeds_report_mean_and_std(tmp_path, tiny_config):
    cfg = apply_overrides(tiny_config, dict(epochs=1, seeds=2, seed=5))
    summary = run(cfg, RunOptions(out=tmp_path, force=True, quiet=True))
    assert summary["seeds"] == [5, 6]
    accs = summary["final_test_acc"]
    assert summary["mean"] == pytest.approx(sum(accs) / 2)
    assert summary["std"] == pytest.approx(abs(accs[0] - accs[1]) / math.sqrt(2))


def _state(path):
    return load_checkpoint(path)


def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(tmp_path, tiny_config):
    cfg = apply_overrides(tiny_config, dict(encoding="poisson"))  # exercises the RNG restore
    run(cfg, RunOptions(out=tmp_path / "a", quiet=True))
    assert run(cfg, RunOptions(out=tmp_path / "b", quiet=True, stop_after=1)) is None
    assert _state(tmp_path / "b/seed_0/last.pt")["epoch"] == 1
    summary = run(cfg, RunOptions(out=tmp_path / "b", quiet=True, resume=True))
    assert summary is not None
    a, b = _state(tmp_path / "a/seed_0/last.pt"), _state(tmp_path / "b/seed_0/last.pt")
    assert a["epoch"] == b["epoch"] == 2
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(),
                      strict=True):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    metrics = (tmp_path / "b/seed_0/metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in metrics] == [1, 2]


def test_resume_with_more_seeds_adds_them_and_reuses_the_finished_ones(tmp_path, tiny_config):
    one = apply_overrides(tiny_config, dict(epochs=1, seeds=1))
    first = run(one, RunOptions(out=tmp_path, quiet=True))
    seed0 = (tmp_path / "seed_0/result.json").read_text()
    more = run(apply_overrides(one, dict(seeds=2)), RunOptions(out=tmp_path, quiet=True,
                                                             resume=True))
    assert more["seeds"] == [0, 1]
    assert more["final_test_acc"][0] == first["final_test_acc"][0]
    assert (tmp_path / "seed_0/result.json").read_text() == seed0
    assert json.loads((tmp_path / "summary.json").read_text())["seeds"] == [0, 1]
    assert json.loads((tmp_path / "config.json").read_text())["run"]["seeds"] == 2


def test_grad_checkpointing_trains_to_the_same_weights(tmp_path, tiny_config):
    """The recompute changes memory, not the run: same weights and running statistics."""
    cfg = apply_overrides(tiny_config, dict(epochs=1, mpbn="channel"))
    run(cfg, RunOptions(out=tmp_path / "a", quiet=True))
    run(apply_overrides(cfg, dict(grad_checkpointing=1)), RunOptions(out=tmp_path / "b",
                                                                   quiet=True))
    a, b = _state(tmp_path / "a/seed_0/last.pt"), _state(tmp_path / "b/seed_0/last.pt")
    for key in a["model"]:
        torch.testing.assert_close(b["model"][key], a["model"][key], msg=key)
    with pytest.raises(ConfigError, match="grad_checkpointing must be >= 0"):
        apply_overrides(cfg, dict(grad_checkpointing=-1))


def test_resume_with_a_changed_config_is_refused(tmp_path, tiny_config):
    run(tiny_config, RunOptions(out=tmp_path, quiet=True, stop_after=1))
    changed = apply_overrides(tiny_config, dict(lr=0.05))
    with pytest.raises(ConfigError, match="changed config.*lr"):
        run(changed, RunOptions(out=tmp_path, quiet=True, resume=True))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, tiny_config):
    cfg = apply_overrides(tiny_config, dict(epochs=3))

    def inject_nan(event, loss=None, epoch=0, global_step=0, **_):
        if event == "step" and epoch == 2 and global_step == 6:
            return loss * float("nan")
        return None

    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 2 \(global step 6\)"):
        run(cfg, RunOptions(out=tmp_path, quiet=True, hooks=[inject_nan]))
    last = load_checkpoint(tmp_path / "seed_0/last.pt")
    assert last["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())


def test_huge_lr_diverges_with_a_message(tmp_path, tiny_config):
    cfg = apply_overrides(tiny_config, dict(lr=1e30, epochs=1))
    with pytest.raises(TrainingDiverged, match="NaN/inf at epoch 1"):
        run(cfg, RunOptions(out=tmp_path, quiet=True))


def test_corrupt_checkpoint_gives_a_clear_error(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(100)}, "config": {"a": 1}})
    assert load_checkpoint(path)["config"] == {"a": 1}
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=f"{path}.*corrupt or truncated"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_checkpoints_never_execute_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": "{}", "x": Evil()}, path)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"model": {}, "config": {}})
    save_checkpoint(path, {"model": {"x": torch.zeros(1)}, "config": {}})
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_overrides_are_typed_and_validated():
    cfg = apply_overrides(TrainConfig(), parse_set(
        ["epochs=2", "lr=0.05", "mpbn=none", "milestones=0.5,0.75", "amp=true",
         'model_kwargs={"width": 8}', "train_subset=none"]))
    assert (cfg.optim.epochs, cfg.optim.lr, cfg.model.mpbn, cfg.optim.milestones,
            cfg.run.amp) == (2, 0.05, None, [0.5, 0.75], True)
    assert cfg.model.kwargs == {"width": 8} and cfg.data.train_subset is None
    for bad, match in [("timesteps=0", "timesteps"), ("lr=-1", "lr"), ("nope=1", "unknown"),
                       ("mpbn=row", "mpbn must be one of"), ("epochs=two", "expected int")]:
        with pytest.raises(ConfigError, match=match):
            apply_overrides(TrainConfig(), parse_set([bad]))


def test_every_preset_is_valid():
    assert len(list_presets()) >= 40
    for name in list_presets():
        cfg = get_preset(name)
        assert cfg.name == name and cfg.description
    mpbn = get_preset("mpbn-resnet19-cifar10-t2")
    o = mpbn.optim
    assert (o.lr, o.momentum, o.weight_decay, o.decay_params, o.schedule, o.epochs,
            mpbn.data.batch_size, mpbn.data.autoaugment) == (0.1, 0.9, 1e-4, "weights",
                                                             "cosine", 400, 128, True)
    assert get_preset("mpbn-resnet18-imagenet-t4").optim.epochs == 320
    assert get_preset("mpbn-resnet19-cifar10dvs-t10").optim.lr == 0.01
    bntt = get_preset("bntt-vgg9-cifar10-t25")
    n = bntt.model.neuron
    assert (bntt.optim.lr, bntt.optim.weight_decay, bntt.optim.schedule, bntt.model.norm,
            n.reset, bntt.model.encoding, n.surrogate, n.alpha, n.v_threshold) == (
        0.3, 5e-4, "step", "bntt", "soft", "poisson", "linear", 0.3, 1.0)
    assert [get_preset(f"bntt-{n}").optim.epochs for n in
            ("vgg9-cifar10-t25", "vgg11-cifar100-t50", "vgg11-tiny-imagenet-t30",
             "vggsnn-cifar10dvs-t20")] == [120, 240, 90, 60]


REDUCED = sorted(p for p in PRESETS if p.startswith(("cifar10-r20narrow", "bntt-vs-bn")))


@pytest.mark.parametrize("name", REDUCED)
def test_reduced_presets_run_one_tiny_epoch(name, fake_cifar10, tmp_path):
    cfg = apply_overrides(get_preset(name), dict(
        data_root=str(fake_cifar10), train_subset=20, test_subset=10, epochs=1, batch_size=10,
        eval_batch_size=10, fold=True))
    summary = run(cfg, RunOptions(out=tmp_path, quiet=True))
    assert summary["spike_mismatch"] == [0]
    assert summary["folded_test_acc"] == pytest.approx(summary["final_test_acc"])


def _capture_model(monkeypatch):
    import mpbn.engine.train as train_module

    built = []
    original = train_module.build_model

    def build_and_keep(*args, **kwargs):
        built.append(original(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(train_module, "build_model", build_and_keep)
    return built


def _all_tensors_finite(ckpt):
    tensors = list(ckpt["model"].items())
    for index, state in ckpt["optimizer"]["state"].items():
        tensors += [(f"optimizer.{index}.{k}", v) for k, v in state.items()]
    return [name for name, v in tensors
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not v.isfinite().all()]


def test_nan_state_with_a_finite_loss_stops_and_keeps_the_last_good_checkpoint(
        tmp_path, tiny_config, monkeypatch):
    # A NaN running_var does not touch the training loss (train mode uses batch statistics)
    # but makes every later evaluation and the kept checkpoint garbage.
    cfg = apply_overrides(tiny_config, dict(epochs=3))
    built = _capture_model(monkeypatch)

    def poison_buffer(event, loss=None, epoch=0, global_step=0, **_):
        if event == "step" and epoch == 2 and global_step == 6:
            built[-1].stem.norm.running_var.data.fill_(float("nan"))
        return None

    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 2 \(global step 6.*"
                                               r"stem\.norm\.running_var"):
        run(cfg, RunOptions(out=tmp_path, quiet=True, hooks=[poison_buffer]))
    last = load_checkpoint(tmp_path / "seed_0/last.pt")
    assert last["epoch"] == 1
    assert _all_tensors_finite(last) == []


def test_nan_state_set_after_the_last_step_is_caught_before_the_checkpoint(
        tmp_path, tiny_config, monkeypatch):
    cfg = apply_overrides(tiny_config, dict(epochs=3))

    def poison_weight(event, epoch=0, model=None, **_):
        if event == "epoch_end" and epoch == 2:
            with torch.no_grad():
                model.stem.norm.weight[0] = float("inf")

    with pytest.raises(TrainingDiverged, match=r"epoch 2.*before writing the checkpoint.*"
                                               r"stem\.norm\.weight"):
        run(cfg, RunOptions(out=tmp_path, quiet=True, hooks=[poison_weight]))
    last = load_checkpoint(tmp_path / "seed_0/last.pt")
    assert last["epoch"] == 1
    assert _all_tensors_finite(last) == []
    assert not (tmp_path / "seed_0/result.json").exists()


def test_train_time_accumulates_over_resumes(tmp_path, tiny_config):
    cfg = apply_overrides(tiny_config, dict(epochs=3))
    assert run(cfg, RunOptions(out=tmp_path, quiet=True, stop_after=1)) is None
    first_part = json.loads((tmp_path / "seed_0/metrics.jsonl").read_text())["epoch_time"]
    assert load_checkpoint(tmp_path / "seed_0/last.pt")["train_time"] == first_part > 0
    summary = run(cfg, RunOptions(out=tmp_path, quiet=True, resume=True))
    result = json.loads((tmp_path / "seed_0/result.json").read_text())
    assert result["train_time"] == summary["train_time"][0]
    epoch_times = [json.loads(line)["epoch_time"]
                   for line in (tmp_path / "seed_0/metrics.jsonl").read_text().splitlines()]
    assert summary["train_time"][0] >= first_part
    assert summary["train_time"][0] == pytest.approx(sum(epoch_times))


def test_resume_removes_stale_temporary_files(tmp_path, tiny_config):
    assert run(tiny_config, RunOptions(out=tmp_path, quiet=True, stop_after=1)) is None
    stale = [tmp_path / "seed_0/.last.pt.abc.tmp", tmp_path / ".config.json.xyz.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    run(tiny_config, RunOptions(out=tmp_path, quiet=True, resume=True))
    for path in stale:
        assert not path.exists(), path
    assert not list(tmp_path.rglob("*.tmp"))


def test_an_interrupted_json_write_leaves_the_previous_file(tmp_path, tiny_config,
                                                           monkeypatch):
    import os

    from mpbn.engine import rundir

    summary = run(tiny_config, RunOptions(out=tmp_path, quiet=True))
    files = {name: (tmp_path / name).read_bytes()
             for name in ("config.json", "summary.json", "seed_0/result.json")}

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        rundir.write_summary(tmp_path, {**summary, "mean": -1.0})
    with pytest.raises(KeyboardInterrupt):
        rundir.write_result(tmp_path / "seed_0", rundir.finished_result(tmp_path / "seed_0"))
    with pytest.raises(KeyboardInterrupt):
        rundir.prepare_run_dir(tiny_config, tmp_path, force=False, resume=True,
                               dist=rundir.DistInfo())
    monkeypatch.undo()
    for name, before in files.items():
        assert (tmp_path / name).read_bytes() == before, name
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_kill_between_the_best_and_last_writes_leaves_consistent_checkpoints(
        tmp_path, tiny_config, monkeypatch):
    from mpbn.engine import train as train_module

    cfg = apply_overrides(tiny_config, dict(epochs=3))
    reference = run(cfg, RunOptions(out=tmp_path / "reference", quiet=True))
    accs = [json.loads(line)["test_acc"] for line in
            (tmp_path / "reference/seed_0/metrics.jsonl").read_text().splitlines()]
    # The kill comes after the first write of the best epoch (both files are written there,
    # and no later epoch rewrites best.pt); it must not be the first epoch to mean anything.
    target = 1 + accs.index(max(accs))
    assert target >= 2, accs
    real_save = train_module.save_checkpoint

    def first_write_then_die(path, payload):
        real_save(path, payload)
        if payload["epoch"] == target:
            raise KeyboardInterrupt("killed between the two checkpoint writes")

    monkeypatch.setattr(train_module, "save_checkpoint", first_write_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, RunOptions(out=tmp_path / "run", quiet=True))
    monkeypatch.undo()
    summary = run(cfg, RunOptions(out=tmp_path / "run", quiet=True, resume=True))
    assert summary["final_test_acc"] == reference["final_test_acc"]
    best, last = (load_checkpoint(tmp_path / f"run/seed_0/{n}.pt") for n in ("best", "last"))
    assert best["best_acc"] == max(accs) == summary["best_test_acc"][0]
    assert best["epoch"] == 1 + accs.index(max(accs)) and last["epoch"] == 3


def test_metrics_truncation_drops_half_lines_repeats_and_later_epochs(tmp_path):
    from mpbn.engine.metrics import MetricsWriter

    writer = MetricsWriter(tmp_path, enabled=True)
    lines = ['{"epoch": 1, "a": 1}', '{"epoch": 2, "a": 2}', '{"epoch": 2, "a": 3}',
             '{"epoch": 3, "a": 4}', '{"epoch": 4, "a"']
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines))
    writer.truncate_after(3)
    kept = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert kept == [{"epoch": 1, "a": 1}, {"epoch": 2, "a": 3}, {"epoch": 3, "a": 4}]
    writer.close()


def test_nan_gradient_with_finite_weights_stops_naming_the_gradient(
        tmp_path, tiny_config, monkeypatch):
    # The NaN is put into a gradient after the optimizer step (so the weights stay finite):
    # only the gradient check can see it, at the log interval of that step.
    cfg = apply_overrides(tiny_config, dict(epochs=3))
    built = _capture_model(monkeypatch)
    steps = []

    def poison_gradient(optimizer, args, kwargs):
        steps.append(1)
        if len(steps) == 6:  # epoch 2, step 2 (4 steps an epoch), a log_interval step
            name, param = next(iter(built[-1].named_parameters()))
            poisoned.append(name)
            param.grad[(0,) * param.grad.dim()] = float("nan")

    from torch.optim.optimizer import register_optimizer_step_post_hook

    poisoned = []
    handle = register_optimizer_step_post_hook(poison_gradient)
    try:
        with pytest.raises(TrainingDiverged) as error:
            run(cfg, RunOptions(out=tmp_path, quiet=True))
    finally:
        handle.remove()
    assert f"first non-finite tensor grad of {poisoned[0]};" in str(error.value)
    assert "epoch 2, step 2 (global step 6" in str(error.value)
    last = load_checkpoint(tmp_path / "seed_0/last.pt")
    assert last["epoch"] == 1
    assert _all_tensors_finite(last) == []


def test_after_step_hooks_see_every_step_with_the_stepped_weights(tmp_path, tiny_config):
    seen, last_weights = [], {}

    def record(event, model=None, global_step=0, **_):
        if event == "after_step":
            seen.append(global_step)
            last_weights.update({k: v.clone() for k, v in model.state_dict().items()})

    run(tiny_config, RunOptions(out=tmp_path, quiet=True, hooks=[record]))
    assert seen == list(range(1, 2 * (256 // 64) + 1))
    saved = load_checkpoint(tmp_path / "seed_0/last.pt")["model"]
    assert saved.keys() == last_weights.keys()
    assert all(torch.equal(saved[k], last_weights[k]) for k in saved)  # after the last step
