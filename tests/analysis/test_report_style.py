"""Report readability (issue 16): one colour per run, legends off the data, labels that carry
the config differences, warnings for unlike comparisons, shared documented defaults."""

import argparse
import copy
import json

import numpy as np
import pytest

from mpbn.analysis import defaults
from mpbn.analysis.io import Run
from mpbn.analysis.labels import comparison_warnings, config_differences, run_labels, slug
from mpbn.analysis.report import ReportOptions
from mpbn.analysis.style import PALETTE, place_legend, run_colors, styled

pytest.importorskip("matplotlib")


def _run(tmp_path, folder, name="default", **changes):
    from mpbn.engine.config import TrainConfig, apply_overrides

    cfg = apply_overrides(TrainConfig(), {"name": name, **changes}).to_dict()
    path = tmp_path / folder
    path.mkdir(exist_ok=True)
    return Run(path=path, name=name, config=cfg)


def test_labels_carry_what_the_names_do_not(tmp_path):
    a = _run(tmp_path, "r1", **{"model.mpbn": "channel", "model.timesteps": 2})
    b = _run(tmp_path, "r2", **{"model.mpbn": None, "model.timesteps": 2,
                                "data.root": "/elsewhere", "run.seeds": 3, "run.device": "cpu"})
    assert config_differences([a.config, b.config]) == ["model.mpbn"]  # runtime fields ignored
    assert run_labels([a, b]) == ["r1 (mpbn=channel)", "r2 (mpbn=none)"]
    c = _run(tmp_path, "r3", **{"model.mpbn": None, "model.timesteps": 6})
    assert run_labels([a, c]) == ["r1 (T=2, mpbn=channel)", "r3 (T=6, mpbn=none)"]
    # Distinct preset names: only what a run overrides from its preset is added.
    base = _run(tmp_path, "x", "cifar10-fast-t1-baseline", **{"model.mpbn": None,
                                                             "optim.lr": 0.05})
    chan = _run(tmp_path, "y", "cifar10-fast-t1-mpbn-channel", **{"model.mpbn": "channel"})
    from mpbn.engine.presets import get_preset

    chan.config["optim"]["lr"] = get_preset("cifar10-fast-t1-mpbn-channel").optim.lr
    base_lr = get_preset("cifar10-fast-t1-baseline").optim.lr
    assert base_lr != 0.05
    labels = run_labels([base, chan])
    assert labels == ["cifar10-fast-t1-baseline (lr=0.05)", "cifar10-fast-t1-mpbn-channel"]
    # Identical runs stay apart; folder-safe names for per-run images.
    twin = copy.deepcopy(a)
    assert len(set(run_labels([a, twin]))) == 2
    assert slug("r1 (mpbn=channel, T=2)") == "r1_mpbn-channel_T-2"


def test_comparison_warns_when_runs_differ_in_more_than_the_variable(tmp_path, capsys):
    base = _run(tmp_path, "base", **{"model.mpbn": None})
    same = _run(tmp_path, "same", **{"model.mpbn": "channel", "data.root": "/moved"})
    lr = _run(tmp_path, "lr", **{"model.mpbn": "channel", "optim.lr": 0.05})
    labels = run_labels([base, same, lr])
    lines = comparison_warnings([base, same, lr], labels)
    assert len(lines) == 1 and lines[0].startswith(labels[2])
    assert "model.mpbn: none -> channel" in lines[0] and "optim.lr: 0.1 -> 0.05" in lines[0]
    assert "data.root" not in " ".join(lines)
    named = comparison_warnings([base, same, lr], labels, ["model.mpbn"])
    assert len(named) == 1 and "more than model.mpbn" in named[0]
    assert comparison_warnings([base, lr], labels[::2], ["model.mpbn", "optim.lr"]) == []


def test_run_colors_are_stable_and_skip_grey():
    colors = run_colors(["a", "b"])
    assert colors == {"a": PALETTE[0], "b": PALETTE[1]}
    assert run_colors(["b", "c"], colors)["b"] == PALETTE[1]  # kept across figures
    assert "#7f7f7f" not in PALETTE


