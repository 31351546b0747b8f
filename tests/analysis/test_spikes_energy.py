import json

import pytest
import torch
from torch import nn

from mpbn.analysis.energy import E_AC_PJ, E_MAC_PJ, analyze_energy, energy_table
from mpbn.analysis.spikes import analyze_spikes, measure_activity, synaptic_ops
from mpbn.layers import LIF


def _direct_counts(model, x):
    """Spikes of each LIF per step by hooks, independent of the analysis code."""
    outs = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: outs.__setitem__(n, o.detach()))
             for n, m in model.named_modules() if isinstance(m, LIF)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return outs


def test_spike_rates_equal_direct_count(tiny_model, tiny_data):
    x, _ = tiny_data
    act = measure_activity(tiny_model, x, batch_size=10)  # 3 chunks, summed
    outs = _direct_counts(tiny_model, x)
    assert [s.name for s in act.spikes] == ["lif1", "lif2"]
    for layer in act.spikes:
        o = outs[layer.name]
        n_neurons = o[0, 0].numel()
        expected_steps = (o.sum(dim=(1, 2, 3, 4)) / (n_neurons * x.shape[0])).tolist()
        assert layer.rate_per_step(act.n_samples) == pytest.approx(expected_steps)
        assert layer.spike_rate(act.n_samples) == pytest.approx(
            float(o.sum()) / n_neurons / x.shape[0])
    assert sum(s.spike_rate(act.n_samples) for s in act.spikes) > 0  # the stand-in spikes


def test_sops_hand_count_on_tiny_conv():
    conv = nn.Conv2d(1, 2, 3, padding=1)
    events = torch.zeros(2, 1, 3, 3)
    events[0, 0, 0, 0] = 1  # corner: inside 4 of the 9 receptive fields
    events[1, 0, 1, 1] = 1  # centre: inside all 9
    events[1, 0, 2, 1] = 1  # bottom edge middle: 6
    assert synaptic_ops(conv, events).tolist() == [4 * 2, (9 + 6) * 2]
    strided = nn.Conv2d(1, 3, 3, stride=2, padding=1)  # outputs at rows/cols 0 and 2
    # Corner (0, 0) lies in the windows of outputs (0, 0) only -> 1 position x 3 channels.
    assert synaptic_ops(strided, events[:1]).tolist() == [3]
    grouped = nn.Conv2d(2, 4, 1, groups=2)  # each input channel drives 2 outputs
    assert synaptic_ops(grouped, torch.ones(1, 2, 2, 2)).tolist() == [2 * 2 * 2 * 2]
    linear = nn.Linear(5, 7)
    assert synaptic_ops(linear, torch.tensor([[1.0, 0, 1, 0, 1]])).tolist() == [21]


def test_sops_of_model_match_hand_formula(tiny_model, tiny_data):
    x, _ = tiny_data
    act = measure_activity(tiny_model, x)
    outs = _direct_counts(tiny_model, x)
    by_name = {s.name: s for s in act.synapses}
    assert by_name["conv1"].analog_input and sum(by_name["conv1"].sops_per_step) == 0
    # conv1 is applied once to the static image: ANN MACs = 4*6*6 outputs x 9 per sample.
    assert by_name["conv1"].macs == pytest.approx(4 * 36 * 9 * x.shape[0])
    s1 = outs["lif1"]
    expected = synaptic_ops(tiny_model.conv2, s1.flatten(0, 1)).sum()
    assert sum(by_name["conv2"].sops_per_step) == pytest.approx(float(expected))
    # Head: every spike of lif2 at every step drives 3 outputs.
    assert sum(by_name["head"].sops_per_step) == pytest.approx(float(outs["lif2"].sum()) * 3)


def test_energy_is_sops_times_e_ac_plus_analog_macs(tiny_model, tiny_data, tmp_path):
    x, _ = tiny_data
    act = measure_activity(tiny_model, x)
    table = energy_table(act)
    n = x.shape[0]
    sops = sum(sum(s.sops_per_step) for s in act.synapses) / n
    macs = 4 * 36 * 9
    assert table["total"]["sops"] == pytest.approx(sops)
    assert table["total"]["snn_pj"] == pytest.approx(sops * E_AC_PJ + macs * E_MAC_PJ)
    ann = macs + 4 * 9 * 4 * 9 + 4 * 3
    assert table["total"]["ann_pj"] == pytest.approx(ann * E_MAC_PJ)
    custom = energy_table(act, e_ac=1.0, e_mac=0.0)
    assert custom["total"]["snn_pj"] == pytest.approx(sops)
    analyze_energy({"m": tiny_model}, x, tmp_path, activities={"m": act})
    saved = json.loads((tmp_path / "energy.json").read_text())
    assert saved["m"]["total"]["sops"] == pytest.approx(sops)


def test_analyze_spikes_files(tiny_model, make_tiny, tiny_data, tmp_path):
    x, _ = tiny_data
    # Different T per model: per-step CSV columns differ (t4 only for the first).
    out = analyze_spikes({"bn": tiny_model, "bntt": make_tiny(norm="bntt", timesteps=3)}, x,
                         tmp_path)
    assert tmp_path.joinpath("spikes.csv").read_text().splitlines()[0].endswith("t3,t4")
    assert (tmp_path / "spikes.png").is_file() and (tmp_path / "spikes.svg").is_file()
    saved = json.loads((tmp_path / "spikes.json").read_text())
    assert len(saved["bn"]["layers"][0]["rate_per_step"]) == 4
    assert out["activity"]["bn"]["total_sops_per_sample"] > 0
