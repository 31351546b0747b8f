"""record_spikes: what each ``keep`` mode collects, against hooks written out by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mpbn.layers import LIF, SpikeRecord, record_spikes


class _TwoLayers(nn.Module):
    """Two LIFs, the first called twice per forward (a shared neuron)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = LIF(v_threshold=0.3)
        self.b = LIF(v_threshold=0.6)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x_seq) + self.a(x_seq * 0.5))


def _by_hand(model: nn.Module, inputs: list[torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    outs: list[tuple[str, torch.Tensor]] = []
    handles = [m.register_forward_hook(lambda m, i, o, n=n: outs.append((n, o.detach())))
               for n, m in model.named_modules() if isinstance(m, LIF)]
    for x in inputs:
        model(x)
    for h in handles:
        h.remove()
    return outs


def _inputs(steps=(4, 4)) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.rand(t, 3, 2, 5, generator=g) for t in steps]


def test_tensors_keeps_every_call_in_order():
    model = _TwoLayers()
    xs = _inputs()
    want = _by_hand(model, xs)
    with record_spikes(model, keep="tensors") as record:
        for x in xs:
            model(x)
    assert record.names == ["a", "b"]
    assert [n for n, _ in record.outputs] == ["a", "a", "b", "a", "a", "b"]
    for (n, got), (m, ref) in zip(record.outputs, want, strict=True):
        assert n == m and torch.equal(got, ref) and not got.requires_grad
    assert record.spikes_per_step == {} and record.total_spikes is None


def test_counts_sum_each_layer_per_step_over_calls_and_pad_shorter_runs():
    model = _TwoLayers()
    xs = _inputs(steps=(3, 5, 2))  # a later call with more steps, then one with fewer
    want: dict[str, torch.Tensor] = {}
    for name, out in _by_hand(model, xs):
        per_step = out.abs().flatten(1).sum(1).double()
        old = want.get(name, torch.zeros(0, dtype=torch.float64))
        total = torch.zeros(max(old.numel(), per_step.numel()), dtype=torch.float64)
        total[: old.numel()] += old
        total[: per_step.numel()] += per_step
        want[name] = total
    with record_spikes(model, keep="counts") as record:
        for x in xs:
            model(x)
    assert list(record.spikes_per_step) == ["a", "b"]
    for name in want:
        assert record.spikes_per_step[name].dtype == torch.float64
        torch.testing.assert_close(record.spikes_per_step[name], want[name], rtol=0, atol=0)
    assert record.neurons == {"a": 10, "b": 10}
    assert record.outputs == []


def test_total_is_one_running_sum_and_into_continues_it():
    model = _TwoLayers()
    xs = _inputs(steps=(4, 2))
    outs = [o for _, o in _by_hand(model, xs)]
    record = SpikeRecord(keep="total")
    for x in xs:  # two with-blocks, one record
        with record_spikes(model, keep="total", into=record):
            model(x)
    expected = sum(float(o.sum()) for o in outs)
    assert float(record.total_spikes) == expected
    assert record.total_spikes.dtype == torch.float32 and record.total_spikes.dim() == 0
    assert record.neuron_steps == sum(o.numel() for o in outs)
    assert record.rate == pytest.approx(expected / record.neuron_steps)
    assert record.names == ["a", "b"]
    assert SpikeRecord(keep="total").rate == 0.0


def test_a_lone_neuron_is_recorded_under_the_empty_name():
    lif = LIF()
    x = torch.rand(3, 2, 4)
    with record_spikes(lif, keep="tensors") as record:
        out = lif(x)
    assert record.names == [""] and torch.equal(record.outputs[0][1], out)


def test_hooks_are_removed_also_after_an_error():
    model = _TwoLayers()
    with pytest.raises(RuntimeError, match="boom"):
        with record_spikes(model, keep="tensors") as record:
            model(_inputs()[0])
            raise RuntimeError("boom")
    n = len(record.outputs)
    model(_inputs()[0])
    assert len(record.outputs) == n
    assert all(not m._forward_hooks for m in model.modules())


def test_bad_keep_and_mismatched_into():
    with pytest.raises(ValueError, match="unknown keep 'all'.*tensors, counts, total"):
        with record_spikes(LIF(), keep="all"):
            pass
    with pytest.raises(ValueError, match="keep='counts' into a record of keep='total'"):
        with record_spikes(LIF(), keep="counts", into=SpikeRecord(keep="total")):
            pass
