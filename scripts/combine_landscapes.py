"""One 1D loss-landscape plot (MPBN Fig. 3) from several runs' saved landscapes.

Usage: python scripts/combine_landscapes.py OUT_DIR ANALYSIS_DIR [ANALYSIS_DIR ...]

Each ANALYSIS_DIR is an ``mpbn report`` output that holds ``images/landscape.json`` (or
``landscape.json``), e.g. the per-preset pages that ``scripts/reproduce_fast.sh`` keeps in
``docs/results/fast/runs/PRESET/analysis``. Why from the saved curves and not from the models:
those pages were computed while each run's checkpoint existed, and checkpoints do not outlive
a work period's machine. Curves are comparable only if they were computed on the same test
sample with the same direction seed; a mismatch is refused. Writes ``OUT_DIR/landscape.png``,
``landscape.json`` and ``landscape.csv``, and prints the loss at the ends and the middle.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mpbn.analysis._common import write_csv, write_json
from mpbn.analysis.landscape import plot_landscape

USAGE = "usage: python scripts/combine_landscapes.py OUT_DIR ANALYSIS_DIR [ANALYSIS_DIR ...]"


def read_landscape(folder: Path) -> dict:
    """The ``landscape.json`` of an ``mpbn report`` output folder."""
    for path in (folder / "images" / "landscape.json", folder / "landscape.json"):
        if path.is_file():
            try:
                data = json.loads(path.read_text())
                if not (isinstance(data["curves"], dict) and isinstance(data["n_samples"], int)
                        and isinstance(data["seed"], int)):
                    raise TypeError
                return data
            except (ValueError, KeyError, TypeError):
                raise SystemExit(f"{path}: not a landscape.json written by mpbn report (valid: "
                                 "a JSON object with 'n_samples', 'seed' and 'curves')") from None
    raise SystemExit(f"no landscape.json in {folder} (looked in images/ and the folder itself)")


def combine(out_dir: Path, folders: list[Path]) -> dict:
    curves: dict[str, dict] = {}
    sample = None
    for folder in folders:
        data = read_landscape(folder)
        this = (data["n_samples"], data["seed"])
        if sample is not None and this != sample:
            raise SystemExit(f"{folder}: landscape on {this[0]} samples with seed {this[1]}, the "
                             f"others on {sample[0]} with seed {sample[1]}: not comparable")
        sample = this
        for label, curve in data["curves"].items():
            if label in curves:
                raise SystemExit(f"{folder}: a curve named {label!r} is already in the plot")
            curves[label] = curve
    plot_landscape(curves, out_dir)
    combined = {"n_samples": sample[0], "seed": sample[1], "curves": curves}
    write_json(combined, out_dir / "landscape.json")
    write_csv([{"model": label, "alpha": a, "loss": lo, "acc": ac}
               for label, c in curves.items()
               for a, lo, ac in zip(c["alpha"], c["loss"], c["acc"], strict=True)],
              out_dir / "landscape.csv")
    return combined


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise SystemExit(USAGE)
    out_dir = Path(argv[0])
    combined = combine(out_dir, [Path(a) for a in argv[1:]])
    print(f"wrote {out_dir}/landscape.png ({combined['n_samples']} test samples, direction "
          f"seed {combined['seed']})")
    print("| model | loss at alpha = -1 | at 0 | at +1 |\n| --- | --- | --- | --- |")
    for label, c in combined["curves"].items():
        at = dict(zip((round(a, 6) for a in c["alpha"]), c["loss"], strict=True))
        cells = [f"{at[a]:.3f}" if a in at else "-" for a in (-1.0, 0.0, 1.0)]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
