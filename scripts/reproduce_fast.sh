#!/usr/bin/env bash
# The full-CIFAR-10 ablations of issue 18 (docs/RESULTS.md), one run after another, across as
# many work periods as they take: every call resumes where the last one stopped.
# Usage: scripts/reproduce_fast.sh DATA_ROOT [OUT_DIR]        (nohup it; one run at a time)
#   DATA_ROOT holds cifar-10-batches-py/; OUT_DIR defaults to runs/fast.
#   SEEDS (default 3) and PRESETS (default: the six cifar10-fast-* presets) narrow it down;
#   EXTRA adds arguments to every `mpbn train` (e.g. "--set run.device=cuda"), REFERENCE
#   replaces the reference-epoch timing's own (e.g. "--steps 60").
# Order: seed 0 of every preset first, then seed 1 of every preset, ... (so a partial set is a
# complete one-seed comparison). Each call first times the reference epoch of this work period
# (benchmarks/reference_epoch.py) into OUT_DIR/reference_epochs.jsonl: the budget scales with it.
# Run on an otherwise idle machine: train_time is the measured result.
set -euo pipefail
data=${1:?usage: scripts/reproduce_fast.sh DATA_ROOT [OUT_DIR]}
out=${2:-runs/fast}
seeds=${SEEDS:-3}
presets=${PRESETS:-"cifar10-fast-t1-baseline cifar10-fast-t1-mpbn-channel cifar10-fast-t1-mpbn-element cifar10-fast-t2-baseline cifar10-fast-t2-mpbn-channel cifar10-fast-t2-mpbn-element"}
mkdir -p "$out"
data=$(realpath "$data"); out=$(realpath "$out")
cd "$(dirname "$0")/.."
reference=${REFERENCE:-"--data-root $data --also cifar10-fast-t1-baseline cifar10-fast-t2-baseline"}
# shellcheck disable=SC2086
python3 benchmarks/reference_epoch.py $reference --log "$out/reference_epochs.jsonl"
done_seeds() {  # finished seeds of a run dir (result.json files)
  ls "$1"/seed_*/result.json 2>/dev/null | wc -l
}
for n in $(seq 1 "$seeds"); do
  for preset in $presets; do
    dir="$out/$preset"
    if [ "$(done_seeds "$dir")" -ge "$n" ]; then
      echo "skip $preset seed $((n - 1)) (done)"; continue
    fi
    if [ -f "$dir/config.json" ]; then
      # shellcheck disable=SC2086
      python3 -m mpbn train "$preset" --data-root "$data" --seeds "$n" --out "$dir" --resume \
        ${EXTRA:-}
    else
      # shellcheck disable=SC2086
      python3 -m mpbn train "$preset" --data-root "$data" --seeds "$n" --out "$dir" ${EXTRA:-}
    fi
  done
done
