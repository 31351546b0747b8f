"""Memory a training step keeps for backward, against what backward strictly needs.

For a spiking ResNet (default ResNet19) at T = 1, 2, 4 and each MPBN mode / neuron backend,
the forward pass runs under :func:`torch.autograd.graph.saved_tensors_hooks`, which sees every
tensor autograd saves for backward (including the fused LIF's ``save_for_backward``). Saved
tensors are de-duplicated by storage (a view saved twice, or the spikes saved both by an MPBN
neuron and by the next conv, count once, at their storage's size); parameters and buffers are
model state and are reported apart. This is the activation memory at the end of the forward,
i.e. the peak of a training step up to the transient gradients of backward.

The lower bound ("need") is counted from the layers, with ideal storage types:

- every conv / linear input once (its weight gradient needs it): 1 B per element where it is
  binary spikes, its dtype's size otherwise (the image, the classifier's averaged features);
- every norm's input in its dtype (BN backward needs ``x`` or ``x_hat``; the stem's norm sees
  ``T`` identical copies of one step, which count once) plus ``2 C`` statistics;
- every LIF's pre-reset potential ``u_pre`` (what the fused backward reads), plus ``2 T F``
  statistics for training-mode MPBN (the spikes it also reads are the next conv's input).

Every activation has the batch as a factor, so both counts are ``B * (a * T + b)`` (``b``: the
stem, whose conv runs once per image under direct encoding) plus ``B``-independent statistics;
the script fits ``a, b`` on T = 1, 2 and checks the prediction at the largest T. Float tensors
whose values are all 0 or 1 (spikes stored as float32 where bool would do) are flagged.

On CUDA the script also runs a whole training step and reports
``torch.cuda.max_memory_allocated`` above the memory held before the step.

``--checkpointing`` adds a second table: the peak tensor memory of a whole training step
(forward and backward; ``torch.distributed._tools.mem_tracker.MemTracker``, which counts CPU
tensors too) with activation checkpointing off and on (``set_grad_checkpointing(every=N)``).

Usage::

    python benchmarks/bench_memory.py                       # ResNet19, B = 2, T = 1 2 4
    python benchmarks/bench_memory.py --width 32 --batch 4 --threads 1
    python benchmarks/bench_memory.py --verbose             # every saved tensor, by layer
    python benchmarks/bench_memory.py --checkpointing 1 2   # peak of a step, checkpointing
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from _host import allocator
from torch import Tensor, nn

from mpbn.layers import LIF
from mpbn.layers.norm import SeqNorm
from mpbn.models import create

__all__ = ["SavedTensor", "MemoryReport", "account", "main"]

MIB = 1024 * 1024


@dataclass
class SavedTensor:
    """One storage that autograd keeps for backward."""

    nbytes: int
    dtype: torch.dtype
    shape: tuple[int, ...]
    binary: bool  # a float tensor whose values are all 0 or 1: bool (1 B) would do
    savers: list[str] = field(default_factory=list)  # modules that saved it, innermost name


@dataclass
class MemoryReport:
    """Saved-for-backward bytes of one forward pass and the lower bound for the same model."""

    saved: dict[int, SavedTensor]  # activation storages, keyed by storage address
    state_bytes: int  # parameters and buffers that were saved (held by the model anyway)
    need_bytes: int
    need_items: dict[str, int]  # need by layer kind

    @property
    def saved_bytes(self) -> int:
        return sum(s.nbytes for s in self.saved.values())

    @property
    def binary_float_bytes(self) -> int:
        return sum(s.nbytes for s in self.saved.values()
                   if s.binary and s.dtype.itemsize > 1)

    @property
    def saved_bytes_if_bool(self) -> int:
        """Saved bytes had every binary float tensor been stored as bool."""
        return sum(s.nbytes // s.dtype.itemsize if s.binary else s.nbytes
                   for s in self.saved.values())

    @property
    def ratio(self) -> float:
        return self.saved_bytes / self.need_bytes


def _is_binary(t: Tensor) -> bool:
    if not t.is_floating_point() or t.numel() == 0 or t.device.type == "meta":
        return False
    with torch.no_grad():
        return bool(((t == 0) | (t == 1)).all())


def _storage_key(t: Tensor) -> int:
    return t.untyped_storage().data_ptr()


def _used_bytes(t: Tensor, itemsize: int) -> int:
    """Bytes of ``t``'s information at ``itemsize`` per element; an expanded view (stride 0,
    e.g. the stem's ``T`` identical steps) counts the elements its storage actually holds."""
    elements = min(t.numel(), t.untyped_storage().nbytes() // t.element_size())
    return elements * itemsize


@contextlib.contextmanager
def _module_stack(model: nn.Module, stack: list[str]) -> Iterator[None]:
    """Keep ``stack`` at the names of the modules whose forward is running."""
    handles = []

    def leave(_module: nn.Module, _args: object, _out: object) -> None:
        stack.pop()  # (a forward hook that returns something replaces the output)

    for name, module in model.named_modules():
        label = name or type(module).__name__
        handles.append(module.register_forward_pre_hook(
            lambda _m, _i, label=label: stack.append(label) and None))
        handles.append(module.register_forward_hook(leave))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def _need_hooks(model: nn.Module, items: dict[str, int], inputs: dict[int, int]
                ) -> Iterator[None]:
    """Count the strict need (module docstring) from the inputs the layers see."""
    handles = []

    def weighted_input(module: nn.Module, args: tuple[Tensor, ...]) -> None:
        x = args[0]
        if not any(p.requires_grad for p in module.parameters(recurse=False)):
            return
        key = _storage_key(x)
        size = _used_bytes(x, 1 if _is_binary(x) else x.element_size())
        inputs[key] = max(inputs.get(key, 0), size)

    def norm_input(module: SeqNorm, args: tuple[Tensor, ...]) -> None:
        if module.training:
            x = args[0]
            items["norm inputs"] += _used_bytes(x, x.element_size())
            items["statistics"] += 2 * module.num_features * x.element_size()

    def neuron_input(module: LIF, args: tuple[Tensor, ...]) -> None:
        x = args[0]
        items["LIF u_pre"] += x.numel() * x.element_size()
        mbn = module.membrane_norm
        if mbn is not None and mbn.training:
            items["statistics"] += 2 * x.shape[0] * mbn.weight.numel() * x.element_size()

    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            handles.append(module.register_forward_pre_hook(weighted_input))
        elif isinstance(module, SeqNorm):
            handles.append(module.register_forward_pre_hook(norm_input))
        elif isinstance(module, LIF):
            handles.append(module.register_forward_pre_hook(neuron_input))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def account(model: nn.Module, x: Tensor) -> tuple[MemoryReport, Tensor]:
    """Run ``model(x)`` recording what is saved for backward; returns the report and output."""
    state = {_storage_key(t) for t in (*model.parameters(), *model.buffers())}
    saved: dict[int, SavedTensor] = {}
    state_seen: dict[int, int] = {}
    stack: list[str] = []
    items = {"conv/linear inputs": 0, "norm inputs": 0, "LIF u_pre": 0, "statistics": 0}
    inputs: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        key = _storage_key(t)
        if key in state:
            state_seen[key] = t.untyped_storage().nbytes()
            return t
        saver = stack[-1] if stack else "(outside modules)"
        if key not in saved:
            saved[key] = SavedTensor(t.untyped_storage().nbytes(), t.dtype, tuple(t.shape),
                                     _is_binary(t))
        if saver not in saved[key].savers:
            saved[key].savers.append(saver)
        return t  # the tensor itself: the accounting must not change what is held

    with (_module_stack(model, stack), _need_hooks(model, items, inputs),
          torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)):
        out = model(x)
    items["conv/linear inputs"] = sum(inputs.values())
    report = MemoryReport(saved, sum(state_seen.values()), sum(items.values()), items)
    return report, out


