"""Neuron fwd+bwd: the reference loop vs the fused paths vs the memory floor, side by side.

For LIF and MPBN-LIF (channel-wise, training mode) and T = 1, 2, 4, 8 at ``x = [T, B, C, H, W]``
(default ``[T, 32, 128, 16, 16]``), prints the median fwd+bwd time of:

- ``reference``: :func:`mpbn.functional.neuron.lif_step` over time under autograd;
- ``eager``: :class:`mpbn.functional.fused.FusedLIF` with torch ops;
- ``compiled``: the same code through ``torch.compile`` (first-call compile time printed);
- ``triton``: the Triton kernels (CUDA only; MPBN training mode runs the torch code there);
- ``spikingjelly``: its multi-step ``LIFNode`` / ``MPBNLIFNode`` (torch backend on CPU) when
  ``spikingjelly`` is importable;
- ``floor``: the bytes a fused kernel must move (24 B per float32 element-step for LIF: read x,
  write spikes, save ``u_pre``, and the same again backward; 40 B for MPBN-LIF, which also reads
  ``u_pre`` for the per-step statistics and reads the spikes back) divided by the streaming
  bandwidth measured in this run (``torch.add(a, b, out=c)``, 12 B per element).

Usage::

    python benchmarks/bench_neuron.py                 # full shape, T = 1 2 4 8
    python benchmarks/bench_neuron.py --small         # [T, 8, 32, 8, 8]: a quick look
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 python benchmarks/bench_neuron.py
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

from mpbn.functional import fused
from mpbn.layers import LIF

FLOOR_BYTES = {"LIF": 24, "MPBN-LIF": 40}


def allocator() -> str:
    preload = os.environ.get("LD_PRELOAD", "")
    if "jemalloc" in preload:
        return f"jemalloc (LD_PRELOAD={preload})"
    if "tcmalloc" in preload:
        return f"tcmalloc (LD_PRELOAD={preload})"
    return "glibc malloc"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_ms(fn: Callable[[], object], device: torch.device, repeats: int,
              warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def interleaved_medians_ms(fns: dict[str, Callable[[], object]], device: torch.device,
                           repeats: int) -> dict[str, float]:
    """Median ms of each function, timed round-robin so that all see the same machine load."""
    for fn in fns.values():
        for _ in range(2):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) * 1e3 for name, ts in times.items()}


def bandwidth_gbs(numel: int, device: torch.device, repeats: int) -> float:
    """Streaming bandwidth of ``torch.add(a, b, out=c)``: 12 B per float32 element."""
    a = torch.randn(numel, device=device)
    b = torch.randn(numel, device=device)
    c = torch.empty_like(a)
    ms = median_ms(lambda: torch.add(a, b, out=c), device, repeats * 2)
    return 12 * numel / (ms * 1e-3) / 1e9


def fwd_bwd(module: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        xi = x.detach().requires_grad_(True)
        module(xi).backward(grad)

    return run


def fused_fwd_bwd(kind: str, backend: str, x: torch.Tensor, grad: torch.Tensor,
                  channels: int) -> Callable[[], None]:
    module = LIF(membrane_norm="channel" if kind == "MPBN-LIF" else None,
                 num_features=channels).to(x.device)

    def run() -> None:
        xi = x.detach().requires_grad_(True)
        norm = None
        mbn = module.membrane_norm
        if mbn is not None:
            norm = fused.MembraneNormArgs("channel", mbn.weight, mbn.bias, mbn.running_mean,
                                          mbn.running_var, mbn.eps, mbn.momentum, True)
        fused.lif_fused(xi, norm=norm, backend=backend).backward(grad)

    return run


def spikingjelly_fwd_bwd(kind: str, x: torch.Tensor,
                         grad: torch.Tensor) -> Callable[[], None] | None:
    """SpikingJelly's multi-step LIFNode / MPBNLIFNode with our decay (tau = 1 / (1 - 0.25))."""
    try:
        from spikingjelly.activation_based import neuron, surrogate
    except ImportError:
        return None
    common = dict(tau=4 / 3, decay_input=False, v_threshold=0.5, v_reset=0.0,
                  surrogate_function=surrogate.ATan(), step_mode="m")
    if kind == "LIF":
        node = neuron.LIFNode(**common)
    else:
        node = neuron.MPBNLIFNode(**common, out_channels=x.shape[2])
    node = node.to(x.device)

    def run() -> None:
        node.reset()
        xi = x.detach().requires_grad_(True)
        node(xi).backward(grad)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs="+", default=[32, 128, 16, 16],
                        help="one step's shape [B, C, ...]")
    parser.add_argument("--small", action="store_true", help="use [8, 32, 8, 8]")
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled variant")
    parser.add_argument("--back-to-back", action="store_true",
                        help="time each variant in its own loop (warm caches) instead of "
                             "round-robin (steadier under load, caches shared)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (1 is steadier on a shared machine)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    shape = [8, 32, 8, 8] if args.small else args.shape
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
          f"{platform.processor() or platform.machine()}, allocator: {allocator()}")
    if device.type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name()}")
    if hasattr(os, "getloadavg"):  # other processes on a shared machine skew every column
        print("load average at start: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    step_numel = 1
    for s in shape:
        step_numel *= s
    bw_numel = max(step_numel * 4, 1 << 24)
    bandwidths = [bandwidth_gbs(bw_numel, device, args.repeats * 2)]
    print(f"streaming bandwidth (torch.add out=): {bandwidths[0]:.1f} GB/s; step shape {shape}")

    variants = ["reference", "eager"]
    if not args.no_compile and device.type == "cpu":
        variants.append("compiled")
    if device.type == "cuda":
        from mpbn.functional import triton_lif

        if triton_lif.available():
            variants.append("triton")
    rows = []
    for kind in ("LIF", "MPBN-LIF"):
        for steps in args.steps:
            x = torch.randn(steps, *shape, device=device) * 0.8 + 0.3
            grad = torch.randn_like(x)
            fns = {}
            for variant in variants:
                if variant == "reference":
                    module = LIF(backend="reference", membrane_norm="channel"
                                 if kind == "MPBN-LIF" else None, num_features=shape[1])
                    fns[variant] = fwd_bwd(module.to(device), x, grad)
                else:
                    fns[variant] = fused_fwd_bwd(kind, variant, x, grad, shape[1])
                if variant == "compiled":
                    start = time.perf_counter()
                    fns[variant]()
                    print(f"  compile {kind} T={steps}: {time.perf_counter() - start:.1f} s "
                          "(first call)")
            sj = spikingjelly_fwd_bwd(kind, x, grad)
            if sj is not None:
                fns["spikingjelly"] = sj
            if args.back_to_back:
                times = {name: median_ms(fn, device, args.repeats) for name, fn in fns.items()}
            else:
                times = interleaved_medians_ms(fns, device, args.repeats)
            # Re-measured beside every row: the floor uses the median of all measurements.
            bandwidths.append(bandwidth_gbs(bw_numel, device, args.repeats))
            rows.append((kind, steps, x.numel(), times))
            print(f"  measured {kind} T={steps}: "
                  + ", ".join(f"{name} {ms:.2f} ms" for name, ms in times.items()))

    bandwidth = statistics.median(bandwidths)
    print(f"\nbandwidth over the run: median {bandwidth:.1f} GB/s "
          f"(min {min(bandwidths):.1f}, max {max(bandwidths):.1f})")
    extra = ["spikingjelly"] if any("spikingjelly" in r[3] for r in rows) else []
    print(f"{'neuron':9} {'T':>2} {'floor':>7} " + " ".join(f"{v:>12}" for v in variants + extra)
          + "  " + " ".join(f"{v + '/floor':>15}" for v in variants[1:]))
    for kind, steps, numel, times in rows:
        floor = FLOOR_BYTES[kind] * numel / (bandwidth * 1e9) * 1e3
        print(f"{kind:9} {steps:>2} {floor:>7.2f} "
              + " ".join(f"{times[v]:>12.2f}" if v in times else f"{'-':>12}"
                         for v in variants + extra)
              + "  " + " ".join(f"{times[v] / floor:>14.2f}x" for v in variants[1:]))
    print("\nspeed-up of the fastest fused variant over the reference loop:")
    for kind, steps, _, times in rows:
        best = min((times[v], v) for v in variants[1:])
        print(f"  {kind:9} T={steps}: {times['reference'] / best[0]:.1f}x ({best[1]})")
    order = "back to back" if args.back_to_back else "round-robin"
    print(f"\ntimes are medians in ms of forward+backward, timed {order}; "
          "floor = bytes / median measured bandwidth")

if __name__ == "__main__":
    main()
