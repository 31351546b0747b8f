"""scripts/check_event_readers.py on recordings the test writes: the stats it reports are those
of the written events, and its probe separates classes whose events differ."""

import json
import runpy
from pathlib import Path

import numpy as np
import pytest

from .writers import write_aedat, write_bs2

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check_event_readers.py"


def test_the_reported_stats_are_the_written_events_and_classes_separate(tmp_path, capsys):
    rng = np.random.default_rng(0)
    aedat = tmp_path / "aedat"
    aedat.mkdir()
    write_aedat(aedat / "a.aedat", [5, 90, 17], [3, 60, 120], [0, 1, 1], [10, 20, 20])
    write_aedat(aedat / "b.aedat", [0, 1], [2, 2], [1, 1], [5, 4])  # time runs backwards
    nmnist = tmp_path / "nmnist"
    nmnist.mkdir()
    rows = ["file\tlabel\tsplit"]
    for label in range(10):
        for index in range(4):
            # Each class lights its own 3-column band; both polarities, rising times.
            count = 60
            x = rng.integers(3 * label, 3 * label + 3, count)
            y = rng.integers(0, 34, count)
            p = np.arange(count) % 2
            name = f"{label}_{index}.bs2"
            write_bs2(nmnist / name, x, y, p, np.arange(count) * 5000)
            rows.append(f"{name}\t{label}\t{'test' if index == 3 else 'train'}")
    (nmnist / "labels.tsv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    runpy.run_path(str(SCRIPT), run_name="not_main")["main"](
        ["--aedat2", str(aedat), "--nmnist", str(nmnist), "--out", str(out)])

    report = json.loads((out / "event_readers.json").read_text())
    a, b = report["aedat2"]
    assert (a["file"], a["events"], a["x"], a["y"], a["polarities"]) == (
        "a.aedat", 3, [5, 90], [3, 120], [0, 1])
    assert a["time_non_decreasing"] and not b["time_non_decreasing"]
    assert a["duration_s"] == pytest.approx(10e-6)
    assert b["polarities"] == [1]
    n = report["nmnist"]
    assert n["samples"] == 40 and n["events"] == [60, 60, 60]
    assert n["all_inside_sensor"] and n["all_both_polarities"] and n["all_time_non_decreasing"]
    assert n["logistic_regression"]["train"] == 30 and n["logistic_regression"]["test"] == 10
    assert n["logistic_regression"]["test_acc"] == 1.0
    for image in ("dvs128_orientation.png", "nmnist_class_means.png"):
        assert (out / image).stat().st_size > 0
    assert "| a.aedat | 3 | 5-90 | 3-120 | [0, 1] | True | 0.0 |" in capsys.readouterr().out
