"""Whole training step (forward + backward + SGD step) of a spiking ResNet, side by side.

Times, round-robin in one run (every round runs every variant once, so machine load hits all
of them alike), the training step of:

- ``ANN``: the same network with every LIF replaced by ReLU, run at ``T = 1`` on a batch of
  ``T * B`` images (the same number of conv image-passes as the SNN at ``T`` steps of ``B``);
- the SNN without MPBN, with channel-wise and with element-wise MPBN (``--mpbn``);
- each SNN with the neuron ``backend="fused"`` and ``backend="reference"`` (``--backends``);
- with ``--speedups``, each SNN of the first backend again with a CPU/GPU speed-up applied
  (``neuron-compile``: the fused neuron through ``torch.compile``, what ``MPBN_COMPILE=1``
  does; ``model-compile``: ``torch.compile`` of the whole model, what ``run.compile`` does;
  ``channels-last``: weights and input in channels-last, what ``run.channels_last`` does;
  ``bf16``: bf16 autocast, what ``run.amp`` does; ``model-compile+bf16``: both), with the
  ratio to the same SNN without it.

and prints medians and ratios. A ratio is the median over rounds of the per-round ratio (the
two steps ran back to back, under the same load), so it is steadier than the ratio of medians.

Targets (GPU, full-width ResNet19): a T = 2 SNN step <= 1.2x the ANN step at batch 2B; MPBN
training overhead <= 10 % over the same SNN without MPBN.

Usage::

    python benchmarks/bench_train_step.py                                   # CUDA if available
    python benchmarks/bench_train_step.py --model resnet20_narrow --batch 8 --threads 1  # CPU
    python benchmarks/bench_train_step.py --model resnet19 --width 32 --batch 4 --threads 1
    python benchmarks/bench_train_step.py --amp                             # bf16 autocast
    python benchmarks/bench_train_step.py --model fastnet --timesteps 1 --batch 256 --no-ann \
        --backends fused --mpbn none channel --speedups neuron-compile model-compile channels-last
    python benchmarks/bench_train_step.py --model fastnet --timesteps 1 --batch 256 --no-ann \
        --backends fused --mpbn none --speedups bf16 model-compile model-compile+bf16

The allocator is the process's: run it again under ``GLIBC_TUNABLES=...`` (docs/TRAINING.md,
"Performance") to compare allocators; the header names the one that ran.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from _host import allocator
from torch import nn

from mpbn.engine.compiling import compile_model
from mpbn.functional.lif_backend import compile_enabled, set_compile
from mpbn.layers import LIF
from mpbn.models import create

__all__ = ["main", "to_ann", "allocator", "machine_header"]


def machine_header(device: torch.device) -> str:
    """One line per fact that moves the numbers: torch, device, threads, allocator, load."""
    lines = [f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
             f"allocator: {allocator()}"]
    if device.type == "cuda":
        lines.append(f"GPU: {torch.cuda.get_device_name(device)}")
    if hasattr(os, "getloadavg"):  # other processes on a shared machine skew every column
        lines.append("load average (1, 5, 15 min): "
                     + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    return "\n".join(lines)


def to_ann(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every :class:`~mpbn.layers.LIF` replaced by ``nn.ReLU``.

    Run the copy with ``timesteps = 1`` on ``T * B`` images to get the ANN counterpart of a
    ``T``-step SNN at batch ``B``.
    """
    ann = copy.deepcopy(model)
    for parent in list(ann.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LIF):
                setattr(parent, name, nn.ReLU())
    return ann


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, amp: bool
              ) -> Callable[[], object]:
    """One SGD training step on fixed data (returns the detached loss)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    device_type = images.device.type

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        autocast = (torch.autocast(device_type, dtype=torch.bfloat16) if amp
                    else contextlib.nullcontext())
        with autocast:
            loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


#: ``--speedups`` choices (module docstring); ``a+b`` applies both.
SPEEDUPS = ("neuron-compile", "model-compile", "channels-last", "bf16", "model-compile+bf16")


def with_neuron_compile(step: Callable[[], object]) -> Callable[[], object]:
    """``step`` with the fused neuron compiled (the process-wide switch, restored after)."""
    def run() -> object:
        before = compile_enabled()
        set_compile(True)
        try:
            return step()
        finally:
            set_compile(before)

    return run


def sped_up_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, amp: bool,
                 speedup: str) -> Callable[[], object]:
    """The training step of ``model`` with one of :data:`SPEEDUPS` applied."""
    parts = speedup.split("+")
    if "channels-last" in parts and images.dim() == 4:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    if "model-compile" in parts:  # as `mpbn train` compiles (run.compile)
        model = compile_model(model, images.device)
    step = make_step(model, images, labels, amp or "bf16" in parts)
    return with_neuron_compile(step) if "neuron-compile" in parts else step


def build_variants(args: argparse.Namespace, device: torch.device
                   ) -> dict[str, Callable[[], object]]:
    """Name -> training-step closure for the ANN and every (mpbn, backend) SNN."""
    extra = {} if args.width is None else {"width": args.width}
    if args.input_size is not None:
        extra["input_size"] = args.input_size
    common = dict(num_classes=args.num_classes, norm=args.norm, **extra)
    generator = torch.Generator().manual_seed(0)
    snn_probe = create(args.model, timesteps=args.timesteps, mpbn="none", **common)
    shape = snn_probe.input_shape
    images = torch.rand(args.batch, *shape, generator=generator).to(device)
    labels = torch.randint(0, args.num_classes, (args.batch,), generator=generator).to(device)
    variants: dict[str, Callable[[], object]] = {}
    if not args.no_ann:
        torch.manual_seed(0)
        ann = to_ann(create(args.model, timesteps=1, mpbn="none", **common)).to(device)
        ann_images = images.repeat(args.timesteps, *([1] * len(shape)))
        ann_labels = labels.repeat(args.timesteps)
        variants[f"ANN T=1 B={args.timesteps * args.batch}"] = make_step(
            ann, ann_images, ann_labels, args.amp)
    for mode in args.mpbn:
        for backend in args.backends:
            torch.manual_seed(0)
            model = create(args.model, timesteps=args.timesteps, mpbn=mode, backend=backend,
                           **common).to(device)
            variants[snn_name(mode, backend)] = make_step(model, images, labels, args.amp)
        for speedup in args.speedups:
            torch.manual_seed(0)
            model = create(args.model, timesteps=args.timesteps, mpbn=mode,
                           backend=args.backends[0], **common).to(device)
            variants[snn_name(mode, args.backends[0], speedup)] = sped_up_step(
                model, images, labels, args.amp, speedup)
    return variants


def snn_name(mode: str, backend: str, speedup: str | None = None) -> str:
    return f"SNN mpbn={mode} {backend}" + (f" +{speedup}" if speedup else "")


def round_robin(fns: dict[str, Callable[[], object]], device: torch.device, rounds: int,
                warmup: int) -> dict[str, list[float]]:
    """Seconds per call of every function, one call of each per round."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def paired_ratio(times: dict[str, list[float]], num: str, den: str) -> float:
    """Median over rounds of ``times[num][r] / times[den][r]``."""
    return statistics.median(a / b for a, b in zip(times[num], times[den], strict=True))


