"""mpbn.engine.compiling: the Inductor options of `run.compile`, and that torch accepts them."""

import pytest
import torch
from tiny_models import tiny_model

from mpbn.engine import compiling
from mpbn.engine.compiling import compile_model, inductor_options


@pytest.mark.parametrize("mpbn, device, expected", [
    ("element", "cpu", {"layout_optimization": False}),
    ("channel", "cpu", None),
    ("none", "cpu", None),
    ("element", "cuda", None),  # channels-last convs pay off there; neurons run Triton
])
def test_layout_optimization_is_off_only_for_element_wise_mpbn_on_cpu(mpbn, device, expected):
    model = tiny_model("fastnet", timesteps=1, mpbn=mpbn)
    assert inductor_options(model, device) == expected
    assert inductor_options(model, torch.device(device)) == expected


def test_compile_model_passes_the_options_to_inductor_only(monkeypatch):
    calls = []
    monkeypatch.setattr(compiling.torch, "compile", lambda model, **kw: calls.append(kw) or model)
    element = tiny_model("fastnet", timesteps=1, mpbn="element")
    compile_model(element, "cpu")
    compile_model(element, "cpu", options={"max_autotune": False})
    compile_model(element, "cpu", backend="eager")  # options are Inductor's: not for others
    compile_model(tiny_model("fastnet", timesteps=1, mpbn="channel"), "cpu")
    assert calls == [{"options": {"layout_optimization": False}},
                     {"options": {"layout_optimization": False, "max_autotune": False}},
                     {"backend": "eager"}, {}]


def test_an_element_wise_model_compiled_with_the_options_computes_the_eager_forward():
    """A real Inductor compile (gcc): torch accepts the option and the graph is the model's."""
    torch.manual_seed(0)
    model = tiny_model("fastnet", timesteps=2, mpbn="element").eval()
    x = torch.rand(4, 3, 8, 8)
    with torch.no_grad():
        expected = model(x)
        got = compile_model(model, "cpu")(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