@styled
def _legend_box(y_fn):
    from mpbn.analysis._common import new_figure

    fig, axes = new_figure()
    ax = axes[0][0]
    x = np.linspace(0, 1, 50)
    for i in range(3):
        ax.plot(x, y_fn(x) + 0.05 * i, label=f"run {i}")
    legend = place_legend(ax)
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    box = legend.get_window_extent(renderer)
    points = np.concatenate([line.get_transform().transform(line.get_xydata())
                             for line in ax.lines])
    inside = ((points[:, 0] >= box.x0) & (points[:, 0] <= box.x1)
              & (points[:, 1] >= box.y0) & (points[:, 1] <= box.y1))
    frame = ax.get_window_extent(renderer)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return int(inside.sum()), box.x0 >= frame.x1


def test_legend_never_covers_data():
    # Rising curves leave the upper left free; the legend goes there, on no point.
    assert _legend_box(lambda x: x) == (0, False)
    # Curves through every corner and edge: above the data or outside, still on no point.
    covered, _ = _legend_box(lambda x: np.where(np.abs(x - 0.5) < 0.45, 0.5 + 2 * (x - 0.5),
                                                1.0 - 2 * np.abs(x - 0.5)))
    assert covered == 0


def _parser():
    from mpbn.analysis.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    return parser


def test_report_and_analyze_share_the_documented_defaults():
    parser = _parser()
    report = parser.parse_args(["report", "R", "-o", "O"])
    opts = ReportOptions()
    for dest, value in (("n_samples", defaults.N_SAMPLES), ("batch_size", defaults.BATCH_SIZE),
                        ("seed", defaults.SEED), ("n_points", defaults.LANDSCAPE_POINTS),
                        ("sigmas", list(defaults.SIGMAS)),
                        ("epsilons", list(defaults.EPSILONS))):
        assert getattr(report, dest) == value, dest
    for command, dest in (("landscape", "n_points"), ("spikes", "n_samples"),
                          ("robustness", "sigmas"), ("robustness", "epsilons"),
                          ("early-exit", "thresholds"), ("energy", "batch_size")):
        args = parser.parse_args(["analyze", command, "R", "-o", "O"])
        assert getattr(args, dest) == getattr(report, dest, None) or dest == "thresholds", dest
    assert parser.parse_args(["analyze", "early-exit", "R", "-o", "O"]).thresholds == \
        list(opts.thresholds) == list(defaults.EXIT_THRESHOLDS)
    assert (opts.n_samples, opts.batch_size, opts.landscape_points, tuple(opts.sigmas),
            tuple(opts.epsilons)) == (defaults.N_SAMPLES, defaults.BATCH_SIZE,
                                      defaults.LANDSCAPE_POINTS, defaults.SIGMAS,
                                      defaults.EPSILONS)
    # Every default is in docs/ANALYSIS.md's table.
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs/ANALYSIS.md").read_text()
    for name in defaults.__all__:
        assert f"`{name}`" in doc, name


def test_early_exit_is_a_table_on_stdout_and_in_the_report(make_tiny, tiny_data, tmp_path):
    from mpbn.analysis.gamma import analyze_early_exit

    x, y = tiny_data
    res = analyze_early_exit({"bntt": make_tiny(norm="bntt"), "bn": make_tiny()}, x, y,
                             tmp_path, thresholds=(0.0, 10.0))
    table = res["table"].splitlines()
    assert table[0] == "| model | gamma threshold | exit step | accuracy at exit (%) |"
    assert table[2].startswith("| bntt | 0 | 4 of 4 |")
    assert table[3].startswith("| bntt | 10 | 1 of 4 |")
    assert res["skipped"] == ["bn"] and (tmp_path / "early_exit.png").is_file()
    saved = json.loads((tmp_path / "early_exit.json").read_text())
    assert saved["timesteps"] == {"bntt": 4}
