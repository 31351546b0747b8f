import json

import numpy as np
import torch
from torch import nn

from mpbn.analysis._common import evaluate
from mpbn.analysis.curves import aggregate_curve, analyze_curves
from mpbn.analysis.landscape import (
    analyze_landscape,
    filter_normalized_direction,
    loss_landscape_1d,
    perturbed,
)


def test_direction_is_filter_normalized_and_zero_on_norms(tiny_model):
    model = tiny_model
    model.lif1.membrane_norm = None
    d = filter_normalized_direction(model, torch.Generator().manual_seed(0))
    for name, p in model.named_parameters():
        if name.startswith("norm") or p.dim() <= 1:
            assert torch.count_nonzero(d[name]) == 0, name
        else:
            torch.testing.assert_close(d[name].flatten(1).norm(dim=1),
                                       p.detach().flatten(1).norm(dim=1))
            assert not torch.equal(d[name], p.detach())


def test_direction_zero_on_bntt_gamma_and_mpbn(make_tiny):
    from mpbn.analysis.landscape import is_norm_module

    model = make_tiny(norm="bntt", mpbn="channel")
    d = filter_normalized_direction(model, torch.Generator().manual_seed(0))
    assert d["norm1.weight"].shape == (4, 4)  # BNTT gamma [T, C] is 2-d but still a norm
    for name, m in model.named_modules():
        if is_norm_module(m):
            for pname, _ in m.named_parameters(recurse=False):
                assert torch.count_nonzero(d[f"{name}.{pname}"]) == 0


def test_landscape_at_zero_is_model_loss_and_weights_restored(tiny_model, tiny_data):
    x, y = tiny_data
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    result = loss_landscape_1d(tiny_model, x, y, [-0.5, 0.0, 0.5], seed=3)
    with torch.no_grad():
        expected = float(nn.functional.cross_entropy(tiny_model(x), y))
    assert abs(result["loss"][1] - expected) < 1e-5
    assert result["loss"][0] != result["loss"][1]
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_perturbed_moves_by_alpha_times_direction(tiny_model):
    d = filter_normalized_direction(tiny_model, torch.Generator().manual_seed(0))
    w = tiny_model.conv1.weight.detach().clone()
    with perturbed(tiny_model, d, 0.25):
        torch.testing.assert_close(tiny_model.conv1.weight.detach(), w + 0.25 * d["conv1.weight"])
        torch.testing.assert_close(tiny_model.norm1.weight.detach(),
                                   torch.ones_like(tiny_model.norm1.weight))
    assert torch.equal(tiny_model.conv1.weight.detach(), w)


def test_analyze_landscape_writes_numbers(tiny_model, tiny_data, tmp_path):
    x, y = tiny_data
    out = analyze_landscape({"a": tiny_model}, x, y, tmp_path, n_points=5)
    saved = json.loads((tmp_path / "landscape.json").read_text())
    assert saved["curves"]["a"]["alpha"] == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert abs(saved["curves"]["a"]["loss"][2] - evaluate(tiny_model, x, y)["loss"]) < 1e-9
    assert (tmp_path / "landscape.png").stat().st_size > 0
    assert out["files"]


def _write_run(root, name, accs_per_seed):
    run = root / name
    for seed, accs in enumerate(accs_per_seed):
        d = run / f"seed_{seed}"
        d.mkdir(parents=True)
        lines = [json.dumps({"epoch": e + 1, "test_acc": a, "test_loss": 1.0 / (e + 1 + seed)})
                 for e, a in enumerate(accs)]
        (d / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (run / "config.json").write_text(json.dumps({"name": name}))
    return run


def test_curves_mean_std_equal_numpy(tmp_path):
    accs = [[10.0, 50.0, 70.0], [20.0, 40.0, 90.0], [30.0, 60.0]]  # third seed still running
    run = _write_run(tmp_path, "mpbn", accs)
    base = _write_run(tmp_path, "baseline", [[5.0, 6.0, 7.0]])
    out = analyze_curves([base, run], tmp_path / "out")
    c = out["curves"]["mpbn"]["test_acc"]  # default ddof=1, as summary.json
    table = np.array([a[:2] for a in accs])
    assert c["epoch"] == [1, 2]
    np.testing.assert_allclose(c["mean"], table.mean(0))
    np.testing.assert_allclose(c["std"], table.std(0, ddof=1))
    c1 = aggregate_curve([[{"epoch": 1, "x": 1.0}], [{"epoch": 1, "x": 3.0}]], "x", ddof=0)
    np.testing.assert_allclose(c1["std"], [np.std([1.0, 3.0])])
    assert out["curves"]["baseline"]["test_acc"]["std"] == [0.0, 0.0, 0.0]
    assert (tmp_path / "out" / "curves.png").is_file()
    assert (tmp_path / "out" / "curves.csv").read_text().count("\n") == 1 + 2 * 2 + 2 * 3
