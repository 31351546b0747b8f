#!/usr/bin/env bash
# Builds issue 18's ablation pages from the fast full-CIFAR-10 runs, the way
# scripts/make_results.sh does for the reduced ones.
# Usage: scripts/make_fast_results.sh RUNS_DIR OUT_DIR [mpbn report options, e.g. --data-root DIR]
#   RUNS_DIR holds cifar10-fast-t{1,2}-{baseline,mpbn-channel,mpbn-element}/ (mpbn train PRESET
#   --out RUNS_DIR/PRESET). Writes OUT_DIR/tables.md (scripts/fast_ablation_tables.py: every
#   run, each seed's commit and train time, the Welch comparisons) and one page per T,
#   OUT_DIR/fast-t1/report.md and OUT_DIR/fast-t2/report.md: the results table, the comparison
#   with the baseline (--compare), the curves on the held-out split (every seed), and for seed
#   0's final model (last.pt, the one evaluated on the test set) the 1D loss landscape, spike
#   rates and SOPs, energy and the fold report. Pass --data-root DIR when CIFAR-10 is no longer
#   where the runs recorded it.
set -euo pipefail
runs=${1:?usage: scripts/make_fast_results.sh RUNS_DIR OUT_DIR [mpbn report options]}
out=${2:?usage: scripts/make_fast_results.sh RUNS_DIR OUT_DIR [mpbn report options]}
shift 2
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
python3 "$here/fast_ablation_tables.py" "$runs" > "$out/tables.md"
echo "wrote $out/tables.md"
for t in 1 2; do
  dirs=()
  for variant in baseline mpbn-channel mpbn-element; do
    dir="$runs/cifar10-fast-t$t-$variant"
    # The model-based sections analyse seed 0: a run enters once that seed has finished.
    if [ -f "$dir/seed_0/result.json" ]; then dirs+=("$dir"); else echo "skip $dir (seed 0 not finished)"; fi
  done
  if [ ${#dirs[@]} -eq 0 ]; then echo "skip fast-t$t (no run with a finished seed 0)"; continue; fi
  mpbn report "${dirs[@]}" -o "$out/fast-t$t" --compare --n-samples 512 --n-points 21 \
    --skip gamma early-exit robustness "$@"
  # The pages embed the PNGs; SVG copies of report's figures stay out of the repository (run
  # `mpbn report` for them). Only report's images/: landscape/ is combine_landscapes.py's.
  find "$out/fast-t$t/images" -name '*.svg' -delete
done
