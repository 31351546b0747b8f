#!/usr/bin/env bash
# The full-CIFAR-10 ablations of issue 18 (docs/RESULTS.md), one run after another, across as
# many work periods as they take: every call resumes where the last one stopped.
# Usage: scripts/reproduce_fast.sh DATA_ROOT [OUT_DIR]        (nohup it; one run at a time)
#   DATA_ROOT holds cifar-10-batches-py/; OUT_DIR defaults to runs/fast.
#   SEEDS (default 3) and PRESETS (default: the six cifar10-fast-* presets) narrow it down;
#   EXTRA adds arguments to every `mpbn train` (e.g. "--set run.device=cuda"), REFERENCE
#   replaces the reference-epoch timing's own (e.g. "--steps 60").
#   KEEP=DIR (docs/results/fast/runs) keeps what outlives the machine: after each run it copies
#   the run's config and summary and every *finished* seed's result.json and metrics.jsonl
#   (what the tables read; no checkpoints) to DIR/PRESET, the reference-epoch records to DIR,
#   and once seed 0 has finished, its model analyses (1D loss landscape, spike rates and SOPs,
#   energy, fold report: `mpbn report`, which needs the checkpoint) to DIR/PRESET/analysis. On
#   a fresh machine (no OUT_DIR/PRESET yet) it restores those records first, so finished seeds
#   are reused and the next seed starts. Commit DIR before a work period ends: work periods run
#   on fresh machines, and a seed cut off mid-run starts again from its first epoch.
#   UNTIL (a time `date -d` reads, e.g. "18:05") starts a run only if it can end before then,
#   and otherwise stops the loop: a run cut off when the work period ends is lost. A run is
#   estimated at the longest train_time of its preset's finished seeds plus MARGIN_MIN (default
#   15: set-up, compiling, the final evaluations and the analyses), or at ESTIMATE_MIN (default
#   100) before any seed of the preset has finished.
# Order: seed 0 of every preset first, then seed 1 of every preset, ... (so a partial set is a
# complete one-seed comparison). Each call first times the reference epoch of this work period
# (benchmarks/reference_epoch.py) into OUT_DIR/reference_epochs.jsonl, and again after every run
# (the machine's speed drifts over a run: each run's budget is then known before and after it,
# and one timing between two runs serves both).
# Run on an otherwise idle machine: train_time is the measured result.
set -euo pipefail
data=${1:?usage: scripts/reproduce_fast.sh DATA_ROOT [OUT_DIR]}
out=${2:-runs/fast}
seeds=${SEEDS:-3}
presets=${PRESETS:-"cifar10-fast-t1-baseline cifar10-fast-t1-mpbn-channel cifar10-fast-t1-mpbn-element cifar10-fast-t2-baseline cifar10-fast-t2-mpbn-channel cifar10-fast-t2-mpbn-element"}
mkdir -p "$out"
data=$(realpath "$data"); out=$(realpath "$out")
[ -z "${KEEP:-}" ] || { mkdir -p "$KEEP"; KEEP=$(realpath "$KEEP"); }
cd "$(dirname "$0")/.."
# Every python below runs this checkout's code, whatever `pip install -e` last pointed at (a
# benchmark run as `python3 benchmarks/x.py` does not see the repository): the records name
# this checkout's commit.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
until_s=""
if [ -n "${UNTIL:-}" ]; then
  until_s=$(date -d "$UNTIL" +%s) || { echo "UNTIL=$UNTIL: not a time date -d reads" >&2; exit 2; }
