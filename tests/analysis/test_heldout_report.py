"""Real held-out runs (digits, data.holdout, 2 epochs, 2 seeds) -> curves, report, comparison,
issue 18's table script, and runs still going (a seed training, a seed missing)."""

import json
import runpy
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from mpbn.analysis.compare import (
    compare_runs,
    mismatch_text,
    runs_table,
    seed_values,
    seeds_table,
    welch_ci,
)
from mpbn.analysis.curves import analyze_curves
from mpbn.analysis.io import load_run
from mpbn.analysis.report import ReportOptions, build_report
from mpbn.cli import main
from mpbn.engine.metrics import allocator

pytest.importorskip("matplotlib")
SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture(scope="module")
def heldout_runs(tmp_path_factory):
    """Two held-out runs named after issue 18's T = 1 presets (baseline, MPBN channel)."""
    root = tmp_path_factory.mktemp("fast")
    runs = {}
    for variant, mpbn in (("baseline", "none"), ("mpbn-channel", "channel")):
        out = root / f"cifar10-fast-t1-{variant}"
        assert main(["train", "--set", "data.holdout=120", "optim.epochs=2", "run.seeds=2",
                     "run.tta_flip=true", "model.timesteps=1", "data.test_subset=200",
                     "name=" + out.name, "--mpbn", mpbn, "--quiet", "--out", str(out)]) == 0
        runs[variant] = out
    return root, runs


