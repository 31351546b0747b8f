"""Inference time of a folded MPBN model vs the baseline (no MPBN) vs the unfolded MPBN model.

MPBN Sec. 4.2 claims that folding MPBN into the thresholds removes its inference cost. This
measures it side by side in one run, interleaving the variants in every round so that machine
noise hits all of them alike, and prints medians and ratios to the folded baseline.

    python benchmarks/bench_fold_inference.py --model resnet20_narrow --batch 16 --timesteps 2
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

import mpbn
from mpbn.layers.fold import FoldWarning
from mpbn.models import create


def _time_once(model: torch.nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    model(x)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20_narrow")
    parser.add_argument("--mpbn", default="channel", choices=["channel", "element"])
    parser.add_argument("--norm", default="bn")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--timesteps", type=int, default=2)
    parser.add_argument("--input-size", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    extra = {} if args.input_size is None else {"input_size": args.input_size}
    common = dict(timesteps=args.timesteps, norm=args.norm, **extra)
    mpbn_model = create(args.model, mpbn=args.mpbn, **common).eval()
    baseline = create(args.model, mpbn="none", **common).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FoldWarning)
        variants = {
            "baseline (no MPBN), BN folded": mpbn.fold(baseline),
            "baseline (no MPBN), unfolded": baseline,
            f"MPBN {args.mpbn}, folded": mpbn.fold(mpbn_model),
            f"MPBN {args.mpbn}, unfolded": mpbn_model,
        }
    x = torch.rand(args.batch, *mpbn_model.input_shape)
    times: dict[str, list[float]] = {k: [] for k in variants}
    with torch.inference_mode():
        for _ in range(args.warmup):
            for model in variants.values():
                model(x)
        for _ in range(args.rounds):
            for name, model in variants.items():
                times[name].append(_time_once(model, x))

    medians = {k: statistics.median(v) for k, v in times.items()}
    ref = medians["baseline (no MPBN), BN folded"]
    print(f"{args.model}  norm={args.norm}  batch={args.batch}  T={args.timesteps}  "
          f"input={tuple(mpbn_model.input_shape)}  threads={torch.get_num_threads()}  "
          f"rounds={args.rounds}")
    print(f"{'variant':<34}{'median ms':>11}{'IQR ms':>9}{'x folded baseline':>19}")
    for name, values in times.items():
        q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
        print(f"{name:<34}{medians[name] * 1e3:>11.2f}{(q[2] - q[0]) * 1e3:>9.2f}"
              f"{medians[name] / ref:>19.2f}")
    folded_mpbn = medians[f"MPBN {args.mpbn}, folded"]
    unfolded_mpbn = medians[f"MPBN {args.mpbn}, unfolded"]
    print(f"folding speeds the MPBN model up {unfolded_mpbn / folded_mpbn:.2f}x; the folded MPBN "
          f"model costs {folded_mpbn / ref:.2f}x the folded baseline")


if __name__ == "__main__":
    main()
