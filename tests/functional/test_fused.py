"""The fused LIF / MPBN-LIF against the reference step function (the spec).

Spikes must be identical and gradients (input, MPBN weight and bias) equal to float64
tolerance, for every reset, surrogate and MPBN mode, T = 1, 2, 4, 8; running statistics must
be updated identically.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import warnings

import pytest
import torch

from mpbn.functional import fused, lif_backend, lif_recurrence
from mpbn.functional.neuron import LIFParams
from mpbn.functional.surrogate import SURROGATES
from mpbn.layers import LIF

SHAPE = (3, 4, 3, 3)  # one step [B, C, H, W]: element-wise stats over 3 samples
NORM_MODES = ("none", "channel-train", "channel-eval", "element-train", "element-eval")


def make_pair(norm_mode: str, dtype=torch.float64, **kwargs) -> tuple[LIF, LIF]:
    """A reference LIF and a fused LIF with identical (non-trivial) parameters and buffers."""
    if norm_mode != "none":
        granularity, mode = norm_mode.split("-")
        kwargs.update(membrane_norm=granularity, num_features=SHAPE[1], feature_shape=SHAPE[1:])
    ref = LIF(backend="reference", **kwargs).to(dtype)
    fast = LIF(backend="fused", **kwargs).to(dtype)
    if norm_mode != "none":
        gen = torch.Generator().manual_seed(1)
        mbn = ref.membrane_norm
        shape = mbn.feature_shape
        with torch.no_grad():
            mbn.weight.copy_(torch.rand(shape, generator=gen, dtype=dtype) + 0.5)
            mbn.weight.view(-1)[0] = -0.7  # a negative scale must work too
            mbn.bias.copy_(torch.randn(shape, generator=gen, dtype=dtype) * 0.3)
            mbn.running_mean.copy_(torch.randn(shape, generator=gen, dtype=dtype) * 0.2)
            mbn.running_var.copy_(torch.rand(shape, generator=gen, dtype=dtype) + 0.5)
        fast.load_state_dict(ref.state_dict())
        ref.train(mode == "train")
        fast.train(mode == "train")
    return ref, fast


def run_both(ref: LIF, fast: LIF, steps: int, dtype=torch.float64, scale: float = 0.8):
    gen = torch.Generator().manual_seed(steps)
    x = (torch.randn(steps, *SHAPE, generator=gen, dtype=dtype) * scale + 0.3)
    grad_out = torch.randn(steps, *SHAPE, generator=gen, dtype=dtype)
    results = []
    for module in (ref, fast):
        xi = x.clone().requires_grad_(True)
        out = module(xi)
        params = [p for p in module.parameters()]
        grads = torch.autograd.grad(out, [xi, *params], grad_out)
        results.append((out.detach(), grads))
    return results


def assert_same(ref: LIF, fast: LIF, results) -> None:
    (out_r, grads_r), (out_f, grads_f) = results
    assert out_r.sum() > 0, "test input should make the neuron fire"
    torch.testing.assert_close(out_f, out_r, rtol=0, atol=0)
    for g_f, g_r in zip(grads_f, grads_r, strict=True):
        torch.testing.assert_close(g_f, g_r, rtol=1e-9, atol=1e-10)
    for (name, b_r), (_, b_f) in zip(ref.named_buffers(), fast.named_buffers(), strict=True):
        torch.testing.assert_close(b_f, b_r, rtol=1e-12, atol=1e-12, msg=name)


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
@pytest.mark.parametrize("norm_mode", NORM_MODES)
@pytest.mark.parametrize("surrogate", SURROGATES)
@pytest.mark.parametrize("reset", ["hard", "soft"])
def test_matches_reference(reset: str, surrogate: str, norm_mode: str, steps: int) -> None:
    ref, fast = make_pair(norm_mode, reset=reset, surrogate=surrogate)
    assert_same(ref, fast, run_both(ref, fast, steps))


@pytest.mark.parametrize("norm_mode", ["none", "channel-train", "element-eval"])
@pytest.mark.parametrize("reset", ["hard", "soft"])
def test_detach_reset_and_tensor_thresholds(reset: str, norm_mode: str) -> None:
    gen = torch.Generator().manual_seed(3)
    per_channel = torch.rand(SHAPE[1], generator=gen, dtype=torch.float64) * 0.5 + 0.3
    per_element = torch.rand(SHAPE[1:], generator=gen, dtype=torch.float64) * 0.5 + 0.3
    for v_threshold, amount in ((per_channel, None), (per_element, 0.4), (0.6, per_channel)):
        ref, fast = make_pair(norm_mode, reset=reset, surrogate="tanh", detach_reset=True,
                              v_threshold=v_threshold, reset_amount=amount, decay=0.6)
        assert_same(ref, fast, run_both(ref, fast, 4))


def test_float32_and_no_grad() -> None:
    ref, fast = make_pair("channel-train", dtype=torch.float32, surrogate="atan")
    results = run_both(ref, fast, 4, dtype=torch.float32)
    (out_r, grads_r), (out_f, grads_f) = results
    torch.testing.assert_close(out_f, out_r, rtol=0, atol=0)
    for g_f, g_r in zip(grads_f, grads_r, strict=True):
        torch.testing.assert_close(g_f, g_r, rtol=1e-4, atol=1e-5)
    x = torch.randn(4, *SHAPE) + 0.3
    ref.eval()
    fast.eval()
    with torch.no_grad():
        torch.testing.assert_close(fast(x), ref(x), rtol=0, atol=0)


def test_auto_falls_back_where_fused_does_not_apply() -> None:
    sign = torch.ones(SHAPE[1])
    sign[0] = -1
    folded = dict(v_threshold=torch.full((SHAPE[1],), 0.4), threshold_sign=sign)
    ref = LIF(backend="reference", **folded)
    auto = LIF(backend="auto", **folded)
    x = torch.randn(4, *SHAPE)
    torch.testing.assert_close(auto(x), ref(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="backend='fused'"):
        LIF(backend="fused", **folded)(x)
    with pytest.raises(ValueError, match="unknown backend"):
        LIF(backend="cuda")


def test_saves_only_the_potential() -> None:
    """Plain LIF saves one float tensor; MPBN adds [T, F] statistics and, for a hard reset, the
    spikes as uint8 (never the float spikes it returns); soft reset needs no spikes."""
    x = torch.randn(4, *SHAPE, requires_grad=True)
    saved: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fused.lif_fused(x, backend="eager")
    assert [tuple(t.shape) for t in saved] == [tuple(x.shape)]
    saved.clear()
    mbn = LIF(membrane_norm="channel", num_features=SHAPE[1]).membrane_norm
    norm = fused.MembraneNormArgs("channel", mbn.weight, mbn.bias, mbn.running_mean,
                                  mbn.running_var)
    for backend in ("eager", "compiled"):
        for reset, dtypes in (("hard", [x.dtype, torch.uint8]), ("soft", [x.dtype])):
            saved.clear()
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                out = fused.lif_fused(x, LIFParams(reset=reset), norm=norm, backend=backend)
            big = [t for t in saved if t.numel() == x.numel()]
            assert [t.dtype for t in big] == dtypes, (backend, reset)
            assert all(t.untyped_storage().data_ptr() != out.untyped_storage().data_ptr()
                       for t in big)


@pytest.mark.parametrize("granularity", ["channel", "element"])
@pytest.mark.parametrize("reset", ["soft", "hard"])  # hard: backward reads uint8 spikes
def test_compiled_matches_eager(reset: str, granularity: str) -> None:
    """The torch.compile'd loops (one compile, a few seconds of gcc) equal the eager ones:
    spikes, gradients and the running statistics, though the compiled statistics come from
    shifted sums (:func:`lif_recurrence._shifted_moments`) where eager calls ``F.batch_norm``."""
    pytest.importorskip("torch._inductor")
    _, fast = make_pair(f"{granularity}-train", dtype=torch.float32, reset=reset,
                        surrogate="tanh")
    mbn = fast.membrane_norm
    x = torch.randn(3, 5, *SHAPE[1:], requires_grad=True) + 0.3
    outs = []
    for backend in ("eager", "compiled"):
        norm = fused.MembraneNormArgs(granularity, mbn.weight, mbn.bias,
                                      mbn.running_mean.clone(), mbn.running_var.clone())
        xi = x.detach().clone().requires_grad_(True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = fused.lif_fused(xi, LIFParams(reset=reset, surrogate="tanh"), norm=norm,
                                  backend=backend)
            grads = torch.autograd.grad(out, [xi, norm.weight, norm.bias], torch.ones_like(out))
        if any("torch.compile of the fused LIF failed" in str(w.message) for w in caught):
            pytest.skip("torch.compile unavailable here (no C++ compiler?); eager ran instead")
        outs.append((out, grads, (norm.running_mean, norm.running_var)))
    torch.testing.assert_close(outs[1][0], outs[0][0], rtol=0, atol=0)
    for g_c, g_e in zip(outs[1][1], outs[0][1], strict=True):
        torch.testing.assert_close(g_c, g_e, rtol=1e-4, atol=1e-5)
    for r_c, r_e in zip(outs[1][2], outs[0][2], strict=True):
        torch.testing.assert_close(r_c, r_e, rtol=1e-5, atol=1e-6)


def test_step_configs_are_interned_and_a_compiled_model_compiles_once(monkeypatch) -> None:
    """One StepConfig object per value (guards on identity hold), without a module-level dict
    that makes a whole-model torch.compile guard on its contents and compile twice."""
    import torch._dynamo
    from torch._dynamo.testing import CompileCounter

    from mpbn.models import create

    x = torch.randn(2, 3, 4, 4)
    norm_args = None
    assert fused.step_config(x, LIFParams(), norm_args) is fused.step_config(
        x.clone(), LIFParams(), norm_args)
    torch._dynamo.reset()
    if hasattr(torch._dynamo.utils, "warn_once_cache"):
        # Dynamo warns each message once per process: an earlier test's trace must not have
        # used up the warning this test looks for.
        monkeypatch.setattr(torch._dynamo.utils, "warn_once_cache", set())
    counter = CompileCounter()
    model = create("small_cnn", mpbn="channel", timesteps=2)
    compiled = torch.compile(model, backend=counter)
    batch = torch.randn(4, 1, 8, 8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            compiled(batch).sum().backward()
    assert counter.frame_count == 1, f"compiled {counter.frame_count} times"
    # Dynamo warns where it traces through a functools cache ("silent incorrectness is a
    # potential risk"): step_config does not call one while compiling.
    assert not [w for w in caught if "lru_cache" in str(w.message)]


def test_compiled_serves_more_layer_shapes_than_dynamos_recompile_limit(monkeypatch) -> None:
    """Every layer shape is a specialization of one compiled function; hitting dynamo's
    per-function limit (8 by default, 1 here) must not drop the whole model to eager."""
    pytest.importorskip("torch._inductor")
    import torch._dynamo

    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 1)
    monkeypatch.setattr(lif_backend.STATE, "compile_failed", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the fallback warns
        for channels in (2, 3, 5):
            x = torch.randn(2, 2, channels, 3, 3)
            torch.testing.assert_close(fused.lif_fused(x, backend="compiled"),
                                       fused.lif_fused(x, backend="eager"), rtol=0, atol=0)
    assert not lif_backend.STATE.compile_failed
    assert torch._dynamo.config.recompile_limit == 1  # raised for the fused calls only


@pytest.mark.parametrize("offset", [0.0, 1e3, -5e4])
def test_shifted_moments_keep_float32_precision_when_the_mean_dwarfs_the_spread(
        offset: float) -> None:
    """One-pass sums about a sample value: the variance of ``offset + N(0, 0.01^2)`` in float32
    stays within float32 rounding of the float64 two-pass answer (plain ``E[x^2] - E[x]^2``
    would lose every digit at offset 5e4), for channel and element reductions."""
    gen = torch.Generator().manual_seed(0)
    values64 = torch.randn(16, 4, 5, 5, generator=gen, dtype=torch.float64) * 0.01 + offset
    values = values64.float()  # the input as float32 holds it; compare on what it holds
    for dims in ((0, 2, 3), (0,)):
        var, mean = lif_recurrence._shifted_moments(values, dims)
        var_ref, mean_ref = torch.var_mean(values.double(), dim=dims, correction=0, keepdim=True)
        assert var.shape == mean.shape == var_ref.shape
        torch.testing.assert_close(var.double(), var_ref, rtol=1e-3, atol=0)
        torch.testing.assert_close(mean.double(), mean_ref, rtol=1e-6, atol=1e-6)


def test_sum_rows_first_is_the_plain_sum() -> None:
    values = torch.randn(3, 4, 5, 6, dtype=torch.float64)
    for dims in ((0, 2, 3), (0,), (0, 3)):
        torch.testing.assert_close(lif_recurrence._sum_rows_first(values, dims),
                                   values.sum(dim=dims, keepdim=True))


# Only against a hang: the training-kernel check takes ~100 s on an idle 2-core CPU and several
# times that on a loaded one, which must not fail it.
_INTERPRETER_TIMEOUT_S = 1800

# The interpreter checks run in a subprocess; triton_run.py sits next to this file.
_HELPER_PATH = f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r})\n"

TRITON_CHECK = _HELPER_PATH + r"""
import torch
from mpbn.functional import fused, triton_lif
from mpbn.functional.neuron import LIFParams
from mpbn.functional.surrogate import SURROGATES
from triton_run import run_triton
torch.manual_seed(0)
for reset in ("hard", "soft"):
    for surrogate in SURROGATES:
        for norm_mode in ("none", "channel", "element"):
            for steps in (1, 3):
                x = (torch.randn(steps, 2, 3, 2, 2) + 0.3).requires_grad_(True)
                g = torch.randn_like(x)
                v_th = torch.rand(3, 1, 1) * 0.4 + 0.3 if norm_mode == "none" else 0.5
                kwargs = dict(reset=reset, surrogate=surrogate, v_threshold=v_th, decay=0.4)
                params = []
                norm = None
                if norm_mode != "none":
                    shape = (3,) if norm_mode == "channel" else (3, 2, 2)
                    w = (torch.rand(shape) + 0.5).requires_grad_(True)
                    b = (torch.randn(shape) * 0.3).requires_grad_(True)
                    norm = fused.MembraneNormArgs(norm_mode, w, b, torch.randn(shape) * 0.2,
                                                  torch.rand(shape) + 0.5, training=False)
                    params = [w, b]
                out_e = fused.lif_fused(x, LIFParams(**kwargs), norm=norm, backend="eager")
                grads_e = torch.autograd.grad(out_e, [x, *params], g)
                out_t, grads_t = run_triton(x, g, norm, params, LIFParams(**kwargs))
                assert torch.equal(out_t, out_e), (reset, surrogate, norm_mode, steps)
                for a, b in zip(grads_t, grads_e):
                    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