def _summary(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


def test_curves_of_a_heldout_run_are_on_the_heldout_split(heldout_runs, tmp_path):
    _, runs = heldout_runs
    out = analyze_curves([runs["baseline"], runs["mpbn-channel"]], tmp_path)
    assert out["keys"] == ["val_acc", "val_loss"]
    metrics = [[json.loads(line) for line in (runs["baseline"] / f"seed_{s}/metrics.jsonl")
                .read_text().splitlines()] for s in (0, 1)]
    assert not any(k.startswith("test_") for m in metrics for r in m for k in r)
    c = out["curves"]["cifar10-fast-t1-baseline"]["val_acc"]
    assert c["epoch"] == [1, 2] and c["n_seeds"] == 2
    assert c["mean"] == pytest.approx([(a["val_acc"] + b["val_acc"]) / 2
                                       for a, b in zip(*metrics, strict=True)])
    assert (tmp_path / "curves.png").stat().st_size > 0
    # A run without a held-out split and one with: both pairs, each panel its own split.
    assert main(["analyze", "curves", str(runs["baseline"]), "--keys", "val_acc", "spike_rate",
                 "-o", str(tmp_path / "k")]) == 0
    assert set(json.loads((tmp_path / "k/curves.json").read_text())[
        "cifar10-fast-t1-baseline"]) == {"val_acc", "spike_rate"}


def test_report_table_and_comparison_come_from_the_run_files(heldout_runs, tmp_path):
    _, runs = heldout_runs
    base, var = runs["baseline"], runs["mpbn-channel"]
    opts = ReportOptions(n_samples=16, batch_size=16, landscape_points=3, compare=True,
                         sections=("curves", "landscape", "spikes", "fold"))
    text = build_report([base, var], tmp_path / "r", opts).read_text()
    s = _summary(base)
    final, val, flip = (100 * sum(s[k]) / 2 for k in ("final_test_acc", "final_val_acc",
                                                       "test_acc_flip"))
    assert "test acc, flip TTA (%)" in text and "held-out acc, final (%)" in text
    row = next(line for line in text.splitlines()
               if line.startswith("| cifar10-fast-t1-baseline | small_cnn"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert [float(cells[i].split(" ± ")[0]) for i in (7, 8, 10)] == pytest.approx(
        [final, val, flip], abs=0.006)
    assert cells[12].split(" (")[0] == ", ".join(str(m) for m in s["spike_mismatch"])
    assert cells[12] == mismatch_text(load_run(base))  # the counts, their largest rate
    assert "Held-out accuracy and loss per epoch" in text and "Test accuracy and loss" not in text
    assert "## Comparison with the baseline" in text and "Not available" not in text, text
    w = welch_ci(s["final_test_acc"], _summary(var)["final_test_acc"])
    assert f"[{100 * w['low']:+.2f}, {100 * w['high']:+.2f}]" in text
    for seed, commit in enumerate(s["commits"]):
        assert f"| cifar10-fast-t1-baseline | {seed} | finished |" in text and commit[:12] in text
    assert "## Loss landscape" in text and "## MPBN fold report" in text


def test_runs_still_going_mark_training_and_missing_seeds(heldout_runs, tmp_path):
    _, runs = heldout_runs
    partial = tmp_path / "cifar10-fast-t1-mpbn-channel"
    shutil.copytree(runs["mpbn-channel"], partial)
    (partial / "summary.json").unlink()
    (partial / "seed_1/result.json").unlink()  # seed 1 still training
    run = load_run(partial)
    done = _summary(runs["mpbn-channel"])
    assert seed_values(run, "final_test_acc") == [done["final_test_acc"][0]]
    assert compare_runs(load_run(runs["baseline"]), run)["variant"]["seeds"] == [0]
    assert "| 1/2 (training 1) |" in runs_table([run], ["x"])
    assert "| x | 1 | training, 2 epoch(s) of 2 |" in seeds_table([run], ["x"])
    shutil.rmtree(partial / "seed_1")
    run = load_run(partial)
    assert "| 1/2 (missing 1) |" in runs_table([run], ["x"])
    assert "| x | 1 | missing |" in seeds_table([run], ["x"])
    finished_row = next(line for line in seeds_table([run], ["x"]).splitlines()
                        if line.startswith("| x | 0 | finished |"))
    assert f"| cpu, {torch.get_num_threads()} threads, eager, {allocator()} |" in finished_row
    # No seed finished: held-out numbers come from the epochs, the test accuracy does not exist.
    (partial / "seed_0/result.json").unlink()
    run = load_run(partial)
    assert seed_values(run, "final_test_acc") == []
    last = json.loads((partial / "seed_0/metrics.jsonl").read_text().splitlines()[-1])
    assert seed_values(run, "final_val_acc") == [pytest.approx(last["val_acc"])]


def test_fast_ablation_tables_script(heldout_runs, capsys):
    root, runs = heldout_runs
    runpy.run_path(str(SCRIPTS / "fast_ablation_tables.py"), run_name="not_main")["main"](root)
    text = capsys.readouterr().out
    assert "Not started (no run directory): `cifar10-fast-t1-mpbn-element`" in text
    assert "`cifar10-fast-t2-baseline`" in text
    assert "| mpbn-channel − baseline |" in text and "+1.82 (ResNet20)" in text
    s = _summary(runs["mpbn-channel"])
    for seed in (0, 1):
        assert f"| mpbn-channel | {seed} | finished | {100 * s['final_test_acc'][seed]:.2f} |" \
            in text
        ran_on = f"cpu, {s['runtimes'][seed]['threads']} threads, eager, {allocator()}"
        assert f"| {s['train_time'][seed] / 60:.1f} | {ran_on} | `{s['commits'][seed][:12]}" \
            in text


def test_make_fast_results_script(heldout_runs, tmp_path):
    if shutil.which("mpbn") is None:
        pytest.skip("the mpbn command is not installed")
    root, _ = heldout_runs
    out = tmp_path / "pages"
    combined = out / "fast-t1/landscape/landscape.svg"  # scripts/combine_landscapes.py's
    combined.parent.mkdir(parents=True)
    combined.write_text("<svg/>")
    done = subprocess.run(
        ["bash", str(SCRIPTS / "make_fast_results.sh"), str(root), str(out), "--n-samples", "8",
         "--skip", "landscape", "spikes", "energy", "fold"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "skip fast-t2" in done.stdout
    assert "Welch" in (out / "tables.md").read_text()
    page = (out / "fast-t1/report.md").read_text()
    assert "## Comparison with the baseline" in page and (out / "fast-t1/images/curves.png")
    assert list(out.rglob("*.svg")) == [combined]  # report's SVGs go, the combined plot stays
    # The script's own --skip and the caller's add up.
    assert "## Robustness" not in page and "## Loss landscape" not in page


def test_runs_without_holdout_keep_the_test_curves_and_table(heldout_runs, tmp_path):
    _, runs = heldout_runs
    plain = tmp_path / "plain"
    for seed, accs in enumerate([[0.5, 0.7], [0.6, 0.8]]):
        (plain / f"seed_{seed}").mkdir(parents=True)
        (plain / f"seed_{seed}/metrics.jsonl").write_text("".join(
            json.dumps({"epoch": e + 1, "test_acc": a, "test_loss": 1 - a}) + "\n"
            for e, a in enumerate(accs)))
    (plain / "config.json").write_text(json.dumps({"name": "plain"}))
    run = load_run(plain)
    assert seed_values(run, "final_test_acc") == [0.7, 0.8]  # still training: last epochs
    text = build_report([plain], tmp_path / "r", ReportOptions(sections=("curves",))).read_text()
    assert "| final acc (%) | best acc (%) | folded acc (%) |" in text
    assert "| 75.00 ± 7.07 | 75.00 ± 7.07 | - |" in text and "held-out" not in text
    mixed = analyze_curves([runs["baseline"], plain], tmp_path / "mixed")
    assert mixed["keys"] == ["val_acc", "val_loss", "test_acc", "test_loss"]
    assert mixed["curves"]["plain"]["val_acc"]["epoch"] == []
