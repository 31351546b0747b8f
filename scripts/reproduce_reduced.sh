#!/usr/bin/env bash
# Re-runs the reduced-scale studies of docs/RESULTS.md on real CIFAR-10, one run after another.
# Usage: scripts/reproduce_reduced.sh DATA_ROOT [OUT_DIR]
#   DATA_ROOT holds cifar-10-batches-py/ (or the .tar.gz); OUT_DIR defaults to runs/reduced.
#   T1_SEEDS / T2_SEEDS (default 3) set the seeds of the T = 1 and T = 2 ablations.
# Finished presets (OUT_DIR/PRESET/summary.json with as many seeds as asked) are skipped; a run
# with fewer seeds, or one that was interrupted, is resumed (finished seeds are reused).
set -euo pipefail
data=${1:?usage: scripts/reproduce_reduced.sh DATA_ROOT [OUT_DIR]}
out=${2:-runs/reduced}
mkdir -p "$out"
run() {  # run PRESET SEEDS
  local summary="$out/$1/summary.json"
  if [ -f "$summary" ] && python3 -c 'import json,sys; sys.exit(len(json.load(open(sys.argv[1]))["seeds"]) < int(sys.argv[2]))' "$summary" "$2"; then
    echo "skip $1 (done)"; return
  fi
  if [ -f "$out/$1/config.json" ]; then
    mpbn train "$1" --data-root "$data" --seeds "$2" --out "$out/$1" --quiet --resume
  else
    mpbn train "$1" --data-root "$data" --seeds "$2" --out "$out/$1" --quiet --force
  fi
}
for variant in baseline mpbn-channel mpbn-element; do
  run "cifar10-r20narrow-t1-$variant" "${T1_SEEDS:-3}"
done
for norm in bntt bn; do run "bntt-vs-bn-poisson-$norm" 1; done
for variant in baseline mpbn-channel mpbn-element; do
  run "cifar10-r20narrow-t2-$variant" "${T2_SEEDS:-3}"
done
