"""Many kill-and-resume trials: a tiny run killed at seeded random instants, resumed (maybe
killed again), compared bit for bit with an uninterrupted run (tests/engine/kill_resume.py;
tests/engine/test_kill_resume.py runs a few of the same trials in CI).

    python3 scripts/kill_resume_trials.py --trials 50 [--seed 0] [--checkpoint-every 0 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import sys
import tempfile
import traceback
from pathlib import Path

HELPER = Path(__file__).resolve().parent.parent / "tests/engine/kill_resume.py"


def _helper():
    spec = importlib.util.spec_from_file_location("kill_resume", HELPER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill instants")
    parser.add_argument("--checkpoint-every", type=int, nargs="+", default=[0, 2],
                        help="run.checkpoint_every values, used in turn")
    parser.add_argument("--max-kills", type=int, default=3)
    args = parser.parse_args(argv)
    kr = _helper()
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        references = {}
        for every in args.checkpoint_every:
            out = root / f"reference-{every}"
            references[every] = (kr.reference_run(kr.tiny_config(every), out), out)
        for trial in range(args.trials):
            every = args.checkpoint_every[trial % len(args.checkpoint_every)]
            counts, reference = references[every]
            out = root / f"trial-{trial}"
            rng = random.Random(f"{args.seed}-{trial}")
            try:
                kills = kr.kill_resume_trial(kr.tiny_config(every), out, counts, rng,
                                             max_kills=args.max_kills)
                kr.assert_same_run(out, reference)
                print(f"trial {trial} (checkpoint_every={every}): ok after "
                      f"{'; '.join(kills)}", flush=True)
            except Exception:
                failures += 1
                print(f"trial {trial} (checkpoint_every={every}): FAILED", flush=True)
                traceback.print_exc()
    print(f"{args.trials - failures} of {args.trials} trials identical to the uninterrupted run")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
