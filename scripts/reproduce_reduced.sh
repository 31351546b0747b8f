#!/usr/bin/env bash
# Re-runs the reduced-scale studies of docs/RESULTS.md on real CIFAR-10, one run after another.
# Usage: scripts/reproduce_reduced.sh DATA_ROOT [OUT_DIR]
#   DATA_ROOT holds cifar-10-batches-py/ (or the .tar.gz); OUT_DIR defaults to runs/reduced.
#   T1_SEEDS / T2_SEEDS (default 3) set the seeds of the T = 1 and T = 2 ablations.
# Finished presets (OUT_DIR/PRESET/summary.json present) are skipped, so the script resumes.
set -euo pipefail
data=${1:?usage: scripts/reproduce_reduced.sh DATA_ROOT [OUT_DIR]}
out=${2:-runs/reduced}
mkdir -p "$out"
run() {  # run PRESET SEEDS
  if [ -f "$out/$1/summary.json" ]; then echo "skip $1 (done)"; return; fi
  mpbn train "$1" --data-root "$data" --seeds "$2" --out "$out/$1" --quiet --force
}
for variant in baseline mpbn-channel mpbn-element; do
  run "cifar10-r20narrow-t1-$variant" "${T1_SEEDS:-3}"
done
for norm in bntt bn; do run "bntt-vs-bn-poisson-$norm" 1; done
for variant in baseline mpbn-channel mpbn-element; do
  run "cifar10-r20narrow-t2-$variant" "${T2_SEEDS:-3}"
done
