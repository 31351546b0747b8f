"""One prepared command that proves and measures every CUDA path (tracker issue 14).

Stages, in order, each timed and each failure caught (its traceback recorded) so that the later
stages still run:

1. ``header``: GPU, driver, torch / CUDA / cuDNN / Triton versions, measured copy bandwidth
   and bf16 matmul TFLOP/s.
2. ``correctness``: every fused LIF path (Triton through the real compiler, ``torch.compile``
   on the device, eager) against the reference step over reset x surrogate x membrane norm
   (none / channel / element, train / eval) x T = 1, 2, 4, 8 x float32 / bfloat16 input, plus
   shapes that tile the kernels differently (:mod:`_gpu_correctness`). Any failure makes the
   exit code non-zero.
3. ``neuron``: LIF and MPBN-LIF (channel, element) forward + backward at ``[T, 128, 128, 32,
   32]``: medians of triton / compiled / eager / reference, each over its HBM floor (the bytes
   a fused kernel must move over the copy bandwidth measured in this run).
4. ``train_step``: spiking ResNet19 (paper widths, 32x32, batch 128) at T = 1, 2, 4: SNN vs
   the ANN at batch T*B, no MPBN vs MPBN channel vs element, fp32 vs bf16 autocast, eager vs
   ``torch.compile`` of the model, peak memory; inference of folded MPBN vs the baseline vs
   unfolded MPBN.
5. ``time_to_result``: one epoch through the real data path and training loop
   (:func:`mpbn.engine.train.train_one_epoch`) with the recipe of ``mpbn-resnet19-cifar10-t2``
   (50,000 images: real CIFAR-10 from ``--data-root``, else synthetic files of the same format),
   images/s, s/epoch and the extrapolated time of the preset's epochs; the same for the fastest
   preset.

``--budget-s`` (default 480) bounds the whole run: each stage gets a share of what is left,
sizes its repeats to fit and stops an item that would overrun, saying so in the outputs.
``DIR/gpu_suite.json`` and ``DIR/gpu_suite.md`` are rewritten after every stage, and every
table is printed as it is measured, so a run that is cut off still shows what it had.

Usage::

    PYTHONPATH=. timeout 560 python benchmarks/gpu_suite.py --out /tmp/gpu --budget-s 420
    PYTHONPATH=. python benchmarks/gpu_suite.py --device cpu --quick --out /tmp/rehearsal

``--device cpu --quick`` is the CPU rehearsal: every stage at tiny shapes, the Triton kernels
through ``TRITON_INTERPRET=1`` (set here, before anything imports Triton), targets reported as
``n/a``. Imports: torch, numpy, tqdm (through the training loop) and the standard library.
"""

from __future__ import annotations

import time

_PROCESS_START = time.perf_counter()  # the budget counts imports and CUDA start-up too

import argparse  # noqa: E402
import contextlib  # noqa: E402
import copy  # noqa: E402
import gc  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import pickle  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

STAGES = ("header", "correctness", "neuron", "train_step", "time_to_result")
# Shares of the remaining budget when a stage starts (unused time flows to the later ones).
# Correctness weighs most: a cold Triton cache compiles a few hundred kernel specializations.
STAGE_WEIGHTS = {"header": 0.02, "correctness": 0.32, "neuron": 0.14, "train_step": 0.28,
                 "time_to_result": 0.24}
# The targets of tracker issue 14, item 4.
TARGETS = {
    "lif_floor": 1.3,          # LIF fwd+bwd (Triton) <= 1.3x its HBM floor
    "mpbn_floor": 2.0,         # MPBN-LIF fwd+bwd (Triton) <= 2x its HBM floor
    "snn_over_ann": 1.2,       # ResNet19 T=2 training step <= 1.2x the ANN at batch 2B
    "mpbn_overhead": 1.10,     # MPBN training overhead <= 10 %
    "folded_inference": 1.02,  # folded MPBN inference within 2 % of the baseline
    "epochs_s": 3600.0,        # 400-epoch extrapolation of mpbn-resnet19-cifar10-t2 < 1 hour
}
TIME_PRESET = "mpbn-resnet19-cifar10-t2"
FAST_PRESETS = ("cifar10-fast-t1-baseline", "cifar10-r20narrow-t1-baseline")


def _device_argument(argv: list[str]) -> str:
    for i, arg in enumerate(argv):
        if arg == "--device" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--device="):
            return arg.split("=", 1)[1]
    return "cuda"


# Triton reads TRITON_INTERPRET when it is first imported (torch may import it): set it for a
# CPU rehearsal before torch is imported, so that the kernels run in the interpreter.
if __name__ == "__main__" and _device_argument(sys.argv[1:]).startswith("cpu"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402

# ------------------------------------------------------------------------------------------
# budget


class StageClock:
    """A stage's allowance: ``fits(estimate)`` says whether an item may start."""

    def __init__(self, allowance_s: float) -> None:
        self.allowance_s = max(allowance_s, 0.0)
        self.start = time.perf_counter()
        self.stops: list[str] = []

    def used(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.allowance_s - self.used()

    def fits(self, estimate_s: float) -> bool:
        return estimate_s <= self.left()

    def stop(self, what: str, estimate_s: float) -> None:
        """Record that ``what`` was not run: its estimate did not fit what was left."""
        note = (f"budget: {what} not run (estimated {estimate_s:.1f} s, {max(self.left(), 0):.1f}"
                " s left in this stage)")
        self.stops.append(note)
        print(f"  {note}", flush=True)


class Budget:
    """The whole run's seconds; each stage gets a weighted share of what is left to the stages
    that still run (``--stages`` may leave some out)."""

    def __init__(self, total_s: float, stages: tuple[str, ...] = STAGES) -> None:
        self.total_s = total_s
        self.stages = tuple(s for s in STAGES if s in stages)  # in run order

    def elapsed(self) -> float:
        return time.perf_counter() - _PROCESS_START

    def remaining(self) -> float:
        return self.total_s - self.elapsed()

    def open_stage(self, name: str) -> StageClock:
        later = self.stages[self.stages.index(name):]
        share = STAGE_WEIGHTS[name] / sum(STAGE_WEIGHTS[s] for s in later)
        return StageClock(self.remaining() * share)


# ------------------------------------------------------------------------------------------
# tables and the report


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def cells(self) -> list[list[str]]:
        return [[_cell(v) for v in row] for row in self.rows]

    def text(self) -> str:
        cells = self.cells()
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(self.columns)]
        lines = [self.title, "  ".join(c.ljust(w) for c, w in zip(self.columns, widths,
                                                                     strict=True))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True))
                  for r in cells]
        lines += [f"  ({note})" for note in self.notes]
        return "\n".join(lines)

    def markdown(self) -> str:
        lines = [f"**{self.title}**", "", "| " + " | ".join(self.columns) + " |",
                 "| " + " | ".join("---" for _ in self.columns) + " |"]
        lines += ["| " + " | ".join(v.replace("|", "/") for v in r) + " |" for r in self.cells()]
        lines += [""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines)

    def record(self) -> dict:
        return {"title": self.title, "columns": self.columns, "rows": self.cells(),
                "notes": self.notes}


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.3g}"
    return str(value)