print("TRITON_OK")
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
def test_triton_kernel_interpreted() -> None:
    """The Triton kernels (forward and BPTT backward) under TRITON_INTERPRET=1 on CPU tensors.

    Run in a subprocess: the interpreter flag is read when triton is first imported.
    """
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-c", TRITON_CHECK], env=env, capture_output=True,
                          text=True, timeout=_INTERPRETER_TIMEOUT_S)
    assert "TRITON_OK" in proc.stdout, proc.stderr[-3000:]


TRITON_TRAIN_CHECK = _HELPER_PATH + r"""
import itertools, warnings
import torch
from mpbn.functional import fused, triton_lif
from mpbn.functional.neuron import LIFParams
from mpbn.functional.surrogate import SURROGATES
from triton_run import run_triton
warnings.simplefilter("error", RuntimeWarning)  # a kernel failure must not fall back silently
torch.manual_seed(0)


def compare(x, gran, grad=True, **kwargs):
    g = torch.randn_like(x) if grad else None
    pshape = (x.shape[2],) if gran == "channel" else tuple(x.shape[2:])
    w = (torch.rand(pshape) + 0.5).requires_grad_(True)
    b = (torch.randn(pshape) * 0.3).requires_grad_(True)
    mean0, var0 = torch.randn(pshape), torch.rand(pshape) + 0.5
    results = []
    for backend in ("eager", "triton"):
        mean, var = mean0.clone(), var0.clone()
        norm = fused.MembraneNormArgs(gran, w, b, mean, var, training=True)
        if backend == "eager":
            out = fused.lif_fused(x, LIFParams(**kwargs), norm=norm, backend="eager")
            grads = torch.autograd.grad(out, [x, w, b], g) if grad else []
        else:
            out, grads = run_triton(x, g, norm, [w, b], LIFParams(**kwargs))
        results.append((out.detach(), grads or [], mean, var))
    (out_e, grads_e, mean_e, var_e), (out_t, grads_t, mean_t, var_t) = results
    assert torch.equal(out_t, out_e), (gran, grad, kwargs)
    if grad:  # as accurate as the torch code, against float64 (BN over 3 samples amplifies
        # float32 rounding to ~2e-4, so a fixed tolerance would flake on unlucky data)
        x64, w64, b64 = (t.detach().double().requires_grad_(True) for t in (x, w, b))
        norm = fused.MembraneNormArgs(gran, w64, b64, mean0.double(), var0.double())
        out = fused.lif_fused(x64, LIFParams(**kwargs), norm=norm, backend="eager")
        exact = torch.autograd.grad(out, [x64, w64, b64], g.double())
        for a, e, r in zip(grads_t, grads_e, exact, strict=True):
            err_t = (a.double() - r).abs().max().item()
            err_e = (e.double() - r).abs().max().item()
            assert err_t <= 2 * err_e + 1e-5, (gran, kwargs, err_t, err_e)
    torch.testing.assert_close(mean_t, mean_e)
    torch.testing.assert_close(var_t, var_e)


for reset, surrogate, gran, steps, detach in itertools.product(
        ("hard", "soft"), SURROGATES, ("channel", "element"), (1, 3), (False, True)):
    x = (torch.randn(steps, 5, 3, 2, 3) + 0.3).requires_grad_(True)
    compare(x, gran, reset=reset, surrogate=surrogate, v_threshold=0.5, decay=0.4,
            detach_reset=detach)
# Without a gradient the potential passes through two alternating step buffers.
for reset, steps in itertools.product(("hard", "soft"), (1, 2, 5)):
    x = torch.randn(steps, 5, 3, 2, 3) + 0.3
    compare(x, "channel", grad=False, reset=reset, v_threshold=0.5, decay=0.4)
# Tilings: batch chunks with a short last one, several position / feature blocks, [T, B, C]
# features, and a mean far from zero (the statistics' numerics).
for shape, gran, min_programs in [((2, 7, 3, 2, 3), "channel", 4), ((2, 7, 3, 2, 3), "element", 3),
                                  ((2, 2, 1, 33, 33), "channel", 256),
                                  ((2, 3, 3, 20, 20), "element", 256),
                                  ((3, 6, 4), "channel", 2), ((3, 6, 4), "element", 256)]:
    triton_lif._MIN_PROGRAMS = min_programs
    x = (torch.randn(*shape) * 2 + 5).requires_grad_(True)
    compare(x, gran)
print("TRITON_TRAIN_OK")
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
def test_triton_training_mpbn_kernels_interpreted() -> None:
    """Training-mode MPBN kernels (per-step batch statistics) against the eager fused path.

    Spikes identical, gradients w.r.t. input, lambda and beta close in float32, running
    statistics equal, for every reset, surrogate, granularity, detach_reset and T = 1, 3; and
    for tilings that split the batch, the positions and the features.
    """
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-c", TRITON_TRAIN_CHECK], env=env,
                          capture_output=True, text=True, timeout=_INTERPRETER_TIMEOUT_S)
    assert "TRITON_TRAIN_OK" in proc.stdout, proc.stderr[-3000:]


def test_a_failing_triton_kernel_warns_once_and_the_torch_code_runs(monkeypatch) -> None:
    """A kernel that fails (an unsupported GPU or Triton version) must not break training."""
    from mpbn.functional import triton_lif

    def broken(*args, **kwargs):
        raise RuntimeError("no kernel today")

    monkeypatch.setattr(triton_lif, "forward_train", broken)
    monkeypatch.setattr(lif_backend.STATE, "triton_failed", False)
    torch.manual_seed(0)
    x = (torch.randn(3, 4, 2, 3) + 0.3).requires_grad_(True)
    w = torch.ones(2, requires_grad=True)
    b = torch.zeros(2, requires_grad=True)
    outs = []
    for backend in ("triton", "eager"):
        norm = fused.MembraneNormArgs("channel", w, b, torch.zeros(2), torch.ones(2))
        cfg = fused.step_config(x, LIFParams(), norm)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = fused.FusedLIF.apply(x, w, b, LIFParams(), norm, cfg, backend)
            grads = torch.autograd.grad(out, [x, w, b], torch.ones_like(out))
        outs.append((out, grads, [str(c.message) for c in caught]))
    assert any("Triton LIF kernel failed" in m and "no kernel today" in m for m in outs[0][2])
    assert lif_backend.STATE.triton_failed and not lif_backend.triton_usable(x)
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=0, atol=0)
    for a, e in zip(outs[0][1], outs[1][1], strict=True):
        torch.testing.assert_close(a, e, rtol=0, atol=0)


@pytest.mark.parametrize("shape, tensor_shape, entries", [
    ((4, 3, 5, 5), None, 1),  # every parameter a float: one entry
    ((4, 3, 5, 5), (3, 1, 1), 3),  # a per-channel threshold: one entry per channel
    ((4, 3, 5, 5), (3, 5, 5), 75),  # a per-element threshold: one entry per neuron
    ((4, 7), (7,), 7),  # a linear layer's step [B, F]
])
def test_kernel_parameter_arrays_fill_floats_as_the_tensors_they_stand_for(
        shape, tensor_shape, entries) -> None:
    """A float parameter is filled on the device (no copy from the host, which on CUDA waits for
    the stream); its array must equal that of the same value given as a tensor of the layout."""
    from mpbn.functional import triton_lif

    torch.manual_seed(0)
    step = torch.randn(shape)
    threshold = (torch.rand(tensor_shape) + 0.2) if tensor_shape else 0.75
    inner, num, arrays = triton_lif._layout_and_params(step, threshold, 0.3, affine=False)
    assert num == entries
    expected = [triton_lif._param_array(torch.as_tensor(v).expand(step.shape[1:]), step, inner,
                                        num, 0.0) for v in (threshold, 0.3)]
    for got, want in zip(arrays, expected, strict=True):
        assert got.dtype == torch.float32 and got.is_contiguous() and got.shape == (num,)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    with_affine = triton_lif._layout_and_params(step, threshold, 0.3)[2]
    assert len(with_affine) == 4 and torch.equal(with_affine[0], torch.ones(num))
    assert torch.equal(with_affine[1], torch.zeros(num))


@pytest.mark.parametrize("launcher", ["forward", "backward", "forward_train", "backward_train"])
def test_every_kernel_launcher_makes_its_input_device_current(monkeypatch, launcher) -> None:
    """Triton launches on the current CUDA device, not on the pointers' one: each launcher must
    enter ``torch.cuda.device`` of its input before launching (here with a stand-in device
    context, so that it runs without a GPU) and leave CPU tensors alone."""
    from mpbn.functional import triton_lif

    entered = []

    class Recorder:
        def __init__(self, device):
            self.device = device

        def __enter__(self):
            entered.append(("enter", self.device))

        def __exit__(self, *exc):
            entered.append(("exit", self.device))

    class OnSecondGpu:  # the attributes the wrapper reads, as a tensor on cuda:1 has them
        is_cuda = True
        device = torch.device("cuda", 1)

    def launch(x, *args, **kwargs):
        entered.append(("launch", args))
        return "launched"

    monkeypatch.setattr(torch.cuda, "device", Recorder)
    on_device = triton_lif._on_input_device(launch)
    assert on_device(OnSecondGpu(), 1, 2) == "launched"
    assert entered == [("enter", OnSecondGpu.device), ("launch", (1, 2)),
                       ("exit", OnSecondGpu.device)]
    entered.clear()
    assert on_device(torch.zeros(2), 3) == "launched" and entered == [("launch", (3,))]
    # The public launchers are the wrapped ones.
    assert getattr(triton_lif, launcher).__code__ is on_device.__code__


def test_a_tensor_threshold_of_another_dtype_falls_back_to_the_reference() -> None:
    """bf16 input and a float32 per-channel threshold: the reference fires on the potential
    promoted to float32, so the fused bf16 step would differ; auto must take the reference."""
    torch.manual_seed(0)
    threshold = torch.rand(5) * 0.4 + 0.3
    x = (torch.randn(4, 7, 5, 9, 9) * 0.8 + 0.3).bfloat16()
    assert "another dtype" in fused.unfusable_reason(
        x, LIFParams(v_threshold=threshold.view(5, 1, 1)))
    auto = LIF(backend="auto", v_threshold=threshold)(x)
    reference = LIF(backend="reference", v_threshold=threshold)(x)
    assert torch.equal(auto, reference)