def ratio_rows(args: argparse.Namespace, times: dict[str, list[float]]
               ) -> list[tuple[str, float, str]]:
    """``(label, ratio, target)`` for the comparisons the issue asks for, where measured."""
    rows = []
    ann = next((n for n in times if n.startswith("ANN")), None)
    for backend in args.backends:
        base = snn_name("none", backend)
        if ann and base in times:
            rows.append((f"SNN T={args.timesteps} ({backend}) / {ann}",
                         paired_ratio(times, base, ann), "<= 1.2 (GPU, ResNet19 T=2)"))
        for mode in args.mpbn:
            name = snn_name(mode, backend)
            if mode != "none" and base in times and name in times:
                rows.append((f"MPBN {mode} / no MPBN ({backend})",
                             paired_ratio(times, name, base), "<= 1.10 (GPU)"))
    for mode in args.mpbn:
        plain = snn_name(mode, args.backends[0])
        for speedup in args.speedups:
            name = snn_name(mode, args.backends[0], speedup)
            rows.append((f"+{speedup} / without (mpbn={mode}, {args.backends[0]})",
                         paired_ratio(times, name, plain), "-"))
    if "reference" in args.backends and "fused" in args.backends:
        for mode in args.mpbn:
            ref, fus = snn_name(mode, "reference"), snn_name(mode, "fused")
            if ref in times and fus in times:
                rows.append((f"reference / fused (mpbn={mode})",
                             paired_ratio(times, ref, fus), "-"))
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet19",
                        help="a registered model (resnet19, resnet20, resnet20_narrow, ...)")
    parser.add_argument("--width", type=int, default=None,
                        help="first-stage channels (default: the model's; e.g. 32 on CPU)")
    parser.add_argument("--batch", type=int, default=None,
                        help="B per step (default 64 on CUDA, 8 on CPU)")
    parser.add_argument("--timesteps", type=int, default=2)
    parser.add_argument("--input-size", type=int, default=None)
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--norm", default="bn")
    parser.add_argument("--mpbn", nargs="+", default=["none", "channel", "element"],
                        choices=["none", "channel", "element"])
    parser.add_argument("--backends", nargs="+", default=["fused", "reference"],
                        choices=["fused", "reference", "auto"])
    parser.add_argument("--speedups", nargs="+", default=[], choices=SPEEDUPS,
                        help="also time each SNN of the first backend with these applied")
    parser.add_argument("--no-ann", action="store_true", help="skip the ANN variant")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (1 disturbs a shared machine least)")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.batch is None:
        args.batch = 64 if args.device.startswith("cuda") else 8
    return args


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Run the benchmark, print the tables; returns medians (ms) and ratios for tests."""
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine_header(device))
    width = "default" if args.width is None else args.width
    print(f"model {args.model} (width {width}), T={args.timesteps}, B={args.batch}, "
          f"norm {args.norm}, amp {'bf16' if args.amp else 'off'}, {args.rounds} rounds "
          f"round-robin after {args.warmup} warm-up")
    variants = build_variants(args, device)
    if args.amp:
        # Under autocast the LIF input is bf16 while MPBN parameters are float32: the fused
        # path does not apply (backend="fused" says so instead of silently falling back), and
        # some reference paths fail on CPU. Report and drop those variants.
        for name, fn in list(variants.items()):
            try:
                fn()
            except (ValueError, RuntimeError) as error:
                print(f"  {name}: skipped under --amp ({type(error).__name__}: "
                      f"{str(error).splitlines()[0]})")
                del variants[name]
    times = round_robin(variants, device, args.rounds, args.warmup)
    medians = {name: statistics.median(ts) * 1e3 for name, ts in times.items()}
    ann = next((n for n in times if n.startswith("ANN")), None)
    print(f"\n{'variant':44} {'median ms':>10} {'min ms':>9}" + (f" {'/ ANN':>7}" if ann else ""))
    for name, ts in times.items():
        line = f"{name:44} {medians[name]:>10.1f} {min(ts) * 1e3:>9.1f}"
        if ann:
            line += f" {paired_ratio(times, name, ann):>6.2f}x"
        print(line)
    rows = ratio_rows(args, times)
    print(f"\n{'ratio (median of per-round ratios)':48} {'measured':>9}  target")
    for label, value, target in rows:
        print(f"{label:48} {value:>8.2f}x  {target}")
    if hasattr(os, "getloadavg"):
        print("load average at end: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    return {"medians_ms": medians, "ratios": {label: value for label, value, _ in rows}}


if __name__ == "__main__":
    main()