def cuda_step_peak(model: nn.Module, x: Tensor, labels: Tensor) -> int:
    """Bytes a whole SGD step allocates on top of what was allocated before it (CUDA)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    for _ in range(2):  # the second step has momentum buffers, as in training
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), labels).backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    F.cross_entropy(model(x), labels).backward()
    optimizer.step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def step_peak(model: nn.Module, x: Tensor) -> dict[str, int]:
    """Peak bytes of tensors alive during one forward + backward, by kind (MemTracker)."""
    from torch.distributed._tools.mem_tracker import MemTracker

    tracker = MemTracker()
    tracker.track_external(model)
    with tracker:
        model(x).float().square().mean().backward()
    peak = tracker.get_tracker_snapshot("peak")[x.device]
    model.zero_grad(set_to_none=True)
    return {str(getattr(k, "name", k)).lower(): v for k, v in peak.items()}


def checkpointing_table(args: argparse.Namespace, device: torch.device,
                        extra: dict[str, object]) -> list[dict[str, object]]:
    """Peak of a training step with checkpointing off (0) and every ``N`` units per segment."""
    settings = [0, *args.checkpointing]
    print("\npeak MiB of one training step (forward + backward, tensors alive; MemTracker), "
          "fused neuron, checkpointing every N units (0: off)")
    print(f"{'mpbn':8} {'T':>3} " + " ".join(f"{f'N={n}':>9}" for n in settings)
          + "   best / N=0")
    rows = []
    for mode in args.mpbn:
        for steps in args.timesteps:
            peaks = {}
            for every in settings:
                torch.manual_seed(0)
                model = create(args.model, timesteps=steps, mpbn=mode, backend="fused",
                               norm=args.norm, **extra).to(device).train()
                model.set_grad_checkpointing(every > 0, every=max(every, 1))
                x = torch.rand(args.batch, *model.input_shape, device=device)
                peaks[every] = step_peak(model, x)
            rows.append({"mpbn": mode, "T": steps, "peaks": peaks})
            best = min(peaks[n]["total"] for n in settings)
            print(f"{mode:8} {steps:>3} " + " ".join(
                f"{peaks[n]['total'] / MIB:>9.2f}" for n in settings)
                + f"   {best / peaks[0]['total']:.2f}x")
    return rows


def _print_saved(report: MemoryReport) -> None:
    for s in sorted(report.saved.values(), key=lambda s: -s.nbytes):
        flag = "  binary float" if s.binary and s.dtype.itemsize > 1 else ""
        print(f"      {s.nbytes / 1024:>10.1f} KiB {str(s.dtype):>14} {str(list(s.shape)):>24} "
              f"{', '.join(s.savers)}{flag}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet19")
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--timesteps", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--input-size", type=int, default=None)
    parser.add_argument("--norm", default="bn")
    parser.add_argument("--mpbn", nargs="+", default=["none", "channel", "element"],
                        choices=["none", "channel", "element"])
    parser.add_argument("--backends", nargs="+", default=["fused", "reference"],
                        choices=["fused", "reference", "auto"])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--verbose", action="store_true", help="list every saved tensor")
    parser.add_argument("--checkpointing", type=int, nargs="*", default=None, metavar="N",
                        help="add the step-peak table with grad checkpointing every N units")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    """Print the table; returns one dict per (mpbn, backend, T) row for tests."""
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
          f"{platform.processor() or platform.machine()}, allocator: {allocator()}")
    if hasattr(os, "getloadavg"):
        print("load average: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    extra = {} if args.width is None else {"width": args.width}
    if args.input_size is not None:
        extra["input_size"] = args.input_size
    width = "default" if args.width is None else args.width
    print(f"model {args.model} (width {width}), B={args.batch}, norm {args.norm}; "
          "MiB saved for backward at the end of the forward (activations; parameters apart)\n")
    head = (f"{'mpbn':8} {'backend':9} {'T':>2} {'saved':>9} {'binary f32':>10} {'need':>9} "
            f"{'saved/need':>10} {'if bool':>8} {'state':>7}")
    if device.type == "cuda":
        head += f" {'CUDA step peak':>15}"
    print(head)
    rows: list[dict[str, object]] = []
    for mode in args.mpbn:
        for backend in args.backends:
            fits: dict[int, tuple[int, int]] = {}
            for steps in args.timesteps:
                torch.manual_seed(0)
                model = create(args.model, timesteps=steps, mpbn=mode, backend=backend,
                               norm=args.norm, **extra).to(device)
                x = torch.rand(args.batch, *model.input_shape, device=device)
                report, _ = account(model, x)
                fits[steps] = (report.saved_bytes, report.need_bytes)
                row = {"mpbn": mode, "backend": backend, "T": steps,
                       "saved": report.saved_bytes, "need": report.need_bytes,
                       "binary_float": report.binary_float_bytes, "ratio": report.ratio,
                       "ratio_if_bool": report.saved_bytes_if_bool / report.need_bytes,
                       "need_items": report.need_items}
                line = (f"{mode:8} {backend:9} {steps:>2} {report.saved_bytes / MIB:>9.2f} "
                        f"{report.binary_float_bytes / MIB:>10.2f} {report.need_bytes / MIB:>9.2f}"
                        f" {report.ratio:>9.2f}x {row['ratio_if_bool']:>7.2f}x "
                        f"{report.state_bytes / MIB:>7.2f}")
                if device.type == "cuda":
                    labels = torch.zeros(args.batch, dtype=torch.long, device=device)
                    row["cuda_peak"] = cuda_step_peak(model, x, labels)
                    line += f" {row['cuda_peak'] / MIB:>14.2f}"
                print(line)
                if args.verbose:
                    _print_saved(report)
                rows.append(row)
            _print_fit(fits, args.batch)
    print("\nsaved/need: measured over the lower bound; if bool: the same had every binary "
          "float tensor (spikes) been stored as bool; state: parameters/buffers autograd also "
          "saved (not counted in 'saved')")
    if args.checkpointing:
        rows += checkpointing_table(args, device, extra)
    return rows


def _print_fit(fits: dict[int, tuple[int, int]], batch: int) -> None:
    """Per sample, ``bytes = a T + b``: fit on the two smallest T, check on the largest."""
    if len(fits) < 3:
        return
    t0, t1, *_, tn = sorted(fits)
    parts = []
    for index, label in ((0, "saved"), (1, "need")):
        a = (fits[t1][index] - fits[t0][index]) / (t1 - t0)
        b = fits[t0][index] - a * t0
        predicted = a * tn + b
        parts.append(f"{label} = B x ({a / batch / 1024:.1f} T + {b / batch / 1024:.1f}) KiB "
                     f"(T={tn}: predicted {predicted / MIB:.2f}, measured "
                     f"{fits[tn][index] / MIB:.2f} MiB)")
    print("    " + "; ".join(parts))


if __name__ == "__main__":
    main()
