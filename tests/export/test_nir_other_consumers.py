"""NIR consumers that install here beside torch but cannot run mpbn's folded graphs spike for
spike: Rockpool 3.1.0 and Sinabs 3.1.3 (issue 17, item 5; docs/MODELS.md, "NIR consumers").

These tests pin *why* no target exists for them, so that a consumer release that lifts the
limit fails here and a maintainer adds the target: mpbn's LIF (MPBN Eq. 1-2) resets to zero
after a binary spike (NIR's ``v_reset = 0``), which neither consumer's neuron does.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from mpbn.export import to_nir

from .test_nir_targets import folded_case, mismatches, spikes_by_layer

nir = pytest.importorskip("nir")


def test_rockpool_from_nir_fails_on_every_nir_lif() -> None:
    pytest.importorskip("rockpool")
    from rockpool.nn.modules.torch.nir import from_nir

    folded, _, _ = folded_case("fc_smnist", "channel")
    graph = to_nir(folded)  # Affine -> LIF -> Affine -> LIF -> Affine
    # Rockpool 3.1.0 reads ``node.tau_mem`` from a ``nir.LIF`` (whose field is ``tau``): no
    # graph with an LIF node imports. Its LIFNeuronTorch would also reset by subtraction.
    with pytest.raises(AttributeError, match="'LIF' object has no attribute 'tau_mem'"):
        from_nir(graph)


def test_sinabs_imports_but_its_neurons_subtract_and_multi_spike() -> None:
    pytest.importorskip("sinabs")
    import sinabs
    import sinabs.activation as sa
    import sinabs.layers as sl

    folded, x, x_seq = folded_case("fc_smnist", "channel")
    steps, batch = x_seq.shape[:2]
    _, spikes = spikes_by_layer(folded, x)
    graph = to_nir(folded)
    assert all((node.v_reset == 0).all() for node in graph.nodes.values()
               if isinstance(node, nir.LIF))  # what the graph says
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = sinabs.from_nir(graph, batch_size=batch).float()  # it mixes float32 and 64
    neurons = {n: m for n, m in net.named_modules() if isinstance(m, sl.LIFSqueeze)}
    assert sorted(neurons) == ["body_0", "body_2"]
    for layer in neurons.values():  # what Sinabs runs instead: v -= theta * floor(v / theta)
        assert isinstance(layer.reset_fn, sa.MembraneSubtract)
        assert layer.spike_fn is sa.MultiSpike
    records: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: records.__setitem__(n, o.detach()))
             for n, m in neurons.items()]
    with torch.no_grad():  # Squeeze layers take [B * T, ...], batch-major
        net(x_seq.transpose(0, 1).reshape(batch * steps, -1).float())
    for h in hooks:
        h.remove()
    records = {n: r.reshape(batch, steps, -1).transpose(0, 1).double()
               for n, r in records.items()}
    wrong, total = mismatches(spikes, records, lambda n: n.replace(".", "_"))
    assert wrong > 0, "Sinabs now runs mpbn's neurons exactly: add a target for it"