@dataclass
class Context:
    """What every stage gets: the options, the device, the budget, and facts of earlier stages."""

    args: argparse.Namespace
    device: torch.device
    budget: Budget
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def quick(self) -> bool:
        return bool(self.args.quick)

    @property
    def rehearsal(self) -> bool:
        return self.device.type != "cuda"

    def verdict(self, value: float | None, limit: float) -> str:
        """``met`` / ``not met`` against a target, never on CPU or at quick shapes."""
        if self.rehearsal:
            return "n/a (CPU rehearsal)"
        if self.quick:
            return "n/a (quick shapes)"
        if value is None or not math.isfinite(value):
            return "not measured"
        return "met" if value <= limit else "not met"


class StageResult:
    """What a stage returns: its tables, data for the JSON, and failures (each a string)."""

    def __init__(self, on_table: Callable[[], None] = lambda: None) -> None:
        self.tables: list[Table] = []
        self.data: dict[str, Any] = {}
        self.failures: list[str] = []
        self.notes: list[str] = []
        self.on_table = on_table

    def table(self, table: Table) -> Table:
        """Keep ``table``, print it and rewrite the report now (a cut-off run keeps it)."""
        self.tables.append(table)
        print("\n" + table.text() + "\n", flush=True)
        self.on_table()
        return table

    def fail(self, message: str) -> None:
        self.failures.append(message)
        print(f"  FAILURE: {message}", flush=True)


def write_report(out: Path, report: dict) -> None:
    """``gpu_suite.json`` and ``gpu_suite.md`` from the stages so far (rewritten every stage)."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "gpu_suite.json.tmp"
    tmp.write_text(json.dumps(report, indent=1, default=str) + "\n")
    tmp.replace(out / "gpu_suite.json")
    lines = ["# GPU suite", "",
             f"- command: `{report['command']}`",
             f"- device: {report['device']}" + (" (CPU rehearsal: targets n/a)"
                                               if report["rehearsal"] else ""),
             f"- started: {report['started']}, budget {report['budget_s']:.0f} s, "
             f"elapsed {report['elapsed_s']:.1f} s",
             f"- exit code: {report.get('exit_code', 'running')}", "",
             "| stage | status | wall s | budget s | failures | budget stops |",
             "| --- | --- | --- | --- | --- | --- |"]
    for stage in report["stages"]:
        lines.append(f"| {stage['name']} | {stage['status']} | {stage['wall_s']:.1f} | "
                     f"{stage['budget_s']:.1f} | {len(stage['failures'])} | "
                     f"{len(stage['budget_stops'])} |")
    for stage in report["stages"]:
        lines += ["", f"## {stage['name']}: {stage['status']} ({stage['wall_s']:.1f} s)", ""]
        for note in stage["notes"]:
            lines.append(f"- {note}")
        for stop in stage["budget_stops"]:
            lines.append(f"- {stop}")
        for failure in stage["failures"][:50]:
            lines.append(f"- FAILURE: {failure}")
        if len(stage["failures"]) > 50:
            lines.append(f"- ... and {len(stage['failures']) - 50} more failures (JSON)")
        for table in stage["tables"]:
            lines += ["", Table(table["title"], table["columns"], table["rows"],
                                table["notes"]).markdown()]
        if stage.get("error"):
            lines += ["", "```", stage["error"].rstrip(), "```"]
    (out / "gpu_suite.md").write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------------
# timing


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[], object], device: torch.device) -> float:
    """Milliseconds of one call: CUDA events on the GPU, the wall clock on CPU."""
    if device.type == "cuda":
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end))
    begin = time.perf_counter()
    fn()
    return (time.perf_counter() - begin) * 1e3


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def peak_memory_mib(fn: Callable[[], object], device: torch.device) -> float | None:
    """Peak allocated MiB during one call of ``fn`` (CUDA only)."""
    if device.type != "cuda":
        fn()
        return None
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    sync(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def copy_bandwidth_gbs(device: torch.device, nbytes: int, repeats: int = 10) -> float:
    """GB/s of ``dst.copy_(src)`` (reads and writes ``nbytes`` each), median of ``repeats``."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    ms = statistics.median(time_ms(lambda: dst.copy_(src), device) for _ in range(repeats))
    return 2 * nbytes / (ms * 1e-3) / 1e9


def matmul_tflops(device: torch.device, n: int, repeats: int = 10) -> float:
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(2):
        a @ b
    ms = statistics.median(time_ms(lambda: a @ b, device) for _ in range(repeats))
    return 2 * n**3 / (ms * 1e-3) / 1e12


# ------------------------------------------------------------------------------------------
# stage 1: the machine


def _run_text(command: list[str]) -> str | None:
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None


