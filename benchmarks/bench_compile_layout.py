"""Inductor's layout optimization and the compiled training step on CPU, side by side.

Usage: python benchmarks/bench_compile_layout.py [--mpbn none channel element] [--rounds 8]
       [--batch 256] [--timesteps 1]

For each MPBN mode, ``fastnet`` (the ``cifar10-fast-*`` network) is compiled twice with
``torch.compile``, once with Inductor's ``layout_optimization`` on (its default) and once off,
and the two training steps (SGD, random data) are timed round-robin in one process. Prints the
median step times and the median of the per-round ratios off / on, which is what
:func:`mpbn.engine.compiling.inductor_options` decides from (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from bench_train_step import machine_header

from mpbn.models import create


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mpbn", nargs="+", default=["none", "channel", "element"],
                        choices=["none", "channel", "element"])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--timesteps", type=int, default=1)
    args = parser.parse_args()
    print(machine_header(torch.device("cpu")), flush=True)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(args.batch, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 10, (args.batch,), generator=generator)
    steps = {}
    for mode in args.mpbn:
        for layout in (True, False):
            torch.manual_seed(0)
            model = create("fastnet", num_classes=10, timesteps=args.timesteps, mpbn=mode)
            optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
            compiled = torch.compile(model, options={"layout_optimization": layout})

            def step(compiled=compiled, optimizer=optimizer) -> None:
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(compiled(images), labels).backward()
                optimizer.step()

            for _ in range(3):  # the compiles (dynamo compiles twice in a fresh process)
                step()
            steps[(mode, layout)] = step
            print(f"compiled mpbn={mode} layout_optimization={layout}", flush=True)
    times: dict[tuple[str, bool], list[float]] = {key: [] for key in steps}
    for _ in range(args.rounds):
        for key, step in steps.items():
            start = time.perf_counter()
            step()
            times[key].append(time.perf_counter() - start)
    print(f"\nfastnet T={args.timesteps} B={args.batch}, {args.rounds} rounds round-robin")
    print(f"{'mpbn':10s} {'on: median ms':>14s} {'off: median ms':>15s} {'off / on':>9s}")
    for mode in args.mpbn:
        on, off = times[(mode, True)], times[(mode, False)]
        ratio = statistics.median(b / a for a, b in zip(on, off, strict=True))
        print(f"{mode:10s} {1e3 * statistics.median(on):14.1f} {1e3 * statistics.median(off):15.1f}"
              f" {ratio:8.2f}x")


if __name__ == "__main__":
    main()
