"""The correctness stage of ``gpu_suite.py``: every fused LIF path against the reference step.

A case is one neuron configuration (reset, surrogate, membrane norm and its mode, ``T``, input
dtype, step shape). For each case the reference :class:`~mpbn.layers.LIF`
(``backend="reference"``, :func:`~mpbn.functional.neuron.lif_step` over time) runs at the input
dtype and, for the gradients, in float64 on the same input values; then each fused path runs
the same module, forced onto one implementation (``triton``, ``compiled`` or ``eager``) by
:func:`forced_backend`. A path passes when

- its spikes equal the reference's exactly (for bf16 input without MPBN, the Triton kernels and
  Inductor compute the potential in float32 registers, so their reference is the reference step
  in float32 on the bf16 values; the eager code computes in bf16 like the reference);
- each gradient (input, MPBN ``lambda`` and ``beta``) is as close to the float64 one as the
  reference's own at that dtype: ``err <= 2 * err_reference + 1e-5``, the rule of the Triton
  interpreter check in ``tests/functional/test_fused.py``, with its ``1e-5`` taken relative
  to the largest gradient where that exceeds 1 (``lambda``'s gradient sums a whole batch of
  steps: fp32 summation order alone moves it by more than 1e-5 at large shapes). For bf16 input
  (which those tests do not run) one bf16 rounding of the largest gradient,
  ``eps_bf16 * max|g|``, is added: the input gradient is stored in bf16, and one rounding more
  or less than the reference's is within the format, not an error of the path; and without
  MPBN the reference's error is the larger of the reference as it runs (a float32 tensor
  threshold promotes it to float32) and the reference wholly in bf16: the Triton kernels save
  ``u_pre`` in bf16 and evaluate the surrogate on it in backward, an error of bf16 size
  (3 of 480 cases at T = 8 exceeded the float32 bound under the interpreter);
- spikes: a handful that differ (at most ``1e-4`` of them, :data:`ROUNDING_FLIPS`) are
  reported as a known rounding deviation, not a failure, with their gradients' neurons;
- at most a few elements (``max(1, 1e-4 * numel)`` per gradient) exceed that bound, and only
  for the surrogates with a jump (``rectangle`` at ``|x| = alpha / 2``, ``tanh`` at the edges
  of its support): a potential within rounding of the jump gets the other gradient value in
  any precision but float64 (seen on CPU for the eager path at 150k neurons), so such an
  outlier is rounding, not an error; every other surrogate is continuous and allows none in
  float32 (bf16 input allows them for every surrogate: one of 480 interpreter cases, at T = 8,
  had one element past the bf16 bound above).
  Under training-mode MPBN such a potential also moves its feature's batch statistics, so the
  input gradient counts features with an outlier instead of elements;
- the running statistics match the reference's with that file's tolerances (Triton and eager:
  ``torch.testing.assert_close`` defaults, compiled: ``rtol=1e-5, atol=1e-6``) and
  ``num_batches_tracked`` is equal;
- nothing fell back: a Triton kernel or a compile that fails warns and runs the torch code
  (:mod:`mpbn.functional.lif_backend`), which here is a failure, not a pass.

Failures that the CPU reproduces and the library has not fixed yet are reported as
``"known"`` (:data:`KNOWN_DEVIATIONS`: listed, not counted as failures), so that the exit code
keeps meaning "something new is wrong on this device".

Cases for ``norm="none"`` have no train/eval difference; their "eval" slot runs a per-channel
threshold instead, so that the kernels' per-channel parameter path is covered too.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch

from mpbn.functional import lif_backend
from mpbn.functional.surrogate import SURROGATES
from mpbn.layers import LIF

__all__ = ["Case", "KNOWN_DEVIATIONS", "NORM_MODES", "check_case", "compiled_cases",
           "forced_backend", "known_deviation", "main_cases", "quick_cases", "tiling_cases"]

RESETS = ("hard", "soft")
#: (membrane norm, training). ``("none", False)`` is plain LIF with a per-channel threshold.
NORM_MODES = (("none", True), ("none", False), ("channel", True), ("channel", False),
              ("element", True), ("element", False))
DTYPES = ("float32", "bfloat16")
GRAD_ATOL = 1e-5  # the interpreter check's absolute slack (tests/functional/test_fused.py)
SURROGATES_WITH_A_JUMP = ("rectangle", "tanh")
OUTLIER_FRACTION = 1e-4
# Running statistics, per path, as tests/functional/test_fused.py compares them.
BUFFER_TOLERANCES = {"triton": {}, "eager": {}, "compiled": {"rtol": 1e-5, "atol": 1e-6}}


#: ``(predicate(case, backend), explanation)``: deviations of mpbn that the CPU reproduces.
KNOWN_DEVIATIONS: list = [
    # Empty: the one entry (eager fused LIF on bf16 input with a float32 tensor threshold) is
    # fixed: fused.unfusable_reason now sends that case to the reference step.
]


#: A handful of spikes (at most ``OUTLIER_FRACTION`` of them) that differ: the fused paths
#: compute ``v = scale * u_pre + shift`` (and an fma for ``u_pre``), so a potential within an ulp
#: of ``V_th`` may fire differently (docs/PERFORMANCE.md, "Correctness": rounding). Reported as
#: known, with the count; more than that is a failure.
ROUNDING_FLIPS = ("a few spikes within rounding of V_th fire differently (the fused affine "
                  "v = scale * u_pre + shift; docs/PERFORMANCE.md, Correctness)")


def known_deviation(case: Case, backend: str) -> str | None:
    """The explanation of a known deviation that ``case`` on ``backend`` meets, or ``None``."""
    return next((text for matches, text in KNOWN_DEVIATIONS if matches(case, backend)), None)


@dataclass(frozen=True)
class Case:
    """One neuron configuration on one input.

    Attributes:
        reset: ``"hard"`` or ``"soft"``.
        surrogate: A name of :data:`mpbn.functional.surrogate.SURROGATES`.
        norm: ``"none"``, ``"channel"`` or ``"element"``.
        training: MPBN in training mode (batch statistics) or eval (running ones).
        steps: ``T``.
        dtype: ``"float32"`` or ``"bfloat16"``: the input's (MPBN parameters stay float32 and
            the layer runs the membrane in float32, as under autocast).
        shape: One step ``[B, C, ...]``.
        offset: Mean of the input currents.
        spread: Standard deviation of the input currents.
        detach_reset: Detach the reset from the graph (Eq. 11).
    """

    reset: str
    surrogate: str
    norm: str
    training: bool
    steps: int
    dtype: str
    shape: tuple[int, ...]
    offset: float = 0.3
    spread: float = 0.8
    detach_reset: bool = False

    @property
    def mode(self) -> str:
        if self.norm == "none":
            return "scalar V_th" if self.training else "channel V_th"
        return "train" if self.training else "eval"

    def label(self) -> str:
        extra = ", detach" if self.detach_reset else ""
        return (f"{self.reset}/{self.surrogate}/{self.norm}-{self.mode}/T={self.steps}/"
                f"{self.dtype}/{'x'.join(map(str, self.shape))}{extra}")


def main_cases(shape: tuple[int, ...]) -> list[Case]:
    """The whole grid on one shape, ordered so that every kernel branch is met early.

    ``T = 4`` float32 first (every reset x surrogate x norm mode), then bf16, then the other
    ``T``: a budget that stops the list part-way has still covered every branch once.
    """
    cases = []
    for steps in (4, 1, 8, 2):
        for dtype in DTYPES:
            for reset, surrogate, (norm, training) in itertools.product(RESETS, SURROGATES,
                                                                        NORM_MODES):
                cases.append(Case(reset, surrogate, norm, training, steps, dtype, shape))
    return cases


def tiling_cases(shapes: list[tuple[int, ...]], detach_shape: tuple[int, ...]) -> list[Case]:
    """Shapes that split the training kernels' batch, positions and features differently, with
    a membrane mean far from zero under MPBN (the statistics' numerics); and ``detach_reset``."""
    cases = []
    for shape in shapes:
        for steps, dtype, reset, surrogate, (norm, training) in itertools.product(
                (4, 1), DTYPES, RESETS, ("rectangle", "atan"), NORM_MODES):
            far = norm != "none"
            cases.append(Case(reset, surrogate, norm, training, steps, dtype, shape,
                              offset=5.0 if far else 0.3, spread=2.0 if far else 0.8))
    for reset, (norm, training) in itertools.product(RESETS, NORM_MODES):
        cases.append(Case(reset, "tanh", norm, training, 3, "float32", detach_shape,
                          detach_reset=True))
    return cases


def compiled_cases(shape: tuple[int, ...]) -> list[Case]:
    """A covering set for the compiled path (each case costs two Inductor compiles): every
    (norm mode, reset) once, surrogates, ``T`` and dtypes cycled through."""
    cases = []
    for i, ((norm, training), reset) in enumerate(itertools.product(NORM_MODES, RESETS)):
        cases.append(Case(reset, SURROGATES[i % len(SURROGATES)], norm, training,
                          (1, 2, 4, 8)[i % 4], DTYPES[(i // 4) % 2], shape))
    return cases


def quick_cases(shape: tuple[int, ...]) -> list[Case]:
    """Ten cases for a CPU rehearsal: every reset x surrogate, norm modes, T and dtypes cycled."""
    cases = []
    for i, (reset, surrogate) in enumerate(itertools.product(RESETS, SURROGATES)):
        norm, training = NORM_MODES[i % len(NORM_MODES)]
        cases.append(Case(reset, surrogate, norm, training, (1, 2)[i % 2], DTYPES[(i // 2) % 2],
                          shape))
    return cases


@contextlib.contextmanager
def forced_backend(name: str) -> Iterator[None]:
    """Run every fused LIF call on implementation ``name`` (``triton``/``compiled``/``eager``).

    Replaces :func:`mpbn.functional.lif_backend.resolve_backend` for the duration: the module
    path (dtype policy, running statistics, ``num_batches_tracked``) stays the library's, only
    the choice is fixed, including Triton on CPU tensors under ``TRITON_INTERPRET=1``.
    """
    original = lif_backend.resolve_backend
    lif_backend.resolve_backend = lambda requested, x_seq: name
    try:
        yield
    finally:
        lif_backend.resolve_backend = original


def _template(case: Case, generator: torch.Generator) -> LIF:
    """The reference neuron of ``case`` with non-trivial MPBN parameters and statistics (as
    ``make_pair`` in tests/functional/test_fused.py: a negative ``lambda`` included)."""
    kwargs: dict = dict(reset=case.reset, surrogate=case.surrogate,
                        detach_reset=case.detach_reset)
    channels = case.shape[1]
    if case.norm == "none" and not case.training:
        # In the input's dtype, as a model's would be: a float32 threshold on bf16 input is
        # not fused (the reference promotes the potential; fused.unfusable_reason).
        kwargs["v_threshold"] = (torch.rand(channels, generator=generator) * 0.4 + 0.3).to(
            getattr(torch, case.dtype))
    if case.norm != "none":
        kwargs.update(membrane_norm=case.norm, num_features=channels,
                      feature_shape=case.shape[1:])
    module = LIF(backend="reference", **kwargs)
    mbn = module.membrane_norm
    if mbn is not None:
        shape = mbn.feature_shape
        with torch.no_grad():
            mbn.weight.copy_(torch.rand(shape, generator=generator) + 0.5)
            mbn.weight.view(-1)[0] = -0.7
            mbn.bias.copy_(torch.randn(shape, generator=generator) * 0.3)
            mbn.running_mean.copy_(torch.randn(shape, generator=generator) * 0.2 + case.offset)
            mbn.running_var.copy_(torch.rand(shape, generator=generator) + 0.5)
        module.train(case.training)
    return module


def _run(module: LIF, x: torch.Tensor, grad_out: torch.Tensor
         ) -> tuple[torch.Tensor, list[torch.Tensor], dict[str, torch.Tensor]]:
    xi = x.detach().clone().requires_grad_(True)
    out = module(xi)
    grads = torch.autograd.grad(out, [xi, *module.parameters()], grad_out)
    buffers = {name: b.detach().clone() for name, b in module.named_buffers()
               if name.startswith("membrane_norm.")}
    return out.detach(), list(grads), buffers


def _max_err(value: torch.Tensor, exact: torch.Tensor) -> float:
    if value.numel() == 0:
        return 0.0
    return float((value.double() - exact).abs().max())


def check_case(case: Case, backends: list[str], device: torch.device, seed: int
               ) -> dict[str, dict]:
    """Run ``case`` on every backend; ``{backend: {"status", "problems", "max_grad_err",
    "grad_tol", "spikes", "wall_s", ...}}``, status ``"pass"``, ``"fail"`` or ``"known"``."""
    generator = torch.Generator().manual_seed(seed)
    template = _template(case, generator).to(device)
    dtype = getattr(torch, case.dtype)
    values = torch.randn(case.steps, *case.shape, generator=generator, dtype=torch.float64)
    # The low-precision values are the input; float64 runs on exactly those values.
    x = (values * case.spread + case.offset).to(dtype).to(device)
    grad_out = torch.randn(case.steps, *case.shape, generator=generator).to(dtype).to(device)

    out_ref, grads_ref, buffers_ref = _run(copy.deepcopy(template), x, grad_out)
    _, grads64, _ = _run(copy.deepcopy(template).double(), x.double(), grad_out.double())
    out_ref32 = out_ref
    if case.norm == "none" and dtype != torch.float32:
        out_ref32, _, _ = _run(copy.deepcopy(template), x.float(), grad_out.float())
        out_ref32 = out_ref32.to(dtype)
    err_ref = [_max_err(g, e) for g, e in zip(grads_ref, grads64, strict=True)]
    if case.norm == "none" and dtype != torch.float32:
        # The step wholly in bf16 (its threshold too): the error level of bf16 arithmetic,
        # which the Triton kernels' bf16 u_pre (saved for backward, where the surrogate is
        # evaluated) reaches even where the reference, promoted by a float32 tensor
        # threshold, runs in float32.
        _, grads_low, _ = _run(copy.deepcopy(template).to(dtype), x, grad_out)
        err_ref = [max(e, _max_err(g, e64)) for e, g, e64 in zip(err_ref, grads_low, grads64,
                                                                  strict=True)]
    rounding = torch.finfo(dtype).eps if dtype != torch.float32 else 0.0
    scales = [max(1.0, float(g.abs().max())) if g.numel() else 1.0 for g in grads64]
    tols = [2 * e + (GRAD_ATOL + rounding) * scale
            for e, scale in zip(err_ref, scales, strict=True)]
    names = ["x"] + [n.split(".")[-1] for n, _ in template.named_parameters()]

    results = {}
    for backend in backends:
        problems: list[str] = []
        fast = copy.deepcopy(template)
        fast.backend = "fused"
        start = time.perf_counter()
        lif_backend.STATE.triton_failed = False
        lif_backend.STATE.compile_failed = False
        with warnings.catch_warnings(record=True) as caught, forced_backend(backend):
            warnings.simplefilter("always")
            out, grads, buffers = _run(fast, x, grad_out)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        wall = time.perf_counter() - start
        if lif_backend.STATE.triton_failed or lif_backend.STATE.compile_failed:
            messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
            problems.append("fell back to the torch code: " + ("; ".join(messages)[:500]
                                                               or "no warning"))
            lif_backend.STATE.triton_failed = False
            lif_backend.STATE.compile_failed = False
        expected = out_ref if backend == "eager" else out_ref32
        if out.dtype != x.dtype:
            problems.append(f"spikes are {out.dtype}, the input {x.dtype}")
        if float(expected.sum()) == 0:
            problems.append("the reference never fired (the case tests nothing)")
        mismatches = int((out.float() != expected.float()).sum())
        few = max(1, int(OUTLIER_FRACTION * out.numel()))
        rounding_flips = 0 < mismatches <= few
        if mismatches and not rounding_flips:
            problems.append(f"{mismatches} of {out.numel()} spikes differ from the reference")
        errs = [_max_err(g, e) for g, e in zip(grads, grads64, strict=True)]
        outliers = []
        for name, g, exact, err, tol in zip(names, grads, grads64, errs, tols, strict=True):
            mask = ((g.double() - exact).abs() > tol) | g.isnan()
            if name == "x" and case.norm != "none" and case.training:
                # One potential at the jump changes its feature's batch statistics, so every
                # element of that feature moves a little: count features, not elements.
                dims = (0, 1) + (tuple(range(3, mask.dim())) if case.norm == "channel" else ())
                mask = mask.amax(dim=dims)
            over = int(mask.sum())
            allowed = (max(1, int(OUTLIER_FRACTION * mask.numel()))
                       if case.surrogate in SURROGATES_WITH_A_JUMP or rounding else 0)
            if rounding_flips:  # a flipped spike moves its neuron's later steps and sums
                allowed = max(allowed, mismatches * case.steps)
            unit = "features" if mask.numel() != g.numel() else "elements"
            if over and over <= allowed:
                outliers.append(f"d/d{name}: {over} of {mask.numel()} {unit}")
            elif over:
                problems.append(f"d/d{name}: {over} of {mask.numel()} {unit} off the float64 "
                                f"gradient by more than {tol:.3g} (2 x the reference's "
                                f"{err_ref[names.index(name)]:.3g} + slack; max {err:.3g})")
        for name, value in buffers.items():
            try:
                if value.dtype == torch.long:
                    torch.testing.assert_close(value, buffers_ref[name], rtol=0, atol=0)
                else:
                    torch.testing.assert_close(value, buffers_ref[name],
                                               **BUFFER_TOLERANCES.get(backend, {}))
            except AssertionError as error:
                problems.append(f"{name}: " + " ".join(str(error).split())[:300])
        known = known_deviation(case, backend)
        if rounding_flips and not problems:
            known = known or ROUNDING_FLIPS
            problems.append(f"{mismatches} of {out.numel()} spikes differ from the reference")
        status = "pass" if not problems else ("known" if known else "fail")
        notes = []
        if known and not problems:
            notes.append(f"known deviation did not reproduce: {known}")
        elif known:
            problems.append(f"known: {known}")
        results[backend] = {
            "status": status,
            "problems": problems,
            "outliers_at_surrogate_jump": outliers,
            "notes": notes,
            "max_grad_err": max(errs) if errs else 0.0,
            "grad_tol": min(tols) if tols else 0.0,
            "spikes": int(out.sum()),
            "wall_s": round(wall, 4),
        }
    return results


def case_record(case: Case) -> dict:
    """``case`` as JSON (its shape as a list)."""
    record = asdict(case)
    record["shape"] = list(case.shape)
    record["label"] = case.label()
    return record
