"""Prints the markdown tables of docs/RESULTS.md from finished runs' summary.json files.

Usage: python scripts/results_table.py RUNS_DIR
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

# Paper numbers for the matching full-scale setting (MPBN Table 1 CIFAR-10, ResNet20; Table 6
# reports channel vs element at T = 4 only). None where the paper has no matching row.
PAPER = {
    ("t1", "baseline"): "90.40", ("t1", "mpbn-channel"): "92.22", ("t1", "mpbn-element"): "-",
    ("t2", "baseline"): "92.80", ("t2", "mpbn-channel"): "93.54", ("t2", "mpbn-element"): "-",
}


def _pct(values: list[float]) -> str:
    values = [100 * v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def main(runs: Path) -> None:
    print("| study | variant | seeds | final acc (%) | best acc (%) | folded acc (%) "
          "| spike mismatch (rate) | paper, full scale (%) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for summary_path in sorted(runs.glob("*/summary.json")):
        s = json.loads(summary_path.read_text())
        name = s["name"]
        study, _, variant = name.partition("-r20narrow-")[2].partition("-") if "r20narrow" in \
            name else (name, "", "")
        rates = [r for r in s.get("spike_mismatch_rate", []) if r is not None]
        mismatch = ", ".join(str(m) for m in s["spike_mismatch"])
        if rates:
            mismatch += f" ({max(rates):.1e} max)"
        paper = PAPER.get((study, variant), "-")
        print(f"| {study} | {variant or name} | {len(s['seeds'])} | {_pct(s['final_test_acc'])} "
              f"| {_pct(s['best_test_acc'])} | {_pct(s['folded_test_acc'])} | {mismatch} "
              f"| {paper} |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/reduced"))
