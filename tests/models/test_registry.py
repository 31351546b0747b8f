"""Registry, factory arguments and their errors."""

from __future__ import annotations

import pytest
import torch

import mpbn.models as models
from mpbn.layers import LIF

EXPECTED = {"resnet19", "resnet20", "resnet20_narrow", "resnet18", "resnet34", "vgg16", "vgg9",
            "vgg11", "vggsnn", "small_cnn", "fc_smnist", "fastnet"}


def test_registered_names() -> None:
    assert EXPECTED <= set(models.list_models())


def test_unknown_model_lists_choices() -> None:
    with pytest.raises(ValueError, match="unknown model 'resnet99'.*resnet19.*vgg16"):
        models.create("resnet99")


@pytest.mark.parametrize("name", ["small_cnn", "resnet20_narrow", "fc_smnist"])
def test_unknown_norm_lists_choices(name: str) -> None:
    with pytest.raises(ValueError, match="unknown norm 'gn'.*bn, tdbn, tebn, bntt, ln"):
        models.create(name, norm="gn")


def test_unknown_mpbn_lists_choices() -> None:
    with pytest.raises(ValueError, match="unknown mpbn 'spatial'.*channel, element"):
        models.create("small_cnn", mpbn="spatial")


def test_unknown_keyword_and_neuron_option() -> None:
    with pytest.raises(TypeError, match="depth"):
        models.create("small_cnn", depth=3)
    with pytest.raises(ValueError, match="unknown neuron option"):
        models.create("small_cnn", neuron={"tau": 2.0})


def test_neuron_settings_reach_every_lif() -> None:
    model = models.create("small_cnn", neuron={"decay": 0.5, "surrogate": "tanh"},
                          v_threshold=0.7)
    lifs = [m for m in model.modules() if isinstance(m, LIF)]
    assert lifs and all(m.decay == 0.5 and m.v_threshold == 0.7 and m.surrogate == "tanh"
                        for m in lifs)


def test_register_model_decorator() -> None:
    @models.register_model
    def _tiny_test_model(**kwargs: object) -> torch.nn.Module:
        return models.create("small_cnn", **kwargs)

    try:
        assert "_tiny_test_model" in models.list_models()
        assert isinstance(models.create("_tiny_test_model", num_classes=3), models.SpikingNet)
    finally:
        from mpbn.models import _registry

        _registry._MODELS.pop("_tiny_test_model")


@pytest.mark.parametrize("norm", ["bn", "tdbn", "tebn", "bntt", "ln"])
@pytest.mark.parametrize("mpbn", ["none", "channel", "element"])
def test_every_norm_and_mpbn_combination(norm: str, mpbn: str) -> None:
    model = models.create("small_cnn", norm=norm, mpbn=mpbn, timesteps=3)
    out = model(torch.rand(2, 1, 8, 8))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_static_and_sequence_inputs() -> None:
    model = models.create("small_cnn", timesteps=3).eval()
    x = torch.rand(2, 1, 8, 8)
    # Direct encoding = the same image at every step.
    torch.testing.assert_close(model(x), model(x.expand(3, *x.shape)))
    with pytest.raises(ValueError, match=r"expects a static batch \[B, 1, 8, 8\]"):
        model(torch.rand(2, 3, 8, 8))


def test_direct_encoding_runs_the_first_conv_once() -> None:
    model = models.create("small_cnn", timesteps=5).eval()
    calls = []
    model.stem.conv.register_forward_hook(lambda m, i, o: calls.append(o.shape))
    model(torch.rand(2, 1, 8, 8))
    assert calls == [torch.Size([2, 16, 8, 8])]


def test_direct_encoding_train_mode_matches_expanded_input() -> None:
    torch.manual_seed(0)
    a = models.create("small_cnn", timesteps=3)
    b = models.create("small_cnn", timesteps=3)
    b.load_state_dict(a.state_dict())
    x = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(a(x), b(x.expand(3, *x.shape)))
    torch.testing.assert_close(a.stem.norm.running_var, b.stem.norm.running_var)


def test_poisson_encoding_and_smnist_sequence() -> None:
    model = models.create("vgg9", input_size=8, timesteps=2, mpbn="channel")
    assert model.encoding == "poisson"
    assert model(torch.rand(2, 3, 8, 8)).shape == (2, 10)
    smnist = models.create("fc_smnist", timesteps=16)
    assert smnist.input_shape == (1,)
    assert smnist(torch.rand(2, 1, 4, 4)).shape == (2, 10)  # read as [16, 2, 1]
    assert smnist(torch.rand(16, 2, 1)).shape == (2, 10)
