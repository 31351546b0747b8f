import json

import numpy as np
import pytest
import torch
from torch import nn

from mpbn.analysis._common import evaluate
from mpbn.analysis.fold_report import analyze_fold, folded_thresholds
from mpbn.analysis.gamma import (
    analyze_early_exit,
    analyze_gamma,
    early_exit_curve,
    exit_step,
    gamma_table,
)
from mpbn.analysis.robustness import InputSpace, analyze_robustness, fgsm, gaussian_noise


def test_exit_step_rule_on_hand_made_table():
    table = np.array([[0.9, 0.5, 0.05, 0.2, 0.05, 0.01],
                      [0.1, 0.8, 0.30, 0.05, 0.02, 0.00]])
    # Every layer is below 0.1 from step 5 on (1-based); step 4 has 0.2 -> exit at t = 4.
    assert exit_step(table, 0.1) == 4
    assert exit_step(table, 0.25) == 3   # step 3 has 0.30 >= 0.25; steps 4..6 are below
    assert exit_step(table, 0.31) == 2
    assert exit_step(table, 0.0) == 6    # nothing is below 0: run every step
    assert exit_step(table, 1.0) == 1    # everything below: still run one step
    assert exit_step(np.array([[0.5, 0.05, 0.5]]), 0.1) == 3  # must STAY below


def test_gamma_table_and_early_exit_at_T_equals_full_run(make_tiny, tiny_data, tmp_path):
    x, y = tiny_data
    model = make_tiny(norm="bntt")
    with torch.no_grad():
        model.norm1.weight.copy_(torch.tensor([[1.0], [0.5], [0.05], [0.0]]).expand(4, 4))
        model.norm2.weight.copy_(torch.tensor([[0.2], [0.9], [0.3], [0.01]]).expand(4, 4))
    names, table = gamma_table(model)
    assert names == ["norm1", "norm2"]
    np.testing.assert_allclose(table, [[1.0, 0.5, 0.05, 0.0], [0.2, 0.9, 0.3, 0.01]])
    assert exit_step(table, 0.1) == 3
    curve = early_exit_curve(model, x, y, [0.0, 0.1, 2.0])
    assert curve["exit_step"] == [4, 3, 1]
    full = evaluate(model, x, y)
    assert curve["acc"][0] == full["acc"] and curve["loss"][0] == pytest.approx(full["loss"])
    # Exit at 3 really runs 3 steps: compare with a model built for T = 3 with the same weights.
    short = make_tiny(norm="bntt", timesteps=3)
    state = {k: (v[:3] if k.startswith("norm") and v.dim() == 2 else v)
             for k, v in model.state_dict().items()}
    short.load_state_dict(state)
    assert curve["loss"][1] == pytest.approx(evaluate(short, x, y)["loss"])
    assert model.timesteps == 4  # restored
    g = analyze_gamma(model, tmp_path)
    assert g["exit_step"] == 3 and (tmp_path / "gamma.png").is_file()
    e = analyze_early_exit({"bntt": model, "bn": make_tiny()}, x, y, tmp_path)
    assert e["skipped"] == ["bn"]
    assert not analyze_gamma(make_tiny(), tmp_path / "none")["available"]


def test_early_exit_slices_sequence_inputs(make_tiny, tiny_data):
    x, y = tiny_data
    model = make_tiny(norm="bntt")
    seq = x.unsqueeze(0).expand(4, -1, -1, -1, -1).clone()
    seq[2:] = 0  # steps 3-4 differ from the static image; exit at 2 must not see them
    static_2 = evaluate(model, x, y, timesteps=2)
    assert evaluate(model, seq, y, timesteps=2)["loss"] == pytest.approx(static_2["loss"])


def test_fgsm_zero_is_clean_and_loss_never_decreases(tiny_model, tiny_data, tmp_path):
    x, y = tiny_data
    assert torch.equal(fgsm(tiny_model, x, y, 0.0), x)
    clean = evaluate(tiny_model, x, y)
    out = analyze_robustness({"m": tiny_model}, x, y, tmp_path, sigmas=[0.0],
                             epsilons=[0.0])
    assert out["fgsm"]["m"]["acc"] == [clean["acc"]]
    assert out["noise"]["m"]["acc"] == [clean["acc"]]
    # A linear softmax classifier: CE is convex in x, so L(x + eps sign g) >= L(x) + eps|g|_1.
    torch.manual_seed(0)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(36, 3)).eval()
    base = evaluate(linear, x, y)["loss"]
    losses = [evaluate(linear, fgsm(linear, x, y, eps), y)["loss"] for eps in (0.01, 0.05, 0.2)]
    assert base < losses[0] < losses[1] < losses[2]


def test_fgsm_uses_surrogate_gradient_of_the_snn(tiny_model, tiny_data):
    x, y = tiny_data
    x_adv = fgsm(tiny_model, x, y, 0.05)
    delta = (x_adv - x).abs()
    assert delta.max() == pytest.approx(0.05, abs=1e-6)  # a signed step everywhere grads exist
    assert evaluate(tiny_model, x_adv, y)["loss"] >= evaluate(tiny_model, x, y)["loss"]


def test_pixel_space_noise_and_clip():
    space = InputSpace(mean=(0.5,), std=(0.25,))
    x = torch.zeros(2, 1, 3, 3)  # pixel 0.5
    torch.testing.assert_close(space.to_pixels(x), torch.full_like(x, 0.5))
    noisy = gaussian_noise(x, 10.0, space, torch.Generator().manual_seed(0))
    pixels = space.to_pixels(noisy)
    assert pixels.min() >= 0 and pixels.max() <= 1 + 1e-6  # clipped to valid images
    assert torch.equal(gaussian_noise(x, 0.0, space), x)


def test_fold_report_counts_and_zero_mismatch(make_tiny, tiny_data, tmp_path):
    x, _ = tiny_data
    model = make_tiny(mpbn="channel")
    with torch.no_grad():
        model.lif1.membrane_norm.weight.copy_(torch.tensor([1.0, -0.5, 0.0, 2.0]))
        model.lif2.membrane_norm.running_var.fill_(4.0)
    layers = folded_thresholds(model)
    assert [(l["negative_lambda"], l["zero_lambda"]) for l in layers] == [(1, 1), (0, 0)]
    # lif2: (V_th - beta) * sqrt(var + eps) / lambda + mu = 0.5 * sqrt(4 + 1e-5)
    torch.testing.assert_close(layers[1]["threshold"], torch.full((4,), 0.5 * (4 + 1e-5) ** 0.5))
    result = analyze_fold(model, x, tmp_path)
    assert result["mismatch"]["total_mismatches"] == 0
    assert result["layers"][0]["infinite_threshold"] == 1
    saved = json.loads((tmp_path / "fold.json").read_text())
    assert saved["layers"][0]["negative_lambda"] == 1
    assert not analyze_fold(make_tiny(), x, tmp_path / "none")["available"]


def test_fgsm_reaches_pixels_through_poisson_encoding():
    from mpbn.analysis import fgsm
    from mpbn.models import create

    torch.manual_seed(0)
    model = create("small_cnn", num_classes=10, timesteps=4, norm="bntt", encoding="poisson",
                   in_channels=1, input_size=8).eval()
    x = torch.rand(8, 1, 8, 8) * 0.8 + 0.1  # away from the [0, 1] clip
    y = torch.randint(0, 10, (8,))
    adv = fgsm(model, x, y, 0.05)
    assert torch.allclose((adv - x).abs(), torch.full_like(x, 0.05), atol=1e-6)
