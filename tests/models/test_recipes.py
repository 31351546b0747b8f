"""A library user and a CLI user get the same neurons: ``create`` agrees with every preset.

``mpbn.recipes`` is the one table of each paper's neuron settings; ``models/`` and
``engine/presets.py`` both read it. These tests build the model of every preset the way the
engine does (``mpbn.engine.train.build_model``, tiny width and input, no forward pass) and
compare its LIF settings with ``mpbn.models.create`` of the paper's reference model.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import mpbn.recipes as recipes
from mpbn.engine.config import apply_overrides
from mpbn.engine.presets import PRESETS, get_preset
from mpbn.engine.train import build_model
from mpbn.layers import LIF
from mpbn.models import create

FIELDS = ("decay", "v_threshold", "reset", "surrogate", "alpha")

#: Preset families by name prefix: the paper whose neuron they train, and the model whose
#: ``create`` defaults that neuron must equal.
FAMILIES = {"bntt-": ("vgg9", recipes.BNTT_NEURON),
            "mpbn-": ("resnet19", recipes.MPBN_NEURON),
            "cifar10-r20narrow-": ("resnet19", recipes.MPBN_NEURON),
            "cifar10-fast-": ("resnet19", recipes.MPBN_NEURON),  # MPBN's neuron, its own net
            "dvs128-gesture-": ("resnet19", recipes.MPBN_NEURON)}  # MPBN's CIFAR10-DVS recipe


def _family(preset: str) -> tuple[str, dict]:
    return next(v for prefix, v in FAMILIES.items() if preset.startswith(prefix))


def _neurons(model) -> set[tuple]:
    """The distinct ``(decay, v_threshold, reset, surrogate, alpha)`` of a model's LIFs."""
    lifs = [m for m in model.modules() if isinstance(m, LIF)]
    assert lifs
    return {tuple(getattr(m, f) for f in FIELDS) for m in lifs}


def _preset_model(name: str):
    cfg = get_preset(name)
    model_name = PRESETS[name]["model"]
    small = {"fc_smnist": {}, "fastnet": {"widths": [4, 8]}}  # no ``width`` option there
    kwargs = small.get(model_name, {"width": 4})
    cfg = apply_overrides(cfg, {"model_kwargs": kwargs, "timesteps": 2})
    if model_name == "fc_smnist":
        shape = (1,)
    else:
        shape = (2 if "dvs" in PRESETS[name]["dataset"] else 3, 32, 32)
    return build_model(cfg, SimpleNamespace(num_classes=10, input_shape=shape))


def test_every_preset_belongs_to_a_paper_family():
    orphans = [p for p in PRESETS if not any(p.startswith(f) for f in FAMILIES)]
    assert not orphans, f"presets of no known family (add them to FAMILIES): {orphans}"


@pytest.mark.parametrize("reference", ["vgg9", "vgg11", "fc_smnist"])
def test_bntt_models_use_the_bntt_table(reference):
    want = {tuple(recipes.BNTT_NEURON[f] for f in FIELDS)}
    assert _neurons(create(reference, width=4, input_size=32) if reference != "fc_smnist"
                    else create(reference, timesteps=4)) == want


@pytest.mark.parametrize("reference", ["resnet19", "resnet20", "vgg16", "small_cnn"])
def test_mpbn_models_use_the_mpbn_table(reference):
    want = {tuple(recipes.MPBN_NEURON[f] for f in FIELDS)}
    assert _neurons(create(reference, width=4, input_size=32 if reference != "small_cnn"
                           else 8)) == want


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_neurons_equal_the_library_model(preset):
    reference, _ = _family(preset)
    library = _neurons(create(reference, width=4, input_size=32))
    assert _neurons(_preset_model(preset)) == library, (
        f"preset {preset!r} builds other neurons than mpbn.models.create({reference!r})"
    )


def test_the_other_bntt_leak_is_a_documented_option():
    variant = recipes.BNTT_NEURON_MODEL_CLASS
    assert variant["decay"] == 0.95 != recipes.BNTT_NEURON["decay"]
    assert {k: v for k, v in variant.items() if k != "decay"} == \
        {k: v for k, v in recipes.BNTT_NEURON.items() if k != "decay"}
    model = create("vgg9", width=4, input_size=32, neuron=variant)
    assert {n[0] for n in _neurons(model)} == {0.95}
    cfg = apply_overrides(get_preset("bntt-vgg9-cifar10-t25"), {"decay": 0.95})
    assert PRESETS["bntt-vgg9-cifar10-t25"]["decay"] == recipes.BNTT_NEURON["decay"]
    assert cfg != get_preset("bntt-vgg9-cifar10-t25")


def test_the_bntt_authors_poisson_rate_is_a_model_option():
    """``set_poisson_rate_scale(0.5)`` feeds the stem the authors' PoissonGen rate, the default
    the rate ``|x|`` (same draws: the same global seed)."""
    from mpbn.functional.encoding import poisson_encode

    model = create("vgg9", num_classes=3, timesteps=4, input_size=8, width=8)
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    for scale in (1.0, 0.5):
        if scale != 1.0:
            model.set_poisson_rate_scale(scale)
        torch.manual_seed(3)
        got = model.encode(x)
        torch.manual_seed(3)
        want = model.stem(poisson_encode(x, 4, rate_scale=scale))
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.manual_seed(3)
    assert not torch.equal(model.encode(x), model.stem(poisson_encode(x, 4)))
    with pytest.raises(ValueError, match="rate_scale must be a positive"):
        model.set_poisson_rate_scale(0)
