"""Neuron fwd+bwd: the reference loop vs the fused paths vs the memory floor, side by side.

For LIF and MPBN-LIF (channel-wise, training mode) and T = 1, 2, 4, 8 at ``x = [T, B, C, H, W]``
(default ``[T, 32, 128, 16, 16]``), prints the median fwd+bwd time of:

- ``reference``: :func:`mpbn.functional.neuron.lif_step` over time under autograd;
- ``eager``: :class:`mpbn.functional.fused.FusedLIF` with torch ops;
- ``compiled``: the same code through ``torch.compile`` (first-call compile time printed);
- ``triton``: the Triton kernels (CUDA only; training-mode MPBN: one launch per step);
- ``spikingjelly``: its multi-step ``LIFNode`` / ``MPBNLIFNode`` (torch backend on CPU) when
  ``spikingjelly`` is importable;
- ``floor``: the time to stream the bytes a fused kernel must move (24 B per float32
  element-step for LIF: read x, write spikes, save ``u_pre``, and the same again backward; 40 B
  for MPBN-LIF, which also reads ``u_pre`` for the per-step statistics and reads the spikes
  back) with ``torch.add(a, b, out=c)`` (12 B per element) over as many elements, timed in the
  same rounds as the variants. A ``variant/floor`` ratio is the median of the per-round ratios,
  so a drift of the machine's memory bandwidth (a shared cloud host) moves both alike.

Usage::

    python benchmarks/bench_neuron.py                 # full shape, T = 1 2 4 8
    python benchmarks/bench_neuron.py --small         # [T, 8, 32, 8, 8]: a quick look
    # glibc keeping freed memory (no fresh mmap + page faults per large tensor):
    GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=17179869184 \
        python benchmarks/bench_neuron.py
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
from _host import allocator

from mpbn.functional import fused
from mpbn.layers import LIF

# Floor bytes per float32 element-step, (forward, backward): LIF forward reads x, writes spikes
# and u_pre; backward reads the gradient and u_pre, writes dL/dx. MPBN-LIF forward also reads
# u_pre back for the step's statistics, and its backward reads g and u_pre twice (reductions,
# then apply).
FLOOR_SPLIT = {"LIF": (12, 12), "MPBN-LIF": (16, 24)}
FLOOR_BYTES = {kind: sum(split) for kind, split in FLOOR_SPLIT.items()}  # 24 B and 40 B


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_ms(fn: Callable[[], object], device: torch.device) -> float:
    """ms of one call; a function that returns a float has timed itself (its part of the call)."""
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    elapsed = (time.perf_counter() - start) * 1e3
    return result if isinstance(result, float) else elapsed


def median_ms(fn: Callable[[], object], device: torch.device, repeats: int,
              warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    return statistics.median(timed_ms(fn, device) for _ in range(repeats))


def interleaved_times_ms(fns: dict[str, Callable[[], object]], device: torch.device,
                         repeats: int) -> dict[str, list[float]]:
    """Per-round ms of each function, timed round-robin so that all see the same machine load."""
    for fn in fns.values():
        for _ in range(2):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed_ms(fn, device))
    return times


def stream(nbytes: int, device: torch.device) -> Callable[[], object]:
    """``torch.add(a, b, out=c)`` over ``nbytes / 12`` float32 elements: streams ``nbytes``."""
    numel = max(nbytes // 12, 1)
    a = torch.randn(numel, device=device)
    b = torch.randn(numel, device=device)
    c = torch.empty_like(a)
    return lambda: torch.add(a, b, out=c)


def fwd_bwd(module: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        xi = x.detach().requires_grad_(True)
        module(xi).backward(grad)

    return run


def fused_fwd_bwd(kind: str, backend: str, x: torch.Tensor, grad: torch.Tensor,
                  channels: int, part: str = "both") -> Callable[[], float | None]:
    """Forward + backward of the fused neuron; ``part="forward"`` or ``"backward"`` times one.

    For ``"backward"`` the returned function runs the forward untimed and returns the ms of the
    backward alone (the timers use a returned float instead of their own clock).
    """
    module = LIF(membrane_norm="channel" if kind == "MPBN-LIF" else None,
                 num_features=channels).to(x.device)

    def forward() -> torch.Tensor:
        xi = x.detach().requires_grad_(True)
        norm = None
        mbn = module.membrane_norm
        if mbn is not None:
            norm = mbn.fused_args()
        return fused.lif_fused(xi, module.params_for(xi[0]), norm=norm, backend=backend)

    def run() -> float | None:
        if part == "forward":
            forward()
            return None
        out = forward()
        if part == "both":
            out.backward(grad)
            return None
        sync(x.device)
        start = time.perf_counter()
        out.backward(grad)
        sync(x.device)
        return (time.perf_counter() - start) * 1e3

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


def over_floor(times: dict[str, list[float]], name: str, interleaved: bool) -> float:
    """``name`` over the floor: median of per-round ratios (interleaved) or ratio of medians."""
    if interleaved:
        return statistics.median(t / f for t, f in zip(times[name], times["floor"], strict=True))
    return statistics.median(times[name]) / statistics.median(times["floor"])


def main(argv: list[str] | None = None) -> list[dict]:
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
    parser.add_argument("--split", action="store_true",
                        help="also time the fastest fused variant's forward and backward apart, "
                             "each against its own floor")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
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
    print(f"step shape {shape}")

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
            fns = {"floor": stream(FLOOR_BYTES[kind] * x.numel(), device)}
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
                times = {name: [median_ms(fn, device, args.repeats)] for name, fn in fns.items()}
            else:
                times = interleaved_times_ms(fns, device, args.repeats)
            medians = {name: statistics.median(ts) for name, ts in times.items()}
            ratios = {name: over_floor(times, name, not args.back_to_back)
                      for name in fns if name != "floor"}
            bandwidth = FLOOR_BYTES[kind] * x.numel() / (medians["floor"] * 1e-3) / 1e9
            rows.append(dict(kind=kind, steps=steps, medians=medians, over_floor=ratios,
                             bandwidth_gbs=bandwidth))
            print(f"  measured {kind} T={steps}: "
                  + ", ".join(f"{name} {ms:.2f} ms" for name, ms in medians.items()))

    extra = ["spikingjelly"] if any("spikingjelly" in r["medians"] for r in rows) else []
    print(f"\n{'neuron':9} {'T':>2} {'GB/s':>5} {'floor':>7} "
          + " ".join(f"{v:>12}" for v in variants + extra)
          + "  " + " ".join(f"{v + '/floor':>15}" for v in variants[1:]))
    for row in rows:
        medians = row["medians"]
        print(f"{row['kind']:9} {row['steps']:>2} {row['bandwidth_gbs']:>5.1f} "
              f"{medians['floor']:>7.2f} "
              + " ".join(f"{medians[v]:>12.2f}" if v in medians else f"{'-':>12}"
                         for v in variants + extra)
              + "  " + " ".join(f"{row['over_floor'][v]:>14.2f}x" for v in variants[1:]))
    print("\nspeed-up of the fastest fused variant over the reference loop:")
    for row in rows:
        medians = row["medians"]
        best = min((medians[v], v) for v in variants[1:])
        print(f"  {row['kind']:9} T={row['steps']}: {medians['reference'] / best[0]:.1f}x "
              f"({best[1]})")
    order = "back to back" if args.back_to_back else "round-robin"
    per = "ratio of medians" if args.back_to_back else "median of per-round ratios"
    print(f"\ntimes are medians in ms of forward+backward, timed {order}; floor = torch.add(out=) "
          f"streaming the floor's bytes in the same rounds (GB/s: its rate); x/floor = {per}")
    if args.split:
        split_rows(variants[-1], args, shape, device)
    return rows


def split_rows(backend: str, args: argparse.Namespace, shape: list[int],
               device: torch.device) -> None:
    """Forward and backward of one fused variant, each beside a stream of its own floor's bytes."""
    print(f"\n{backend}: forward and backward apart (round-robin, medians in ms; "
          "x/floor = median of per-round ratios)")
    print(f"{'neuron':9} {'T':>2} {'fwd floor':>9} {'forward':>8} {'ratio':>6} "
          f"{'bwd floor':>9} {'backward':>8} {'ratio':>6}")
    for kind in ("LIF", "MPBN-LIF"):
        fwd_bytes, bwd_bytes = FLOOR_SPLIT[kind]
        for steps in args.steps:
            x = torch.randn(steps, *shape, device=device) * 0.8 + 0.3
            grad = torch.randn_like(x)
            fns = {
                "fwd floor": stream(fwd_bytes * x.numel(), device),
                "forward": fused_fwd_bwd(kind, backend, x, grad, shape[1], "forward"),
                "bwd floor": stream(bwd_bytes * x.numel(), device),
                "backward": fused_fwd_bwd(kind, backend, x, grad, shape[1], "backward"),
            }
            times = interleaved_times_ms(fns, device, args.repeats)
            med = {name: statistics.median(ts) for name, ts in times.items()}
            fwd = statistics.median(
                a / b for a, b in zip(times["forward"], times["fwd floor"], strict=True))
            bwd = statistics.median(
                a / b for a, b in zip(times["backward"], times["bwd floor"], strict=True))
            print(f"{kind:9} {steps:>2} {med['fwd floor']:>9.2f} {med['forward']:>8.2f} "
                  f"{fwd:>5.2f}x {med['bwd floor']:>9.2f} {med['backward']:>8.2f} {bwd:>5.2f}x")


if __name__ == "__main__":
    main()
