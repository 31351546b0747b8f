"""scripts/reproduce_fast.sh: a run per preset, reused on the next call, a record of each work
period's reference epoch, the records KEEP holds and restores on a fresh machine (a tiny
stand-in of issue 18's runs; one seed, to keep CI short)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "reproduce_fast.sh"


@pytest.mark.skipif(sys.platform == "win32", reason="a bash script")
def test_the_script_runs_and_resumes(fake_cifar10, tmp_path):
    env = {**os.environ, "SEEDS": "1", "OMP_NUM_THREADS": "1",
           "PRESETS": "cifar10-fast-t1-mpbn-channel",
           "REFERENCE": "--steps 1 --warmup 1 --threads 1",
           "EXTRA": "--quiet --no-fold --set optim.epochs=1 data.holdout=50 data.batch_size=50 "
                    'model.kwargs={"widths":[4,8]} run.tta_flip=false',
           "KEEP": str(tmp_path / "kept"), "REPORT": "--skip landscape spikes energy"}
    out, kept = tmp_path / "fast", tmp_path / "kept" / "cifar10-fast-t1-mpbn-channel"
    first = subprocess.run(["bash", str(SCRIPT), str(fake_cifar10), str(out)], env=env,
                           capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    for preset in ("cifar10-fast-t1-mpbn-channel",):
        summary = json.loads((out / preset / "summary.json").read_text())
        assert summary["seeds"] == [0]
        assert all(v is not None for v in summary["final_val_acc"])
    records = (out / "reference_epochs.jsonl").read_text().splitlines()
    assert len(records) == 2  # before and after the run
    assert all(json.loads(line)["budget_minutes"] > 0 for line in records)
    again = subprocess.run(["bash", str(SCRIPT), str(fake_cifar10), str(out)], env=env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("(done)") == 1  # the finished seed is reused
    assert len((out / "reference_epochs.jsonl").read_text().splitlines()) == 3  # no run: 1
    # KEEP: the records without checkpoints, and seed 0's analysis page.
    kept_files = sorted(str(p.relative_to(kept)) for p in kept.rglob("*") if p.is_file()
                        and "analysis" not in p.parts)
    assert kept_files == ["config.json", "seed_0/metrics.jsonl", "seed_0/result.json",
                          "summary.json"]
    assert (kept / "analysis" / "report.md").is_file()
    assert json.loads((kept / "seed_0" / "result.json").read_text()) == json.loads(
        (out / "cifar10-fast-t1-mpbn-channel" / "seed_0" / "result.json").read_text())
    # A fresh machine (no OUT_DIR): the records come back, the finished seed is reused.
    subprocess.run(["rm", "-r", str(out)], check=True)
    fresh = subprocess.run(["bash", str(SCRIPT), str(fake_cifar10), str(out)], env=env,
                           capture_output=True, text=True, timeout=600)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert "restored cifar10-fast-t1-mpbn-channel's records" in fresh.stdout
    assert fresh.stdout.count("(done)") == 1
    assert len((tmp_path / "kept" / "reference_epochs.jsonl").read_text().splitlines()) == 4


@pytest.mark.skipif(sys.platform == "win32", reason="a bash script")
def test_until_stops_before_a_run_that_would_end_too_late(fake_cifar10, tmp_path):
    preset = "cifar10-fast-t1-mpbn-channel"
    out = tmp_path / "fast"
    (out / preset / "seed_0").mkdir(parents=True)
    (out / preset / "seed_0" / "result.json").write_text(json.dumps({"train_time": 30.0}))
    env = {**os.environ, "SEEDS": "2", "OMP_NUM_THREADS": "1", "PRESETS": preset,
           "REFERENCE": "--steps 1 --warmup 1 --threads 1", "MARGIN_MIN": "5",
           "UNTIL": f"@{int(time.time()) + 120}"}

    def call(**extra):
        return subprocess.run(["bash", str(SCRIPT), str(fake_cifar10), str(out)],
                              env={**env, **extra}, capture_output=True, text=True, timeout=600)

    # 30 s of train_time + 5 min of margin: about 6 min, more than the 2 left.
    stopped = call()
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    assert f"skip {preset} seed 0 (done)" in stopped.stdout
    assert (f"stopping before {preset} seed 1: it needs about 6 min and would end after "
            "UNTIL=@") in stopped.stdout
    assert not (out / preset / "seed_1").exists()
    # No finished seed to go by: ESTIMATE_MIN.
    (out / preset / "seed_0" / "result.json").unlink()
    assert "seed 0: it needs about 7 min" in call(ESTIMATE_MIN="7").stdout
    assert not (out / preset / "seed_0" / "metrics.jsonl").exists()  # nothing trained
    minutes = call(MARGIN_MIN="soon")
    assert minutes.returncode != 0
    assert "MARGIN_MIN='soon' and ESTIMATE_MIN='100' must be minutes" in minutes.stderr
    bad = call(UNTIL="half past never")
    assert bad.returncode == 2 and "UNTIL=half past never: not a time date -d reads" in bad.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="a bash script")
def test_every_python_runs_this_checkouts_code(fake_cifar10, tmp_path):
    # An `mpbn` installed from another checkout shadowed this one for the benchmark the script
    # starts (`python3 benchmarks/x.py` puts benchmarks/, not the repository, first on sys.path):
    # the records would name this checkout's commit for code it did not run. A stand-in that
    # refuses to import plays the other checkout.
    shadow = tmp_path / "elsewhere" / "mpbn"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('mpbn from another checkout')\n")
    env = {**os.environ, "SEEDS": "1", "OMP_NUM_THREADS": "1",
           "PRESETS": "cifar10-fast-t1-baseline", "ESTIMATE_MIN": "5",
           "REFERENCE": "--steps 1 --warmup 1 --threads 1",
           "UNTIL": f"@{int(time.time()) + 60}",
           "PYTHONPATH": str(shadow.parent)}
    out = tmp_path / "fast"
    done = subprocess.run(["bash", str(SCRIPT), str(fake_cifar10), str(out)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "another checkout" not in done.stderr
    assert len((out / "reference_epochs.jsonl").read_text().splitlines()) == 1
    assert "stopping before cifar10-fast-t1-baseline seed 0" in done.stdout