def _driver_version() -> str:
    text = _run_text(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    if text:
        return text.splitlines()[0]
    with contextlib.suppress(OSError):
        return Path("/proc/driver/nvidia/version").read_text().splitlines()[0]
    return "unknown"


def stage_header(ctx: Context, clock: StageClock, result: StageResult) -> None:
    from _host import allocator

    import mpbn
    from mpbn.engine.metrics import git_commit

    device = ctx.device
    facts: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "mpbn": mpbn.__version__,
        "git_commit": git_commit() or "unknown",  # +dirty as in every run's result.json
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "allocator": allocator(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET", ""),
    }
    # Legacy flags (newer torch has fp32_precision settings and may warn on these): facts only.
    for key, read in (("cudnn_allow_tf32", lambda: torch.backends.cudnn.allow_tf32),
                      ("cudnn_benchmark", lambda: torch.backends.cudnn.benchmark)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                facts[key] = bool(read())
        except Exception as error:  # noqa: BLE001 - a fact, never a reason to fail
            facts[key] = f"unreadable ({type(error).__name__})"

    try:
        import triton

        facts["triton"] = triton.__version__
    except ImportError:
        facts["triton"] = "not installed"
    if hasattr(os, "getloadavg"):
        facts["load_average"] = [round(v, 2) for v in os.getloadavg()]
    if device.type == "cuda":
        start = time.perf_counter()
        torch.zeros(1, device=device)
        facts["cuda_init_s"] = round(time.perf_counter() - start, 2)
        props = torch.cuda.get_device_properties(device)
        facts.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                     sm_count=props.multi_processor_count,
                     compute_capability=f"{props.major}.{props.minor}",
                     driver=_driver_version(), cuda=torch.version.cuda,
                     cudnn=torch.backends.cudnn.version())
    nbytes = (1 << 30) if device.type == "cuda" and not ctx.quick else (16 << 20)
    facts["copy_bytes"] = nbytes
    facts["copy_gbs"] = round(copy_bandwidth_gbs(device, nbytes), 1)
    n = 8192 if device.type == "cuda" and not ctx.quick else 256
    facts["bf16_matmul_n"] = n
    facts["bf16_matmul_tflops"] = float(f"{matmul_tflops(device, n):.4g}")
    ctx.facts.update(facts)
    result.data.update(facts)
    result.table(Table("machine", ["fact", "value"], [[k, v] for k, v in facts.items()]))


# ------------------------------------------------------------------------------------------
# stage 2: correctness


def stage_correctness(ctx: Context, clock: StageClock, result: StageResult) -> None:
    import _gpu_correctness as gc_

    from mpbn.functional import lif_backend, triton_lif

    device = ctx.device
    triton_ok = triton_lif.available()
    if not triton_ok:
        why = ("Triton is not importable" if triton_lif.triton is None
               else "no CUDA and no TRITON_INTERPRET=1")
        if device.type == "cuda":
            result.fail(f"the Triton kernels cannot run on this GPU machine: {why} (every GPU "
                        "user would get the eager path)")
        else:
            result.notes.append(f"triton: skipped ({why})")
    # What a user's model gets by default on this device.
    probe = torch.zeros(2, 2, 3, device=device)
    auto = lif_backend.resolve_backend("auto", probe)
    result.data["auto_backend"] = auto
    if device.type == "cuda" and triton_ok and auto != "triton":
        result.fail(f"backend='auto' resolves to {auto!r} on CUDA, not 'triton'")
    result.notes.append(f"backend='auto' on {device.type} float32 resolves to {auto!r}")

    fast_paths = (["triton"] if triton_ok else []) + ["eager"]
    if ctx.quick:
        shape = (3, 4, 3, 3)
        passes = [("quick grid", gc_.quick_cases(shape), fast_paths),
                  ("compiled", gc_.quick_cases(shape)[:1], ["compiled"])]
    else:
        main_shape = (7, 5, 33, 33)
        tilings = [(37, 64, 16, 16), (3, 1, 40, 40), (64, 300)]
        grid = gc_.main_cases(main_shape)
        tiled = gc_.tiling_cases(tilings, main_shape)

        def first(case: Any) -> bool:  # every kernel branch at T = 4 (and detach_reset)
            return case.steps == 4 or case.detach_reset

        # In priority order, so that a budget cut leaves every path and tiling covered once.
        passes = [("main grid, T=4", [c for c in grid if first(c)], fast_paths),
                  ("tilings, T=4 float32", [c for c in tiled if first(c)
                                            and c.dtype == "float32"], fast_paths),
                  ("compiled", gc_.compiled_cases(main_shape), ["compiled"]),
                  ("main grid, T=1, 8, 2", [c for c in grid if not first(c)], fast_paths),
                  ("tilings, the rest", [c for c in tiled if not (first(c) and
                                                                   c.dtype == "float32")],
                   fast_paths)]
    if ctx.args.no_compile:
        passes = [p for p in passes if p[2] != ["compiled"]]
        result.notes.append("compiled path not checked (--no-compile)")
    # The per-function recompile limit is raised by lif_backend; the process-wide one would
    # silently send compiled calls to eager after 256 specializations.
    import torch._dynamo as dynamo

    for key in ("accumulated_recompile_limit", "accumulated_cache_size_limit"):
        if hasattr(dynamo.config, key):
            setattr(dynamo.config, key, max(getattr(dynamo.config, key), 4096))

    records = []
    known: dict[str, list[str]] = {}
    # Cost priors for the first case of a path: the Triton JIT or Inductor compiles dominate.
    priors = {"triton": 30.0, "eager": 2.0, "compiled": 60.0 if device.type == "cuda" else 40.0}
    recent: dict[str, list[float]] = {}
    seed = 0
    for pass_name, cases, backends in passes:
        ran = 0
        for index, case in enumerate(cases):
            seed += 1
            key = "+".join(backends)
            history = recent.get(key, [])
            estimate = 2 * max(history[-3:]) if history else sum(priors[b] for b in backends)
            must = ctx.quick and ran == 0  # a rehearsal runs every path at least once
            if not must and not clock.fits(estimate):
                clock.stop(f"{pass_name}: {len(cases) - index} of {len(cases)} cases on "
                           f"{', '.join(backends)}", estimate)
                break
            start = time.perf_counter()
            try:
                outcome = gc_.check_case(case, backends, device, seed)
            except Exception:  # noqa: BLE001 - record and go on with the next case
                outcome = {b: {"status": "fail", "problems": [traceback.format_exc(limit=8)]}
                           for b in backends}
            recent.setdefault(key, []).append(time.perf_counter() - start)
            ran += 1
            for backend, res in outcome.items():
                record = {"pass": pass_name, "backend": backend, **gc_.case_record(case), **res}
                if res["status"] == "pass" and not res.get("outliers_at_surrogate_jump"):
                    # Passing cases in brief: the JSON must stay small enough to come back.
                    record = {k: record[k] for k in ("pass", "backend", "label", "norm",
                                                     "training", "dtype", "status",
                                                     "max_grad_err", "wall_s")}
                records.append(record)
                if res["status"] == "fail":
                    result.fail(f"{backend} {case.label()}: " + "; ".join(res["problems"]))
                elif res["status"] == "known":
                    known.setdefault(res["problems"][-1], []).append(f"{backend} {case.label()}")
        print(f"  {pass_name}: {ran} of {len(cases)} cases run", flush=True)
        result.data.setdefault("passes", []).append(
            {"pass": pass_name, "cases": len(cases), "run": ran, "backends": backends})
    result.data["cases"] = records

    summary: dict[tuple, list[int]] = {}
    for r in records:
        norm = f"{r['norm']}-" + (("train" if r["training"] else "eval") if r["norm"] != "none"
                                  else ("scalar V_th" if r["training"] else "channel V_th"))
        counts = summary.setdefault((r["backend"], norm, r["dtype"]), [0, 0, 0])
        counts[{"pass": 0, "fail": 1, "known": 2}[r["status"]]] += 1
    table = Table("correctness: fused paths vs the reference step (cases passed / failed / "
                  "known deviations)",
                  ["path", "membrane norm", "input", "passed", "failed", "known", "result"])
    for (backend, norm, dtype), (ok, bad, old) in sorted(summary.items()):
        table.rows.append([backend, norm, dtype, ok, bad, old, "PASS" if bad == 0 else "FAIL"])
    for text, labels in known.items():
        result.notes.append(f"{len(labels)} cases: {text} (e.g. {labels[0]})")
    jumps = sum(1 for r in records if r.get("outliers_at_surrogate_jump"))
    if jumps:
        table.notes.append(f"{jumps} passing cases had a few gradient elements at a surrogate "
                           "jump (allowed, listed in the JSON)")
    table.notes.append("spikes exact; gradients within 2 x the reference's float64 error + slack; "
                       "running statistics as tests/functional/test_fused.py compares them "
                       "(benchmarks/_gpu_correctness.py)")
    for entry in result.data["passes"]:
        table.notes.append(f"{entry['pass']}: {entry['run']} of {entry['cases']} cases on "
                           f"{', '.join(entry['backends'])}")
    result.table(table)


# ------------------------------------------------------------------------------------------
# stage 3: the neuron, forward + backward, against the HBM floor


def _neuron_module(kind: str, shape: tuple[int, ...], backend: str, device: torch.device):
    from mpbn.layers import LIF

    norm = {"LIF": None, "MPBN-LIF channel": "channel", "MPBN-LIF element": "element"}[kind]
    kwargs = {} if norm is None else dict(membrane_norm=norm, num_features=shape[1],
                                          feature_shape=shape[1:])
    return LIF(backend="reference" if backend == "reference" else "fused", **kwargs).to(device)


def stage_neuron(ctx: Context, clock: StageClock, result: StageResult) -> None:
    from _gpu_correctness import forced_backend
    from bench_neuron import FLOOR_BYTES

    from mpbn.functional import lif_backend, triton_lif

    device = ctx.device
    shape = (2, 4, 4, 4) if ctx.quick else (128, 128, 32, 32)
    steps_list = (1, 2) if ctx.quick else (1, 2, 4, 8)
    max_repeats = 3 if ctx.quick else 20
    bandwidth = ctx.facts.get("copy_gbs")
    if not bandwidth:
        bandwidth = copy_bandwidth_gbs(device, (1 << 30) if device.type == "cuda" else 16 << 20)
    result.data["copy_gbs"] = bandwidth
    fast = (["triton"] if triton_lif.available() else []) + ["eager"]
    kinds = ("LIF", "MPBN-LIF channel", "MPBN-LIF element")
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    compile_cost: list[float] = []

    def measure(kind: str, steps: int, backend: str) -> None:
        torch.manual_seed(0)
        x = torch.randn(steps, *shape, device=device) * 0.8 + 0.3
        grad = torch.randn_like(x)
        module = _neuron_module(kind, shape, backend, device)
        chooser = (contextlib.nullcontext if backend == "reference"
                   else lambda: forced_backend(backend))

        def run() -> None:
            xi = x.detach().requires_grad_(True)
            with chooser():
                module(xi).backward(grad)

        lif_backend.STATE.triton_failed = lif_backend.STATE.compile_failed = False
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            start = time.perf_counter()
            run()  # the first call pays the Triton JIT / the compile
            sync(device)
            first_s = time.perf_counter() - start
            one_ms = time_ms(run, device)
            repeats = max_repeats
            if one_ms > 0:
                repeats = int(min(max_repeats, max(3, 0.5 * clock.left() * 1e3 / one_ms /
                                                   max(1, remaining_items[0]))))
            times = [time_ms(run, device) for _ in range(repeats)]
        if lif_backend.STATE.triton_failed or lif_backend.STATE.compile_failed:
            warned = "; ".join(str(w.message) for w in caught)[:400]
            result.fail(f"neuron {kind} T={steps} {backend}: fell back to the torch code "
                        f"({warned})")
            lif_backend.STATE.triton_failed = lif_backend.STATE.compile_failed = False
        if backend == "compiled":
            compile_cost.append(first_s)
        row = rows.setdefault((kind, steps), {"numel": x.numel()})
        row[backend] = statistics.median(times)
        row[f"{backend}_first_s"] = first_s
        row[f"{backend}_repeats"] = repeats

    plan = [(k, t, b) for k in kinds for t in steps_list for b in fast + ["reference"]]
    plan += [(k, t, "compiled") for k in kinds for t in steps_list]
    remaining_items = [len(plan)]
    for kind, steps, backend in plan:
        remaining_items[0] -= 1
        if backend == "compiled":
            estimate = 1.5 * max(compile_cost) if compile_cost else (
                60.0 if device.type == "cuda" else 30.0)
            must = ctx.quick and not compile_cost and kind == "LIF"
        else:
            estimate = 10.0 if (kind, steps) not in rows else 3.0
            must = ctx.quick
        if backend == "compiled" and (ctx.args.no_compile or (ctx.quick and not must)):
            continue  # the notes below say so
        if not must and not clock.fits(estimate):
            clock.stop(f"neuron {kind} T={steps} {backend}", estimate)
            continue
        try:
            measure(kind, steps, backend)
        except Exception:  # noqa: BLE001 - record and go on
            result.fail(f"neuron {kind} T={steps} {backend}: {traceback.format_exc(limit=6)}")
        free_memory(device)  # measure's tensors are gone once it returned

    if ctx.args.no_compile:
        result.notes.append("compiled neuron not timed (--no-compile)")
    elif ctx.quick:
        result.notes.append("quick: the compiled neuron timed for LIF T=1 only")
    variants = fast + ["compiled", "reference"]
    table = Table(f"neuron forward + backward, x = [T, {', '.join(map(str, shape))}] float32, "
                  "training mode, hard reset (medians in ms; / floor in parentheses)",
                  ["neuron", "T", "floor ms"] + variants + ["target (triton / floor)", "met?"])
    data = []
    for (kind, steps), row in rows.items():
        floor_bytes = FLOOR_BYTES["LIF" if kind == "LIF" else "MPBN-LIF"] * row["numel"]
        floor_ms = floor_bytes / (bandwidth * 1e9) * 1e3
        cells: list[Any] = [kind, steps, floor_ms]
        for v in variants:
            cells.append(f"{row[v]:.3f} ({row[v] / floor_ms:.2f}x)" if v in row else "-")
        limit = TARGETS["lif_floor"] if kind == "LIF" else TARGETS["mpbn_floor"]
        ratio = row["triton"] / floor_ms if "triton" in row else None
        cells += [f"<= {limit}x", ctx.verdict(ratio, limit)]
        table.rows.append(cells)
        data.append({"kind": kind, "steps": steps, "floor_ms": floor_ms,
                     "floor_bytes": floor_bytes, **{k: v for k, v in row.items()}})
    table.notes.append(f"floor = {FLOOR_BYTES['LIF']} B (LIF) / {FLOOR_BYTES['MPBN-LIF']} B "
                       f"(MPBN-LIF) per element-step over the copy bandwidth {bandwidth:.0f} GB/s "
                       "measured in this run")
    if device.type != "cuda":
        table.notes.append("CPU rehearsal: the triton column runs the Triton interpreter")
    result.data["rows"] = data
    result.table(table)


# ------------------------------------------------------------------------------------------
# stage 4: the ResNet19 training step, and inference


@dataclass
class StepVariant:
    name: str
    kind: str  # "ANN" or the MPBN mode "none" / "channel" / "element"
    amp: bool
    compiled: bool
    steps: int
    fn: Callable[[], object] | None = None
    first_s: float = 0.0
    step_ms: float = 0.0
    warm_s: float = 0.0  # every warm-up call: with torch.compile, the compiles
    peak_mib: float | None = None
    # compiled variants: one forward + backward of the compiled model against an eager copy
    agreement: dict[str, float] | None = None
    check_s: float = 0.0  # the agreement check's time (it holds the compile)


def _step_variant(ctx: Context, kind: str, steps: int, amp: bool, compiled: bool) -> StepVariant:
    from bench_train_step import make_step, to_ann

    from mpbn.models import create

    spec = ctx.facts["train_model"]
    batch = spec["batch"]
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    if kind == "ANN":
        model = to_ann(create(spec["name"], timesteps=1, mpbn="none", **spec["kwargs"]))
        images_per_step = steps * batch
    else:
        model = create(spec["name"], timesteps=steps, mpbn=kind, **spec["kwargs"])
        images_per_step = batch
    images = torch.rand(images_per_step, *model.input_shape, generator=generator)
    labels = torch.randint(0, 10, (images_per_step,), generator=generator)
    model = model.to(ctx.device)
    images, labels = images.to(ctx.device), labels.to(ctx.device)
    runnable = model
    agreement, check_s = None, 0.0
    if compiled:
        eager_twin = copy.deepcopy(model)
        runnable = torch.compile(model, backend=ctx.facts["compile_backend"])
        # The first compiled call (the compile) is a forward + backward checked against the
        # same weights run eagerly: on CUDA the compiled graph traces the Triton kernels'
        # branch, which no CPU run reaches, and a timing of a wrong graph means nothing.
        start = time.perf_counter()
        agreement = _agreement(runnable, eager_twin, images, labels, amp)
        sync(ctx.device)
        check_s = time.perf_counter() - start
        del eager_twin
    name = (f"{'ANN B=' + str(steps * batch) if kind == 'ANN' else 'SNN mpbn=' + kind} "
            f"{'bf16' if amp else 'fp32'}{' compiled' if compiled else ''}")
    fn = make_step(runnable, images, labels, amp)
    return StepVariant(name, kind, amp, compiled, steps, fn, agreement=agreement,
                       check_s=check_s)


#: Compiled vs eager, one forward + backward from the same weights: the loss's relative
#: difference and the cosine between the whole gradient vectors. Not bit-equal: the compiled
#: graph rounds differently, and a potential within rounding of its threshold may fire on the
#: other side, so a few spikes and the gradients through them differ; a wrong graph (a kernel
#: writing the wrong view, a dropped input) is off by orders of magnitude more.
AGREEMENT = {False: {"loss_rel": 1e-3, "grad_cosine": 0.999},
             True: {"loss_rel": 2e-2, "grad_cosine": 0.99}}  # bf16 autocast


def _agreement(compiled: torch.nn.Module, eager: torch.nn.Module, images: torch.Tensor,
               labels: torch.Tensor, amp: bool) -> dict[str, float]:
    """Loss and gradients of one step of ``compiled`` against ``eager`` (same weights)."""
    import torch.nn.functional as F

    results = []
    for model in (compiled, eager):  # a compiled module's parameters are its original's
        params = list(model.parameters())
        autocast = (torch.autocast(images.device.type, dtype=torch.bfloat16) if amp
                    else contextlib.nullcontext())
        with autocast:
            loss = F.cross_entropy(model(images), labels)
        loss.backward()
        grads = torch.cat([p.grad.detach().float().flatten() for p in params
                           if p.grad is not None])
        results.append((loss.detach().float().item(), grads))
        for p in params:
            p.grad = None
    (loss_c, grad_c), (loss_e, grad_e) = results
    cosine = (F.cosine_similarity(grad_c, grad_e, dim=0).item()
              if grad_c.shape == grad_e.shape else float("nan"))
    return {"loss_compiled": loss_c, "loss_eager": loss_e,
            "loss_rel": abs(loss_c - loss_e) / max(abs(loss_e), 1e-12), "grad_cosine": cosine}


def _agreement_table(result: StageResult, steps: int, amp: bool,
                     compiled: list[StepVariant]) -> None:
    """Each compiled variant's :func:`_agreement`; one outside :data:`AGREEMENT` is a failure."""
    limits = AGREEMENT[amp]
    table = Table(f"compiled vs eager, one forward + backward from the same weights, T={steps} "
                  f"{'bf16' if amp else 'fp32'} (limits: loss rel. diff <= "
                  f"{limits['loss_rel']:g}, gradient cosine >= {limits['grad_cosine']:g})",
                  ["variant", "loss compiled", "loss eager", "loss rel. diff", "grad cosine",
                   "agrees?"])
    for v in compiled:
        a = v.agreement
        agrees = a["loss_rel"] <= limits["loss_rel"] and a["grad_cosine"] >= limits["grad_cosine"]
        table.rows.append([v.name, f"{a['loss_compiled']:.6f}", f"{a['loss_eager']:.6f}",
                           f"{a['loss_rel']:.2e}", f"{a['grad_cosine']:.6f}",
                           "yes" if agrees else "NO"])
        result.data.setdefault("compiled_agreement", []).append({"name": v.name, **a,
                                                                  "agrees": agrees})
        if not agrees:
            result.fail(f"{v.name}: the compiled model disagrees with the eager one ({a})")
    result.table(table)


def _warm(variant: StepVariant, device: torch.device, calls: int) -> None:
    """First call (cuDNN autotune, JIT, compile), further warm-up calls, then one timed call
    and the peak memory of one more."""
    start = time.perf_counter()
    variant.fn()
    sync(device)
    # A compiled variant's first call was its agreement check (the compile): counted here.
    variant.first_s = variant.check_s or time.perf_counter() - start
    for _ in range(calls - 1):
        variant.fn()
    sync(device)
    variant.warm_s = variant.check_s + time.perf_counter() - start
    variant.step_ms = time_ms(variant.fn, device)
    variant.peak_mib = peak_memory_mib(variant.fn, device)


def _paired(times: dict[str, list[float]], num: str, den: str) -> float:
    from bench_train_step import paired_ratio

    return paired_ratio(times, num, den)


def _round_robin_group(ctx: Context, clock: StageClock, result: StageResult,
                       variants: list[StepVariant], title: str, max_rounds: int,
                       fraction: float) -> dict[str, list[float]]:
    """Time ``variants`` round-robin; rounds sized to ``fraction`` of the stage's time left."""
    from bench_train_step import round_robin

    per_round = sum(v.step_ms for v in variants) / 1e3
    rounds = int(min(max_rounds, fraction * clock.left() / max(per_round, 1e-6)))
    if rounds < 3:
        rounds = 3 if clock.fits(3 * per_round) or ctx.quick else 0
    if rounds == 0:
        clock.stop(f"{title}: the round-robin timing", 3 * per_round)
        return {}
    times = round_robin({v.name: v.fn for v in variants}, ctx.device, rounds, warmup=0)
    result.notes.append(f"{title}: {rounds} rounds round-robin")
    return times


def _step_tables(ctx: Context, result: StageResult, steps: int, variants: list[StepVariant],
                 times: dict[str, list[float]], label: str) -> None:
    table = Table(f"training step, {label}, T={steps} (SGD step, cross-entropy; batch "
                  f"{ctx.facts['train_model']['batch']})",
                  ["variant", "median ms", "first call s", "peak MiB"])
    for v in variants:
        median = statistics.median(times[v.name]) * 1e3 if v.name in times else None
        table.rows.append([v.name, median, v.first_s, v.peak_mib])
    result.table(table)
    ratios = Table(f"training-step ratios, {label}, T={steps} (median of per-round ratios)",
                   ["ratio", "value", "target", "met?"])
    by = {(v.kind, v.amp, v.compiled): v.name for v in variants if v.name in times}
    for amp, compiled in itertools.product((False, True), (False, True)):
        precision = ("bf16" if amp else "fp32") + (", compiled" if compiled else "")
        ann, base = by.get(("ANN", amp, compiled)), by.get(("none", amp, compiled))
        if ann and base:
            value = _paired(times, base, ann)
            target = f"<= {TARGETS['snn_over_ann']}x (T=2)" if steps == 2 else "-"
            verdict = ctx.verdict(value, TARGETS["snn_over_ann"]) if steps == 2 else "-"
            ratios.rows.append([f"SNN / ANN at batch T*B ({precision})", f"{value:.3f}x",
                                target, verdict])
        for mode in ("channel", "element"):
            name = by.get((mode, amp, compiled))
            if name and base:
                value = _paired(times, name, base)
                ratios.rows.append([f"MPBN {mode} / no MPBN ({precision})", f"{value:.3f}x",
                                    f"<= {TARGETS['mpbn_overhead']}x",
                                    ctx.verdict(value, TARGETS["mpbn_overhead"])])
    for v in variants:
        twin = next((w for w in variants if w.kind == v.kind and w.compiled == v.compiled
                     and not w.amp), None) if v.amp else None
        if twin is not None and v.name in times and twin.name in times:
            value = _paired(times, v.name, twin.name)
            ratios.rows.append([f"{v.name} / {twin.name}", f"{value:.3f}x", "-", "-"])
    if ratios.rows:
        result.table(ratios)
    result.data.setdefault("steps", []).append({
        "T": steps, "label": label,
        "variants": [{"name": v.name, "kind": v.kind, "amp": v.amp, "compiled": v.compiled,
                      "first_s": v.first_s, "median_ms": statistics.median(times[v.name]) * 1e3
                      if v.name in times else None, "peak_mib": v.peak_mib} for v in variants],
        "ratios": ratios.record()["rows"]})


def stage_train_step(ctx: Context, clock: StageClock, result: StageResult) -> None:
    from mpbn.functional import lif_backend

    device = ctx.device
    quick = ctx.quick
    ctx.facts["train_model"] = {
        "name": "resnet19", "batch": 2 if quick else 128,
        "kwargs": {"num_classes": 10, **({"width": 4, "input_size": 8} if quick else {})}}
    # On CPU a whole-model Inductor compile costs minutes of gcc: the rehearsal traces with
    # dynamo and runs the graphs eagerly (the CUDA run compiles with Inductor).
    ctx.facts["compile_backend"] = "inductor" if device.type == "cuda" else "eager"
    result.data["model"] = ctx.facts["train_model"]
    result.data["compile_backend"] = ctx.facts["compile_backend"]
    steps_order = (2, 1) if quick else (2, 1, 4)
    kinds = ("ANN", "none", "channel", "element")
    max_rounds = 3 if quick else 15
    lif_backend.STATE.triton_failed = False
    eager_by_t: dict[int, list[StepVariant]] = {}

    for index, steps in enumerate(steps_order):
        estimate = 20.0 if device.type == "cuda" else 10.0
        if not quick and not clock.fits(estimate):
            clock.stop(f"training step T={steps} (eager, fp32 + bf16)", estimate)
            continue
        variants = []
        for kind, amp in itertools.product(kinds, (False, True)):
            try:
                variant = _step_variant(ctx, kind, steps, amp, compiled=False)
                _warm(variant, device, 2)
                variants.append(variant)
            except Exception:  # noqa: BLE001
                result.fail(f"training step T={steps} {kind} amp={amp}: "
                            f"{traceback.format_exc(limit=6)}")
        fraction = 0.25 if index == 0 else 0.2
        times = _round_robin_group(ctx, clock, result, variants, f"eager T={steps}",
                                   max_rounds, fraction)
        _step_tables(ctx, result, steps, variants, times, "eager")
        eager_by_t[steps] = variants

    try:
        stage_inference(ctx, clock, result)
    except Exception:  # noqa: BLE001
        result.fail(f"inference: {traceback.format_exc(limit=6)}")

    # torch.compile of the whole model: a cold compile of ResNet19's step costs about a minute
    # (and dynamo compiles it twice in a fresh process, see the report), so in priority order.
    compile_prior = 120.0 if device.type == "cuda" else 60.0
    compile_cost: list[float] = []
    groups = [(2, False), (2, True), (1, False), (4, False), (1, True), (4, True)]
    if ctx.args.no_compile:
        groups = []
        result.notes.append("torch.compile of the model not timed (--no-compile)")
    elif quick:
        result.notes.append("quick: one compiled variant (T=2 MPBN channel fp32)")
    for steps, amp in groups:
        if steps not in eager_by_t:
            continue
        compiled: list[StepVariant] = []
        for kind in ("channel", "ANN", "none", "element"):
            estimate = 1.3 * max(compile_cost) if compile_cost else compile_prior
            must = quick and not compile_cost and not compiled
            if quick and not must:
                continue
            if not must and not clock.fits(estimate):
                clock.stop(f"training step T={steps} {kind} {'bf16' if amp else 'fp32'} "
                           "compiled", estimate)
                continue
            try:
                variant = _step_variant(ctx, kind, steps, amp, compiled=True)
                _warm(variant, device, 3)  # the second call recompiles (see the docs)
                compile_cost.append(variant.warm_s)
                compiled.append(variant)
            except Exception:  # noqa: BLE001
                result.fail(f"compiled training step T={steps} {kind} amp={amp}: "
                            f"{traceback.format_exc(limit=8)}")
        if not compiled:
            continue
        _agreement_table(result, steps, amp, compiled)
        twins = [v for v in eager_by_t[steps]
                 if v.amp == amp and any(c.kind == v.kind for c in compiled)]
        group = compiled + twins
        times = _round_robin_group(ctx, clock, result, group,
                                   f"compiled T={steps} {'bf16' if amp else 'fp32'}",
                                   max_rounds, 0.3)
        if times:
            label = f"torch.compile ({ctx.facts['compile_backend']}) vs eager"
            _step_tables(ctx, result, steps, group, times, label)
            table = Table(f"compiled / eager, T={steps}", ["variant", "compiled / eager"])
            for c in compiled:
                twin = next((t for t in twins if t.kind == c.kind), None)
                if twin is not None:
                    table.rows.append([c.name, f"{_paired(times, c.name, twin.name):.3f}x"])
            result.table(table)
    if lif_backend.STATE.triton_failed:
        result.fail("a Triton kernel failed during the training steps and the torch code ran "
                    "(lif_backend.STATE.triton_failed)")


def stage_inference(ctx: Context, clock: StageClock, result: StageResult) -> None:
    """Folded MPBN vs the baseline (folded and not) vs unfolded MPBN, ``torch.inference_mode``."""
    import mpbn
    from mpbn.layers.fold import FoldWarning
    from mpbn.models import create

    device = ctx.device
    spec = ctx.facts["train_model"]
    batch = spec["batch"]
    steps_list = (2,) if ctx.quick else (2, 1, 4)
    for steps in steps_list:
        estimate = 10.0 if device.type == "cuda" else 5.0
        if not ctx.quick and not clock.fits(estimate):
            clock.stop(f"inference T={steps}", estimate)
            continue
        torch.manual_seed(0)
        baseline = create(spec["name"], timesteps=steps, mpbn="none", **spec["kwargs"]).eval()
        models = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FoldWarning)
            models["baseline, BN folded"] = mpbn.fold(baseline)
            models["baseline, unfolded"] = baseline
            for mode in ("channel", "element"):
                mpbn_model = create(spec["name"], timesteps=steps, mpbn=mode,
                                    **spec["kwargs"]).eval()
                models[f"MPBN {mode}, folded"] = mpbn.fold(mpbn_model)
                models[f"MPBN {mode}, unfolded"] = mpbn_model
        x = torch.rand(batch, *baseline.input_shape, device=device)
        models = {k: m.to(device) for k, m in models.items()}
        fns = {k: (lambda m=m, x=x: m(x)) for k, m in models.items()}
        with torch.inference_mode():
            for fn in fns.values():
                fn()
                fn()
            one = sum(time_ms(fn, device) for fn in fns.values()) / 1e3
            rounds = int(min(3 if ctx.quick else 20, 0.15 * clock.left() / max(one, 1e-6)))
            rounds = max(rounds, 3)
            times: dict[str, list[float]] = {k: [] for k in fns}
            for _ in range(rounds):
                for k, fn in fns.items():
                    times[k].append(time_ms(fn, device))
        ref = "baseline, BN folded"
        table = Table(f"inference, T={steps}, batch {batch}, fp32 ({rounds} rounds round-robin)",
                      ["variant", "median ms", "/ folded baseline", "target", "met?"])
        for k, ts in times.items():
            ratio = statistics.median(a / b for a, b in zip(ts, times[ref], strict=True))
            target = verdict = "-"
            if k.endswith(", folded") and k.startswith("MPBN"):
                target = f"<= {TARGETS['folded_inference']}x"
                verdict = ctx.verdict(ratio, TARGETS["folded_inference"])
            table.rows.append([k, statistics.median(ts), f"{ratio:.3f}x", target, verdict])
        table.notes.append("freshly initialized models: every lambda > 0, so folding needs no "
                           "threshold_sign and the folded neurons stay on the fused path")
        result.table(table)
        result.data.setdefault("inference", []).append(
            {"T": steps, "median_ms": {k: statistics.median(v) for k, v in times.items()}})
        del models, fns, baseline
        free_memory(device)


