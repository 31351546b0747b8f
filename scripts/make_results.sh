#!/usr/bin/env bash
# Builds the per-study report pages embedded in docs/RESULTS.md from the runs that
# scripts/reproduce_reduced.sh wrote. Usage: scripts/make_results.sh [RUNS_DIR] [OUT_DIR]
set -euo pipefail
runs=${1:-runs/reduced}
out=${2:-docs/results}
report() {  # report NAME RUN... -- extra options
  local name=$1; shift
  local dirs=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    [ -f "$runs/$1/summary.json" ] && dirs+=("$runs/$1"); shift
  done
  [ $# -gt 0 ] && shift
  if [ ${#dirs[@]} -eq 0 ]; then echo "skip $name (no finished runs)"; return; fi
  mpbn report "${dirs[@]}" -o "$out/$name" --n-samples 512 --n-points 21 "$@"
  # The pages embed the PNGs; the SVG copies (several MB for per-neuron histograms) stay out
  # of the repository. Run `mpbn report` yourself for vector plots.
  find "$out/$name" -name '*.svg' -delete
}
report mpbn-t1 cifar10-r20narrow-t1-baseline cifar10-r20narrow-t1-mpbn-channel \
  cifar10-r20narrow-t1-mpbn-element -- --skip robustness
report mpbn-t2 cifar10-r20narrow-t2-baseline cifar10-r20narrow-t2-mpbn-channel \
  cifar10-r20narrow-t2-mpbn-element -- --skip robustness
report bntt-vs-bn bntt-vs-bn-poisson-bntt bntt-vs-bn-poisson-bn