fi
reference=${REFERENCE:-"--data-root $data --also cifar10-fast-t1-baseline cifar10-fast-t2-baseline"}
time_reference() {
  # shellcheck disable=SC2086
  python3 benchmarks/reference_epoch.py $reference --log "$out/reference_epochs.jsonl"
}
time_reference
estimate_min() {  # estimate_min RUN_DIR: minutes a further seed of it takes, from its finished ones
  python3 - "$1" "${MARGIN_MIN:-15}" "${ESTIMATE_MIN:-100}" <<'PY'
import json, math, pathlib, sys
run = pathlib.Path(sys.argv[1])
try:
    margin, default = float(sys.argv[2]), float(sys.argv[3])
except ValueError:
    sys.exit(f"MARGIN_MIN={sys.argv[2]!r} and ESTIMATE_MIN={sys.argv[3]!r} must be minutes")
times = [json.loads(p.read_text()).get("train_time") for p in run.glob("seed_*/result.json")]
times = [t for t in times if t]
print(math.ceil(max(times) / 60 + margin) if times else math.ceil(default))
PY
}
done_seeds() {  # finished seeds of a run dir (result.json files)
  ls "$1"/seed_*/result.json 2>/dev/null | wc -l
}
keep() {  # keep PRESET: its records, then seed 0's analyses once (needs the checkpoint)
  [ -n "${KEEP:-}" ] && [ -d "$out/$1" ] || return 0
  mkdir -p "$KEEP/$1"
  (cd "$out/$1" && for f in config.json summary.json seed_*/result.json; do
     if [ -f "$f" ]; then echo "$f"; fi
     if [ -f "$f" ] && [ "${f#seed_}" != "$f" ] && [ -f "${f%/*}/metrics.jsonl" ]; then
       echo "${f%/*}/metrics.jsonl"
     fi
   done) | tar -C "$out/$1" -cf - -T - | tar -C "$KEEP/$1" -xf -
  touch "$KEEP/reference_epochs.jsonl"  # every work period's line, once
  cat "$KEEP/reference_epochs.jsonl" "$out/reference_epochs.jsonl" | awk '!seen[$0]++' \
    > "$KEEP/.reference_epochs.jsonl"
  mv "$KEEP/.reference_epochs.jsonl" "$KEEP/reference_epochs.jsonl"
  if [ -f "$out/$1/seed_0/result.json" ] && [ ! -f "$KEEP/$1/analysis/report.md" ]; then
    # shellcheck disable=SC2086
    python3 -m mpbn report "$out/$1" -o "$KEEP/$1/analysis" --n-samples 512 --n-points 21 \
      --skip curves gamma early-exit robustness ${REPORT:-}
    find "$KEEP/$1/analysis" -name '*.svg' -delete  # the page embeds the PNGs
  fi
}
restore() {  # a fresh machine: the records KEEP holds (their finished seeds are reused)
  [ -n "${KEEP:-}" ] && [ -f "$KEEP/$1/config.json" ] && [ ! -e "$out/$1" ] || return 0
  mkdir -p "$out/$1"
  tar -C "$KEEP/$1" --exclude=./analysis -cf - . | tar -C "$out/$1" -xf -
  echo "restored $1's records from $KEEP"
}
for n in $(seq 1 "$seeds"); do
  for preset in $presets; do
    dir="$out/$preset"
    restore "$preset"
    if [ "$(done_seeds "$dir")" -ge "$n" ]; then
      echo "skip $preset seed $((n - 1)) (done)"; keep "$preset"; continue
    fi
    if [ -n "$until_s" ]; then
      need=$(estimate_min "$dir")
      if [ $(( $(date +%s) + 60 * need )) -gt "$until_s" ]; then
        echo "stopping before $preset seed $((n - 1)): it needs about $need min and would end" \
          "after UNTIL=$UNTIL"
        exit 0
      fi
    fi
    if [ -f "$dir/config.json" ]; then
      # shellcheck disable=SC2086
      python3 -m mpbn train "$preset" --data-root "$data" --seeds "$n" --out "$dir" --resume \
        ${EXTRA:-}
    else
      # shellcheck disable=SC2086
      python3 -m mpbn train "$preset" --data-root "$data" --seeds "$n" --out "$dir" ${EXTRA:-}
    fi
    time_reference
    keep "$preset"
  done
done
