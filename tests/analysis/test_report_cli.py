"""End to end: a hand-made run directory (real zoo model, bundled digits) -> report and CLI."""

import json

import pytest
import torch

from mpbn.analysis.report import ReportOptions, build_report, mean_std_text

models = pytest.importorskip("mpbn.models")


def _make_run(root, name, norm, mpbn, with_checkpoint=True):
    from mpbn.engine.config import TrainConfig, apply_overrides

    cfg = apply_overrides(TrainConfig(), dict(name=name, model="small_cnn", dataset="digits",
                                              timesteps=3, norm=norm, mpbn=mpbn, epochs=2,
                                              seeds=2))
    run = root / name
    accs = [[0.5, 0.8], [0.6, 0.9]]
    for seed, seed_accs in enumerate(accs):
        d = run / f"seed_{seed}"
        d.mkdir(parents=True)
        (d / "metrics.jsonl").write_text("".join(
            json.dumps({"epoch": e + 1, "test_acc": a, "test_loss": 1 - a}) + "\n"
            for e, a in enumerate(seed_accs)))
        if with_checkpoint:
            torch.manual_seed(seed)
            model = models.create("small_cnn", num_classes=10, in_channels=1, input_size=(8, 8),
                                  timesteps=3, norm=norm, mpbn=mpbn)
            torch.save({"model": model.state_dict(), "config": json.dumps(cfg.to_dict()),
                        "data_info": {"num_classes": 10, "input_shape": [1, 8, 8]}},
                       d / "last.pt")
    (run / "config.json").write_text(cfg.to_json())
    (run / "summary.json").write_text(json.dumps({
        "name": name, "config": cfg.to_dict(), "seeds": [0, 1], "final_test_acc": [0.8, 0.9],
        "best_test_acc": [0.8, 0.9], "folded_test_acc": [0.8, 0.9]}))
    return run


def test_mean_std_text_matches_numpy():
    assert mean_std_text([0.8, 0.9], scale=100) == "85.00 ± 7.07"  # np.std(ddof=1)
    assert mean_std_text([]) == "-" and mean_std_text([1.234]) == "1.23"


def test_report_has_every_section_and_survives_missing_pieces(tmp_path, capsys):
    full = _make_run(tmp_path, "bntt_mpbn", "bntt", "channel")
    bare = _make_run(tmp_path, "no_ckpt", "bn", None, with_checkpoint=False)
    opts = ReportOptions(n_samples=32, batch_size=32, landscape_points=3, sigmas=(0.0, 0.2),
                         epsilons=(0.0, 0.05), thresholds=(0.0, 0.5))
    path = build_report([full, bare], tmp_path / "report", opts)
    text = path.read_text()
    assert "| bntt_mpbn | small_cnn | bntt | channel | 3 | digits | 2 | 85.00 ± 7.07 |" in text
    assert "no_ckpt: no checkpoint" in text
    for title in ("Convergence", "Loss landscape", "Spike activity", "Energy",
                  "BNTT gamma through time", "Temporal early exit", "Robustness",
                  "MPBN fold report"):
        assert f"## {title}" in text
    assert "Not available" not in text, text
    assert "spike mismatch folded vs unfolded 0 of" in text
    for image in [line.split("](")[1][:-1] for line in text.splitlines() if line.startswith("![")]:
        assert (path.parent / image).is_file(), image
    # Progress: one line as each section starts and one as it ends, with its time.
    printed = capsys.readouterr().out
    for title in ("Convergence", "Loss landscape", "Robustness"):
        assert f"report: {title} ..." in printed and f"report: {title} done, " in printed


def test_cli_registers_and_runs(tmp_path, capsys):
    from mpbn.cli import main

    run = _make_run(tmp_path, "mpbn_run", "bn", "channel")
    assert main(["analyze", "curves", str(run), "--out", str(tmp_path / "c")]) == 0
    printed = capsys.readouterr().out  # what it is doing, then how long it took
    assert f"analyze curves: {run} ..." in printed and "analyze curves: done in " in printed
    saved = json.loads((tmp_path / "c" / "curves.json").read_text())
    assert saved["mpbn_run"]["test_acc"]["mean"] == pytest.approx([0.55, 0.85])
    assert main(["analyze", "gamma", str(run), "--out", str(tmp_path / "g")]) == 0
    assert main(["analyze", "fold-report", str(run), "--out", str(tmp_path / "f"),
                 "--n-samples", "16"]) == 0
    assert json.loads((tmp_path / "f" / "fold.json").read_text())["mismatch"][
        "total_mismatches"] == 0
    assert main(["report", str(run), "--out", str(tmp_path / "r"), "--n-samples", "16",
                 "--skip", "landscape", "robustness", "early-exit"]) == 0
    assert "## Loss landscape" not in (tmp_path / "r" / "report.md").read_text()


def test_compare_of_unlike_runs_warns_on_stdout_and_in_the_page(tmp_path, capsys):
    base = _make_run(tmp_path, "base", "bn", None, with_checkpoint=False)
    other = _make_run(tmp_path, "other", "bntt", "channel", with_checkpoint=False)
    opts = ReportOptions(sections=("curves",), compare=True)
    text = build_report([base, other], tmp_path / "r", opts).read_text()
    line = ("other differs from the baseline base in more than one config value: "
            "model.norm: bn -> bntt; model.mpbn: none -> channel")
    assert line in text and f"warning: {line}" in capsys.readouterr().out
    assert "The runs' configs differ in: `model.norm`, `model.mpbn`" in text
    opts = ReportOptions(sections=("curves",), compare=True, variables=["model.norm",
                                                                          "model.mpbn"])
    assert "Warning" not in build_report([base, other], tmp_path / "r2", opts).read_text()
