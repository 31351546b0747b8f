"""The `mpbn` command: the no-argument demo, bad input as one-line errors, eval and fold."""

from __future__ import annotations

import json

import pytest
import torch

import mpbn
from mpbn.cli import main
from mpbn.engine.deploy import load_folded
from mpbn.engine.train import load_model_from_checkpoint

TINY = ["--set", "train_subset=200", "test_subset=100", "timesteps=2", "--epochs", "2",
        "--quiet"]


def test_no_argument_train_runs_the_demo(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train"]) == 0
    out = capsys.readouterr().out
    assert "acc unfolded" in out and "acc folded" in out and "spike mismatch" in out
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("default-")
    summary = json.loads((run_dir / "summary.json").read_text())
    model = summary["config"]["model"]
    assert model["name"] == "small_cnn" and model["mpbn"] == "channel"
    assert summary["final_test_acc"][0] > 0.8
    assert summary["folded_test_acc"] == summary["final_test_acc"]
    assert summary["spike_mismatch"] == [0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "--out", str(out), "--force", *TINY]) == 0
    return out


@pytest.mark.parametrize("argv, message", [
    (["train", "no-such-preset"], "unknown preset 'no-such-preset'"),
    (["train", "--model", "nope"], "unknown model 'nope'; valid:"),
    (["train", "--dataset", "nope"], "unknown dataset 'nope'; valid:"),
    (["train", "--timesteps", "0"], "timesteps must be >= 1"),
    (["train", "--lr", "-0.1"], "lr must be a positive number"),
    (["train", "--set", "epochs"], "--set expects key=value"),
    (["train", "--mpbn", "row"], "mpbn must be one of none, channel, element"),
    (["train", "--dataset", "cifar10", "--data-root", "/no/such/dir"], "does not exist"),
    (["train", "--dataset", "smnist", "--timesteps", "784", "--data-root", "."],
     "expected train-images-idx3"),
    (["eval", "/no/such.pt"], "does not exist"),
    (["train", "--resume"], "--resume needs --out"),
    (["train", "--device", "gpu"], "unknown device 'gpu'; use auto, cpu, cuda or cuda:N"),
    (["eval", "/no/such.pt", "--device", "gpu"], "unknown device 'gpu'; use auto, cpu, cuda"),
    (["train", "--set", "epoch=2"], "unknown config key 'epoch' (did you mean epochs "
     "(optim.epochs)?)"),
    (["train", "mpbn-resnet19-cifar10-t3"], "(did you mean mpbn-resnet19-cifar10-t2,"),
    (["eval", "."], "is a folder with no checkpoint: give a checkpoint file, a run folder"),
])
def test_bad_input_is_a_one_line_error(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mpbn: error: ") and "\n" not in err and "Traceback" not in err
    assert message in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_data_root_that_is_a_file_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data_batch_1").write_bytes(b"")
    assert main(["train", "--dataset", "cifar10", "--data-root", "data_batch_1"]) == 2
    err = capsys.readouterr().err
    assert "mpbn: error: data root data_batch_1 is a file, not a folder; give the folder" in err
    assert err.count("\n") == 1 and not any((tmp_path / "runs").iterdir())


def test_repeated_set_merges_and_the_later_value_wins():
    from mpbn.cli import _train_config, build_parser

    args = build_parser().parse_args(["train", "--set", "lr=0.5", "batch_size=32", "--set",
                                      "epochs=1", "--set", "lr=0.25"])
    cfg = _train_config(args)
    assert (cfg.optim.lr, cfg.data.batch_size, cfg.optim.epochs) == (0.25, 32, 1)


def test_repeated_eval_set_merges(trained, capsys):
    assert main(["eval", str(trained / "seed_0/last.pt"), "--set", "test_subset=20",
                 "--set", "data.eval_batch_size=7"]) == 0
    assert "20 test samples" in capsys.readouterr().out


def test_header_shows_the_effective_settings_of_a_preset(tmp_path, capsys):
    # The data root is missing, so the run stops after its header, before any epoch.
    argv = ["train", "mpbn-resnet19-cifar10-t2", "--set", "epochs=3", "--data-root",
            str(tmp_path / "missing"), "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    out = capsys.readouterr().out
    assert out.startswith("run mpbn-resnet19-cifar10-t2 (preset: MPBN Table 2: ")
    assert "  overrides  data.root=" in out and "optim.epochs=3" in out
    assert "  model      resnet19, norm bn, MPBN channel, T=2\n" in out
    assert "  training   3 epochs x 3 seeds (0, 1, 2), sgd lr 0.1\n" in out
    assert "  device     cpu, 1 process\n" in out and f"writing to {tmp_path / 'run'}" in out
    # Whether TensorBoard mirrors the metrics, said up front.
    assert ("TensorBoard not installed: pip install mpbn[tensorboard]" in out
            or "TensorBoard logs in seed_*/tensorboard" in out)


def test_header_of_the_demo_names_the_dataset_actually_used(tmp_path, capsys):
    argv = ["train", "--dataset", "nmnist", "--data-root", str(tmp_path / "missing"),
            "--seeds", "2", "--set", "test_subset=50", "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    out = capsys.readouterr().out
    assert "overrides  data.name=nmnist," in out and "run.seeds=2" in out
    assert f"  data       nmnist from {tmp_path / 'missing'} (test subset 50), batch 64" in out
    assert "1 epoch" not in out and "x 2 seeds (0, 1)" in out


def test_eval_of_a_run_folder_uses_its_checkpoint(trained, capsys):
    assert main(["eval", str(trained)]) == 0
    assert f"checkpoint      {trained / 'seed_0/last.pt'} (epoch 2" in capsys.readouterr().out


def test_eval_of_a_run_folder_with_several_seeds_lists_them(tmp_path, trained, capsys):
    for seed in (0, 1):
        (tmp_path / f"seed_{seed}").mkdir()
        (tmp_path / f"seed_{seed}/best.pt").write_bytes((trained / "seed_0/best.pt").read_bytes())
    assert main(["eval", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert (f"mpbn: error: run folder {tmp_path} has 2 seeds; give one checkpoint: "
            f"{tmp_path / 'seed_0/best.pt'}, {tmp_path / 'seed_1/best.pt'}\n") == err


def test_existing_output_is_not_overwritten(trained, capsys):
    before = (trained / "summary.json").read_text()
    assert main(["train", "--out", str(trained), *TINY]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert (trained / "summary.json").read_text() == before


def test_resume_with_changed_config_is_refused(trained, capsys):
    assert main(["train", "--out", str(trained), "--resume", "--lr", "0.5", "--quiet"]) == 2
    assert "changed config (optim.lr: 0.1 -> 0.5)" in capsys.readouterr().err


def test_resume_of_a_finished_run_reuses_its_results(trained, capsys):
    assert main(["train", "--out", str(trained), "--resume", "--quiet"]) == 0
    assert "acc unfolded" in capsys.readouterr().out


def test_corrupt_checkpoint_is_named_in_the_error(tmp_path, trained, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes((trained / "seed_0/last.pt").read_bytes()[:1000])
    assert main(["eval", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "corrupt or truncated" in err and err.count("\n") == 1


def test_checkpoint_of_another_model_is_refused(tmp_path, trained, capsys):
    assert main(["eval", str(trained / "seed_0/last.pt"), "--set", "mpbn=none"]) == 2
    assert "does not fit this model" in capsys.readouterr().err


def test_eval_prints_unfolded_and_folded_accuracy(trained, capsys):
    assert main(["eval", str(trained / "seed_0/best.pt")]) == 0
    out = capsys.readouterr().out
    assert "acc unfolded" in out and "acc folded" in out and "spike mismatch  0" in out


def test_eval_fold_check_recomputes_the_mismatch_in_float64(trained, capsys):
    assert main(["eval", str(trained), "--fold-check", "float64"]) == 0
    out = capsys.readouterr().out
    assert "spike entries on the first test batch (float32)" in out
    assert "in float64      0 of " in out and "rounding at the threshold" in out


def test_float64_mismatch_leaves_the_model_as_it_was(trained):
    import torch

    from mpbn.engine.distributed import DistInfo
    from mpbn.engine.loading import load_model
    from mpbn.engine.train import build_loaders, float64_spike_mismatch

    model, cfg, _ = load_model(trained / "seed_0/last.pt")
    _, test_loader, _ = build_loaders(cfg, 0, DistInfo(device=torch.device("cpu")))
    report = float64_spike_mismatch(model, test_loader, cfg)
    assert report.total_mismatches == 0 and sum(report.totals) > 0
    assert next(model.parameters()).dtype == torch.float32


def test_fold_writes_a_deploy_model_that_rebuilds(tmp_path, trained, capsys):
    out = tmp_path / "deploy"
    assert main(["fold", str(trained / "seed_0/last.pt"), "-o", str(out)]) == 0
    assert (out / "model.safetensors").exists() and (out / "model.json").exists()
    assert main(["fold", str(trained / "seed_0/last.pt"), "-o", str(out)]) == 2
    model, cfg, _ = load_model_from_checkpoint(trained / "seed_0/last.pt")
    deployed = load_folded(out)
    assert not any(m.membrane_norm is not None for m in deployed.modules()
                   if hasattr(m, "membrane_norm"))
    x = torch.rand(16, 1, 8, 8)
    torch.testing.assert_close(deployed(x), model(x))


def test_presets_lists_every_preset(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in ("mpbn-ablation-resnet20-cifar10-t1-baseline", "mpbn-resnet19-cifar10-t2",
                 "mpbn-table6-resnet20-cifar100-t4-element", "bntt-vgg9-cifar10-t25",
                 "bntt-table5-vgg9-cifar10-ln", "cifar10-r20narrow-t2-mpbn-element"):
        assert name in out


def test_fold_nir_writes_a_graph_that_simulates_like_the_model(tmp_path, trained):
    from mpbn.export import read_nir, simulate_nir

    out = tmp_path / "deploy_nir"
    assert main(["fold", str(trained / "seed_0/last.pt"), "-o", str(out), "--nir"]) == 0
    graph = read_nir(out / "model.nir")
    model, _, _ = load_model_from_checkpoint(trained / "seed_0/last.pt")
    folded = mpbn.fold(model).double()
    x = torch.rand(8, 1, 8, 8, dtype=torch.float64)
    x_seq = x.unsqueeze(0).expand(folded.timesteps, *x.shape)
    torch.testing.assert_close(simulate_nir(graph, x_seq), folded(x))


@pytest.mark.parametrize("target", ["snntorch", "norse"])
def test_fold_nir_target_writes_a_graph_with_the_same_outputs(tmp_path, trained, target):
    from mpbn.export import read_nir, simulate_nir

    out = tmp_path / f"deploy_{target}"
    argv = ["fold", str(trained / "seed_0/last.pt"), "-o", str(out), "--nir", "--nir-target",
            target]
    code = main(argv)
    if code == 2:  # a trained threshold snnTorch cannot express: refused, nothing written
        assert not out.exists() or not any(out.iterdir())
        return
    graph = read_nir(out / "model.nir")
    assert graph.metadata["target"] == target
    model, _, _ = load_model_from_checkpoint(trained / "seed_0/last.pt")
    folded = mpbn.fold(model).double()
    x = torch.rand(8, 1, 8, 8, dtype=torch.float64)
    x_seq = x.unsqueeze(0).expand(folded.timesteps, *x.shape)
    torch.testing.assert_close(simulate_nir(graph, x_seq), folded(x))


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"mpbn {mpbn.__version__}"


def test_summary_table_names_the_held_out_column_and_flip_tta():
    from mpbn.cli import format_summary

    base = {"seeds": [0, 1], "final_test_acc": [0.8, 0.9], "folded_test_acc": [0.8, 0.9],
            "best_test_acc": [0.85, 0.95], "spike_mismatch": [0, 0], "train_time": [1.0, 2.0],
            "mean": 0.85, "std": 0.07}
    old = format_summary(base).splitlines()
    assert old[0].split() == ["seed", "acc", "unfolded", "acc", "folded", "best", "acc",
                              "spike", "mismatch", "time"]
    assert "85.00%" in old[1]
    held = {**base, "best_test_acc": [None, None], "final_val_acc": [0.7, 0.75],
            "best_val_acc": [0.71, 0.76], "test_acc_flip": [0.81, 0.91]}
    lines = format_summary(held).splitlines()
    assert "best held-out" in lines[0] and "flip TTA" in lines[0]
    assert lines[1].split()[1:5] == ["80.00%", "80.00%", "81.00%", "71.00%"]
    assert lines[-1].startswith("mean±std")
