"""Check mpbn's event readers on real recordings (not the files the tests write).

    python scripts/check_event_readers.py --aedat2 ../shared/data/dvs128-aedat2 \
        --nmnist ../shared/data/nmnist --out docs/results/event_readers

For every AEDAT 2.0 recording (DVS128, the container and bit layout of CIFAR10-DVS) it prints
the event count, the coordinate and polarity ranges, whether timestamps never decrease and the
duration, and draws a slice of each recording as ``read_aedat2`` stores it and as
``read_cifar10_dvs`` turns it (SpikingJelly's CIFAR10-DVS orientation) to
``OUT/dvs128_orientation.png`` (which way is up depends on how each camera was mounted).
For labelled N-MNIST samples (``labels.tsv``: file, label, split) it prints the same and two
checks that only a correct reader passes: the class-mean event frames (drawn to
``OUT/nmnist_class_means.png``, which must show upright digits: a swapped x/y or a wrong byte
would not), and the test accuracy of a logistic regression on 2x-downsampled event-count
frames fitted on the train split (chance is ~10%). Writes ``OUT/event_readers.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from mpbn.data.events import NMNIST_SENSOR, Events, events_to_frames, read_aedat2, read_nmnist
from mpbn.data.events_datasets import read_cifar10_dvs

DVS_SENSOR = (128, 128)


def stream_stats(events: Events, sensor: tuple[int, int]) -> dict:
    """What a reader got right or wrong shows in these: ranges inside the sensor, both
    polarities, time that never runs backwards."""
    height, width = sensor
    return {
        "events": len(events),
        "x": [int(events.x.min()), int(events.x.max())],
        "y": [int(events.y.min()), int(events.y.max())],
        "inside_sensor": bool(events.x.max() < width and events.y.max() < height
                              and events.x.min() >= 0 and events.y.min() >= 0),
        "polarities": sorted(int(p) for p in np.unique(events.polarity)),
        "time_non_decreasing": bool((np.diff(events.timestamp) >= 0).all()),
        "duration_s": float(events.timestamp[-1] - events.timestamp[0]) / 1e6,
    }


def check_aedat2(folder: Path, out: Path) -> list[dict]:
    paths = sorted(folder.glob("*.aedat"))
    if not paths:
        raise SystemExit(f"{folder}: no *.aedat files")
    rows = [{"file": path.name, **stream_stats(read_aedat2(path), DVS_SENSOR)} for path in paths]
    _draw_orientations(paths, out / "dvs128_orientation.png")
    print(f"\nAEDAT 2.0 recordings in {folder} (DVS128 sensor, 128x128)\n")
    print("| file | events | x | y | polarities | time non-decreasing | duration (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['file']} | {r['events']:,} | {r['x'][0]}-{r['x'][1]} | "
              f"{r['y'][0]}-{r['y'][1]} | {r['polarities']} | {r['time_non_decreasing']} | "
              f"{r['duration_s']:.1f} |")
    return rows


def _slice_image(events: Events) -> np.ndarray:
    """Event counts of the last sixth of a recording (where most of these scenes are still),
    both polarities, square-rooted for contrast: [128, 128], row = y, column = x."""
    return np.sqrt(events_to_frames(events, 6, DVS_SENSOR)[-1].sum(0))


def _draw_orientations(paths: list[Path], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(paths), figsize=(1.5 * len(paths), 3.6))
    for column, source in enumerate(paths):
        for row, (reader, label) in enumerate(((read_aedat2, "as stored"),
                                               (read_cifar10_dvs, "SpikingJelly"))):
            ax = axes[row, column]
            ax.imshow(_slice_image(reader(source)), cmap="gray_r")
            ax.set_xticks([])
            ax.set_yticks([])
            if column == 0:
                ax.set_ylabel(label, fontsize=8)
        axes[0, column].set_title(source.stem[:18], fontsize=6)
    _save(fig, path, "DVS128 recordings: the last sixth of each, addresses as stored (top) and "
          "in SpikingJelly's CIFAR10-DVS orientation (bottom)", 9)


def nmnist_frame(events: Events) -> np.ndarray:
    """Event counts per pixel over the whole sample, both polarities: [34, 34]."""
    return events_to_frames(events, 1, NMNIST_SENSOR)[0].sum(0).astype(np.float64)


def check_nmnist(folder: Path, out: Path) -> dict:
    with (folder / "labels.tsv").open() as handle:
        samples = [row for row in csv.DictReader(handle, delimiter="\t")]
    stats, frames, labels, splits = [], [], [], []
    for row in samples:
        events = read_nmnist(folder / row["file"])
        stats.append(stream_stats(events, NMNIST_SENSOR))
        frames.append(nmnist_frame(events))
        labels.append(int(row["label"]))
        splits.append(row["split"])
    frames_arr, labels_arr = np.stack(frames), np.array(labels)
    counts = [s["events"] for s in stats]
    summary = {
        "samples": len(samples),
        "events": [min(counts), int(np.median(counts)), max(counts)],
        "all_inside_sensor": all(s["inside_sensor"] for s in stats),
        "all_both_polarities": all(s["polarities"] == [0, 1] for s in stats),
        "all_time_non_decreasing": all(s["time_non_decreasing"] for s in stats),
        "duration_s": [min(s["duration_s"] for s in stats), max(s["duration_s"] for s in stats)],
    }
    train = np.array([s == "train" for s in splits])
    summary["logistic_regression"] = _probe(frames_arr, labels_arr, train)
    _draw_class_means(frames_arr, labels_arr, out / "nmnist_class_means.png")
    print(f"\nN-MNIST samples in {folder} (34x34 sensor)\n")
    print("| samples | events (min / median / max) | inside sensor | both polarities | "
          "time non-decreasing | duration (s) | logistic regression test acc |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    probe = summary["logistic_regression"]
    print(f"| {summary['samples']} | {' / '.join(f'{c:,}' for c in summary['events'])} | "
          f"{summary['all_inside_sensor']} | {summary['all_both_polarities']} | "
          f"{summary['all_time_non_decreasing']} | {summary['duration_s'][0]:.2f}-"
          f"{summary['duration_s'][1]:.2f} | {100 * probe['test_acc']:.1f}% "
          f"({probe['train']} train, {probe['test']} test) |")
    return summary


def _probe(frames: np.ndarray, labels: np.ndarray, train: np.ndarray) -> dict:
    """Logistic regression on 2x-downsampled, per-sample normalized count frames."""
    from sklearn.linear_model import LogisticRegression

    pooled = frames.reshape(len(frames), 17, 2, 17, 2).sum(axis=(2, 4))
    features = pooled.reshape(len(frames), -1)
    features = features / features.sum(axis=1, keepdims=True)
    features = (features - features[train].mean(0)) / (features[train].std(0) + 1e-12)
    model = LogisticRegression(C=0.1, max_iter=2000).fit(features[train], labels[train])
    return {"train": int(train.sum()), "test": int((~train).sum()),
            "test_acc": float(model.score(features[~train], labels[~train]))}


def _draw_class_means(frames: np.ndarray, labels: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 10, figsize=(12, 1.9))
    for digit, ax in enumerate(axes):
        mine = frames[labels == digit]
        ax.imshow(mine.mean(0), cmap="gray_r")
        ax.set_title(f"{digit} (n={len(mine)})", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    _save(fig, path, "N-MNIST: mean event count per pixel and class, as mpbn's reader decodes "
          "it (row = y, column = x)", 10)


def _save(fig, path: Path, title: str, fontsize: int) -> None:
    import matplotlib.pyplot as plt

    fig.suptitle(title, fontsize=fontsize)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--aedat2", type=Path, help="folder of AEDAT 2.0 recordings")
    parser.add_argument("--nmnist", type=Path, help="folder of N-MNIST samples + labels.tsv")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.aedat2 is None and args.nmnist is None:
        parser.error("give --aedat2, --nmnist or both")
    report = {}
    if args.aedat2 is not None:
        report["aedat2"] = check_aedat2(args.aedat2, args.out)
    if args.nmnist is not None:
        report["nmnist"] = check_nmnist(args.nmnist, args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "event_readers.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
