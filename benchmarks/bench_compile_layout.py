"""Inductor's layout optimization and the compiled training step on CPU, side by side.

Usage: python benchmarks/bench_compile_layout.py [--mpbn none channel element] [--rounds 8]
       [--batch 256] [--timesteps 1]

For each MPBN mode, ``fastnet`` (the ``cifar10-fast-*`` network) is compiled twice with
``torch.compile``, once with Inductor's ``layout_optimization`` on (its default) and once off,
and the two training steps (SGD, random data) are timed round-robin in one process. Prints the
median step times and the median of the per-round ratios off / on, which is what
:func:`mpbn.engine.compiling.inductor_options` decides from (docs/PERFORMANCE.md). ``--profile``
adds, per variant, the self CPU time of each compiled graph (forward and backward) and of the
convolutions over 3 steps (``torch.profiler``), to see where a difference lies.
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
    parser.add_argument("--profile", action="store_true",
                        help="also print each variant's compiled graphs' self CPU time")
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
    if args.profile:
        print("\nself CPU ms per step (3 steps profiled): compiled graphs in call order "
              "(forward first, then backward), then all convolution ops")
        for (mode, layout), step in steps.items():
            print(f"mpbn={mode} layout_optimization={layout}: " + profile_line(step))


def profile_line(step, steps: int = 3) -> str:
    """Self CPU ms per step of each compiled graph and of the convolutions, over ``steps``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    graphs, conv = [], 0.0
    for event in prof.key_averages():
        ms = event.self_cpu_time_total / 1e3 / steps
        if event.key.startswith("## Call CompiledFxGraph"):
            graphs.append(ms)
        elif "convolution" in event.key:
            conv += ms
    return ", ".join(f"graph {i} {ms:.0f}" for i, ms in enumerate(graphs)) + f"; conv {conv:.0f}"


if __name__ == "__main__":
    main()