# ------------------------------------------------------------------------------------------
# stage 5: time to result


def write_synthetic_cifar10(folder: Path, n_train: int, n_test: int, seed: int = 0) -> None:
    """Random images in the CIFAR-10 python-version format (five train batches, one test)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    sizes = [n_train // 5 + (1 if i < n_train % 5 else 0) for i in range(5)]
    for name, count in [(f"data_batch_{i + 1}", s) for i, s in enumerate(sizes)] + [
            ("test_batch", n_test)]:
        entry = {b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, count).tolist()}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))


class FirstBatches:
    """The first ``count`` batches of a loader (a warm-up, or a budget-cut epoch)."""

    def __init__(self, loader: Any, count: int) -> None:
        self.loader, self.count = loader, count

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        return min(self.count, len(self.loader))

    def __iter__(self):
        return itertools.islice(iter(self.loader), len(self))


def time_preset(ctx: Context, clock: StageClock, result: StageResult, preset: str,
                data_root: Path, real: bool, share_s: float, target: float | None) -> None:
    """One epoch of ``preset`` through the real loaders and ``train_one_epoch`` (cut to what
    ``share_s`` allows, then extrapolated), and one evaluation of its test set."""
    from mpbn.engine.compiling import compile_model
    from mpbn.engine.distributed import DistInfo
    from mpbn.engine.evaluation import evaluate
    from mpbn.engine.loading import build_model
    from mpbn.engine.presets import get_preset
    from mpbn.engine.train import build_loaders, build_optimizer, build_scheduler, train_one_epoch
    from mpbn.functional import lif_backend

    device = ctx.device
    deadline = time.perf_counter() + share_s
    lif_backend.STATE.triton_failed = False
    cfg = get_preset(preset)
    cfg.data.root = str(data_root)
    cfg.run.device = str(device)
    overrides: dict[str, Any] = {}
    if ctx.quick:  # tiny: the same code, a few steps
        cfg.data.batch_size, cfg.data.eval_batch_size = 8, 16
        cfg.data.train_subset = cfg.data.test_subset = None
        overrides = {"batch_size": 8}
        if getattr(cfg.data, "holdout", None):
            cfg.data.holdout = overrides["holdout"] = 16
    dist = DistInfo(device=device)
    torch.manual_seed(cfg.run.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # synthetic files: MD5 mismatch warnings
        train_loader, test_loader, info = build_loaders(cfg, cfg.run.seed, dist)
    model = None
    if ctx.quick:  # a narrow model where the architecture takes a width
        full_kwargs = cfg.model.kwargs
        cfg.model.kwargs = {**full_kwargs, "width": 4}
        try:
            model = build_model(cfg, info)
            overrides["width"] = 4
        except TypeError:
            cfg.model.kwargs = full_kwargs
    model = (model if model is not None else build_model(cfg, info)).to(device)
    if cfg.run.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer, len(train_loader))
    step_model = compile_model(model, ctx.device) if cfg.run.compile else model
    common = dict(cfg=cfg, dist=dist, show_progress=False)

    def epoch(batches: Any, number: int) -> dict:
        batches.set_epoch(number)
        return train_one_epoch(step_model, batches, optimizer, scheduler, epoch=number,
                               global_step=0, **common)

    start = time.perf_counter()
    epoch(FirstBatches(train_loader, 2), 1)  # JIT, cuDNN autotune
    warm_s = time.perf_counter() - start
    probe_steps = min(5, len(train_loader))
    start = time.perf_counter()
    epoch(FirstBatches(train_loader, probe_steps), 2)
    step_s = (time.perf_counter() - start) / probe_steps
    eval_batches = len(test_loader)
    eval_estimate = eval_batches * step_s * (cfg.data.eval_batch_size / cfg.data.batch_size) / 2
    left = deadline - time.perf_counter() - min(eval_estimate, 0.3 * share_s)
    steps_total = len(train_loader)
    steps_fit = int(left / (1.2 * step_s))
    steps_run = min(steps_total, max(steps_fit, 0))
    if steps_run < steps_total:
        clock.stops.append(f"budget: {preset}: {steps_run} of {steps_total} steps of the epoch "
                           f"timed (step {step_s:.3f} s), the rest extrapolated")
        print(f"  {clock.stops[-1]}", flush=True)
    if steps_run > 0:
        start = time.perf_counter()
        stats = epoch(FirstBatches(train_loader, steps_run), 3)
        timed_s = time.perf_counter() - start
        images_per_s = stats["images_per_s"]
    else:
        timed_s, images_per_s = probe_steps * step_s, probe_steps * cfg.data.batch_size / (
            probe_steps * step_s)
    epoch_images = train_loader.num_samples if hasattr(train_loader, "num_samples") else (
        steps_total * cfg.data.batch_size)
    train_epoch_s = epoch_images / images_per_s
    eval_s = None
    eval_fit = deadline - time.perf_counter()
    eval_run = min(eval_batches, int(eval_fit / max(1.5 * eval_estimate / eval_batches, 1e-6)))
    if eval_run > 0:
        start = time.perf_counter()
        evaluate(model, FirstBatches(test_loader, eval_run), cfg, dist)
        sync(device)
        eval_s = (time.perf_counter() - start) * eval_batches / eval_run
        if eval_run < eval_batches:
            clock.stops.append(f"budget: {preset}: evaluation timed on {eval_run} of "
                               f"{eval_batches} batches, extrapolated")
    else:
        clock.stop(f"{preset}: the evaluation", eval_estimate)
    epochs = cfg.optim.epochs
    per_epoch = train_epoch_s + (eval_s or 0.0)
    total_s = epochs * per_epoch
    row = {"preset": preset, "data": "real CIFAR-10" if real else "synthetic CIFAR-10 files",
           "model": cfg.model.name, "T": cfg.model.timesteps, "mpbn": cfg.model.mpbn,
           "batch": cfg.data.batch_size, "amp": cfg.run.amp, "compile": cfg.run.compile,
           "epoch_images": epoch_images, "steps_timed": steps_run, "steps_per_epoch": steps_total,
           "warmup_s": warm_s, "timed_s": timed_s, "images_per_s": images_per_s,
           "train_epoch_s": train_epoch_s, "eval_s": eval_s, "epochs": epochs,
           "extrapolated_s": total_s, "quick_overrides": overrides}
    result.data.setdefault("presets", []).append(row)
    table = Table(f"time to result: {preset} ({row['data']}; {cfg.model.name} T="
                  f"{cfg.model.timesteps}, MPBN {cfg.model.mpbn}, batch {cfg.data.batch_size}"
                  f"{', quick overrides ' + str(overrides) if overrides else ''})",
                  ["quantity", "value", "target", "met?"])
    table.rows += [
        ["images / s (training)", images_per_s, "-", "-"],
        [f"s per epoch ({epoch_images} images" + (", + evaluation)" if eval_s else ")"),
         per_epoch, "-", "-"],
        ["steps timed / per epoch", f"{steps_run} / {steps_total}", "-", "-"],
        [f"extrapolated {epochs} epochs (h)", total_s / 3600,
         f"< {target / 3600:.0f} h" if target else "-",
         ctx.verdict(total_s, target) if target else "-"],
    ]
    if eval_s is None:
        table.notes.append("evaluation not timed: the extrapolation covers training only")
    if getattr(cfg.data, "holdout", None):
        table.notes.append(f"the preset holds {cfg.data.holdout} training images out for "
                           "validation; build_loaders trains on all of them, so the epoch "
                           "here is that much longer than the preset's")
    result.table(table)
    if lif_backend.STATE.triton_failed:
        result.fail(f"{preset}: a Triton kernel failed during the epoch and the torch code ran")


def stage_time_to_result(ctx: Context, clock: StageClock, result: StageResult) -> None:
    from mpbn.data.cifar import load_cifar
    from mpbn.engine.presets import PRESETS

    real_root = None
    if ctx.args.data_root:
        root = Path(ctx.args.data_root).expanduser()
        try:
            load_cifar("cifar10", root)
            real_root = root
        except (FileNotFoundError, ValueError, OSError) as error:
            result.notes.append(f"--data-root {root} has no readable CIFAR-10 ({error}); "
                                "using synthetic files")
    fast = next((p for p in FAST_PRESETS if p in PRESETS), None)
    tmp = None
    try:
        if real_root is None:
            tmp = Path(tempfile.mkdtemp(prefix="gpu_suite_cifar_"))
            n_train, n_test = (80, 32) if ctx.quick else (50_000, 10_000)
            start = time.perf_counter()
            write_synthetic_cifar10(tmp / "cifar-10-batches-py", n_train, n_test)
            result.notes.append(f"synthetic CIFAR-10 files ({n_train} + {n_test} random images) "
                                f"written in {time.perf_counter() - start:.1f} s to {tmp}, "
                                "removed afterwards")
        data_root = real_root or tmp
        plan = [(TIME_PRESET, 0.75, TARGETS["epochs_s"])]
        if fast:
            plan.append((fast, 1.0, None))
        else:
            result.fail(f"none of the fast presets {FAST_PRESETS} exists")
        for preset, fraction, target in plan:
            share = clock.left() * fraction
            if share < 5 and not ctx.quick:
                clock.stop(f"time to result of {preset}", 5.0)
                continue
            try:
                time_preset(ctx, clock, result, preset, data_root, real_root is not None,
                            share, target)
            except Exception:  # noqa: BLE001
                result.fail(f"time to result {preset}: {traceback.format_exc(limit=8)}")
                free_memory(ctx.device)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------
# the run


STAGE_FUNCTIONS = {
    "header": stage_header,
    "correctness": stage_correctness,
    "neuron": stage_neuron,
    "train_step": stage_train_step,
    "time_to_result": stage_time_to_result,
}


def _stage_record(name: str, status: str, clock: StageClock, result: StageResult,
                  error: str | None) -> dict:
    return {"name": name, "status": status, "wall_s": clock.used(),
            "budget_s": clock.allowance_s, "failures": list(result.failures),
            "budget_stops": list(clock.stops), "notes": list(result.notes), "error": error,
            "tables": [t.record() for t in result.tables], "data": result.data}


def run_stage(name: str, ctx: Context, report: dict, out: Path) -> dict:
    """Run one stage, catching any failure; the report is rewritten at every table."""
    clock = ctx.budget.open_stage(name)
    print(f"\n=== stage {name}: {clock.allowance_s:.0f} s of the {ctx.budget.remaining():.0f} s "
          "left ===", flush=True)

    def progress() -> None:
        partial = _stage_record(name, "running (cut off here if nothing follows)", clock,
                                result, None)
        report["elapsed_s"] = ctx.budget.elapsed()
        write_report(out, {**report, "stages": report["stages"] + [partial]})

    result = StageResult(progress)
    error = None
    try:
        if ctx.args.inject_failure == name:
            raise RuntimeError(f"failure injected into stage {name!r} (--inject-failure)")
        STAGE_FUNCTIONS[name](ctx, clock, result)
    except Exception:  # noqa: BLE001 - a stage's failure must not stop the later stages
        error = traceback.format_exc()
        print(error, flush=True)
    if error is not None:
        status = "failed"
    elif result.failures:
        status = "failed"
    elif clock.stops:
        status = "partial (budget)"
    else:
        status = "ok"
    print(f"=== stage {name}: {status} in {clock.used():.1f} s ===", flush=True)
    free_memory(ctx.device)
    return _stage_record(name, status, clock, result, error)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for gpu_suite.json / gpu_suite.md")
    parser.add_argument("--data-root", default=None,
                        help="a folder with CIFAR-10 (python version) for the time-to-result "
                             "stage; synthetic files of the same format otherwise")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="seconds for the whole run (default 480; 240 with --quick)")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (rehearsal)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes: a rehearsal")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES),
                        help="run only these stages (default: all)")
    parser.add_argument("--inject-failure", choices=STAGES, default=None,
                        help=argparse.SUPPRESS)  # tests: make one stage raise
    # tests: no compiled paths (gcc and dynamo would be most of the CPU smoke test's time)
    parser.add_argument("--no-compile", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.budget_s is None:
        args.budget_s = 240.0 if args.quick else 480.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_suite: --device cuda but CUDA is not available (for the CPU rehearsal: "
              "--device cpu --quick)", file=sys.stderr, flush=True)
        return 2
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())  # as pick_device gives it
    ctx = Context(args, device, Budget(args.budget_s, tuple(args.stages)))
    report: dict[str, Any] = {
        "suite": "gpu_suite", "format": 1, "command": " ".join([sys.executable] + sys.argv),
        "device": str(device), "quick": bool(args.quick), "rehearsal": device.type != "cuda",
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "budget_s": args.budget_s,
        "elapsed_s": ctx.budget.elapsed(), "stages": [],
    }
    print(f"gpu_suite: device {device}, budget {args.budget_s:.0f} s"
          f"{', quick' if args.quick else ''}, writing {out}", flush=True)
    for name in STAGES:
        if name not in args.stages:
            continue
        report["stages"].append(run_stage(name, ctx, report, out))
        report["elapsed_s"] = ctx.budget.elapsed()
        write_report(out, report)
    failed = [s["name"] for s in report["stages"] if s["status"] == "failed"]
    report["exit_code"] = 1 if failed else 0
    report["elapsed_s"] = ctx.budget.elapsed()
    write_report(out, report)
    print(f"\ngpu_suite: {len(report['stages'])} stages in {report['elapsed_s']:.1f} s; "
          + (f"FAILED: {', '.join(failed)}" if failed else "all passed")
          + f"; wrote {out / 'gpu_suite.json'} and {out / 'gpu_suite.md'}", flush=True)
    return report["exit_code"]


if __name__ == "__main__":
    sys.exit(main())
