"""Build an mpbn model from a NIR graph (``from_nir``), to evaluate and analyse it here.

Each NIR node becomes one of mpbn's multi-step layers over ``[T, B, ...]``; a feed-forward graph
then runs layer by layer over the whole sequence, each node's input the sum of its
predecessors' outputs (NIR semantics), so spike recording (``mpbn.layers.record_spikes``) and
``mpbn.spike_mismatch`` work on it as on a zoo model.

The neuron mapping inverts :mod:`mpbn.export.nir_graph`: one Euler step of NIR's ``LIF``
(``v += (dt / tau) (v_leak - v + r I)``) is MPBN Eq. 1 with ``decay = 1 - dt / tau`` and input
``c = (dt / tau) r I``; ``IF`` is ``decay = 1``, ``c = dt r I``. The input gain becomes a
per-element scale in front of the LIF (left out where it is exactly 1). A graph written by
mpbn carries each neuron's exact ``decay`` in ``metadata["mpbn_decay"]`` (``1 - dt / tau``
rounds), and a gain of ``-1`` is the folded ``threshold_sign``, so mpbn -> NIR -> mpbn gives the
same spikes. ``CubaLIF`` is exact only with an instantaneous synapse (``dt / tau_syn = 1``).
Exact only for ``v_leak = 0`` and ``v_reset = 0`` (MPBN's hard reset) and one ``tau`` per layer.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mpbn.export._common import NIRExportError, _nir
from mpbn.layers import LIF, ConvNorm, PerStep

__all__ = ["from_nir", "NIRNet", "Scale"]


class Scale(nn.Module):
    """Multiply every step by a fixed per-element factor (NIR's ``Scale``, a neuron's gain)."""

    def __init__(self, factor: Tensor) -> None:
        super().__init__()
        self.register_buffer("factor", factor)

    def forward(self, x_seq: Tensor) -> Tensor:
        return x_seq * self.factor


class NIRNet(nn.Module):
    """A feed-forward NIR graph as mpbn layers; ``forward(x_seq [T, B, ...])``.

    Returns ``mean_t(output)`` ``[B, ...]`` where the graph's readout is ``mean_over_time``
    (mpbn's classifiers, MPBN Eq. 3), else the output sequence ``[T, B, ...]``.
    """

    def __init__(self, layers: dict[str, nn.Module], order: list[str],
                 preds: dict[str, list[str]], output: str, mean_over_time: bool) -> None:
        super().__init__()
        self.layers = nn.ModuleDict({_key(n): m for n, m in layers.items()})
        self.order, self.preds, self.output = order, preds, output
        self.mean_over_time = mean_over_time

    def forward(self, x_seq: Tensor) -> Tensor:
        out: dict[str, Tensor] = {}
        for name in self.order:
            x = x_seq if not self.preds[name] else sum(out[p] for p in self.preds[name])
            key = _key(name)
            out[name] = self.layers[key](x) if key in self.layers else x
        y = out[self.output]
        return y.mean(0) if self.mean_over_time else y


def _key(name: str) -> str:
    return name.replace(".", "_")


def _arr(a: Any) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _t(a: Any) -> Tensor:
    return torch.as_tensor(_arr(a), dtype=torch.float64)


def _uniform(name: str, what: str, a: np.ndarray) -> float:
    if not np.all(a == a.reshape(-1)[0]):
        raise NIRExportError(f"node '{name}': per-element {what} is not supported by mpbn's LIF "
                             "(one decay per layer)")
    return float(a.reshape(-1)[0])


def _neuron(name: str, node: Any, dt: float, decays: dict[str, float]) -> nn.Module:
    nir = _nir()
    for field in ("v_leak", "v_reset"):
        value = getattr(node, field, None)
        if value is not None and np.any(_arr(value) != 0):
            raise NIRExportError(f"node '{name}' ({type(node).__name__}): {field} != 0 is not "
                                 "exact in mpbn's LIF (leak to 0, hard reset to 0)")
    threshold = _arr(node.v_threshold)
    if isinstance(node, nir.IF):
        decay, gain = 1.0, dt * _arr(node.r)
    elif isinstance(node, nir.CubaLIF):
        if not np.allclose(dt / _arr(node.tau_syn), 1.0, rtol=0, atol=1e-12):
            raise NIRExportError(f"node '{name}' (CubaLIF): a synaptic current (dt / tau_syn != "
                                 "1) is not exact in mpbn's LIF")
        a = dt / _arr(node.tau_mem)
        decay, gain = 1.0 - _uniform(name, "tau_mem", a), a * _arr(node.r) * _arr(node.w_in)
    else:
        a = dt / _arr(node.tau)
        decay, gain = 1.0 - _uniform(name, "tau", a), a * _arr(node.r)
    if name in decays:  # mpbn's own graph: the exact decay, and a gain of +-1 up to rounding
        decay = decays[name]
        rounded = np.sign(gain)
        gain = np.where(np.isclose(gain, rounded, rtol=1e-12, atol=0), rounded, gain)
    lif = LIF(decay=decay, v_threshold=_t(threshold) if threshold.size > 1 else float(threshold),
              reset="hard", backend="reference")
    if np.all(gain == 1.0):
        return lif
    return nn.Sequential(Scale(_t(gain * np.ones(threshold.shape))), lif)


def _layer(name: str, node: Any, dt: float, decays: dict[str, float],
           torch_flatten: bool) -> nn.Module | None:
    nir = _nir()
    if isinstance(node, (nir.Input, nir.Output)):
        return None
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = _t(node.weight)
        lin = nn.Linear(w.shape[1], w.shape[0], bias=isinstance(node, nir.Affine),
                        dtype=torch.float64)
        with torch.no_grad():
            lin.weight.copy_(w)
            if lin.bias is not None:
                lin.bias.copy_(_t(node.bias))
        return ConvNorm(lin)
    if isinstance(node, nir.Conv2d):
        w = _t(node.weight)
        ints = lambda v: tuple(int(i) for i in np.broadcast_to(np.asarray(v), 2))  # noqa: E731
        conv = nn.Conv2d(w.shape[1] * int(node.groups), w.shape[0], tuple(w.shape[2:]),
                         stride=ints(node.stride), padding=ints(node.padding),
                         dilation=ints(node.dilation), groups=int(node.groups),
                         dtype=torch.float64)
        with torch.no_grad():
            conv.weight.copy_(w)
            conv.bias.copy_(_t(node.bias) if node.bias is not None else torch.zeros(w.shape[0]))
        return ConvNorm(conv)
    if isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
        k, s, p = (tuple(int(i) for i in np.broadcast_to(np.asarray(v), 2))
                   for v in (node.kernel_size, node.stride, node.padding))
        pool = PerStep(nn.AvgPool2d(k, s, p))
        if isinstance(node, nir.AvgPool2d):
            return pool
        return nn.Sequential(pool, Scale(torch.tensor(float(k[0] * k[1]), dtype=torch.float64)))
    if isinstance(node, nir.Flatten):
        start, end = int(node.start_dim), int(node.end_dim)
        if not torch_flatten:  # NIR indexes the sample; PerStep sees [T*B, ...]
            start, end = start + 1, end if end < 0 else end + 1
        return PerStep(nn.Flatten(start, end))
    if isinstance(node, nir.Scale):
        return Scale(_t(node.scale))
    if isinstance(node, (nir.LIF, nir.IF, nir.CubaLIF)):
        return _neuron(name, node, dt, decays)
    raise NIRExportError(f"node '{name}' ({type(node).__name__}): not supported by from_nir; "
                         "valid: Input, Output, Affine, Linear, Conv2d, AvgPool2d, SumPool2d, "
                         "Flatten, Scale, LIF, IF, CubaLIF (instantaneous synapse)")


def from_nir(graph: Any, *, dt: float | None = None) -> NIRNet:
    """Build an mpbn model (float64, eval mode) from a feed-forward ``nir.NIRGraph``.

    Args:
        graph: E.g. from :func:`mpbn.export.read_nir`, :func:`mpbn.export.to_nir` or another
            framework's exporter (``snntorch.export_nir.export_to_nir``).
        dt: The Euler step the graph's neurons are meant to be stepped with; default
            ``graph.metadata["dt"]`` (snnTorch's exporter writes none: pass ``dt=1e-4``).

    Raises:
        NIRExportError: A node mpbn cannot run exactly (one line naming it), a cycle, or no dt.
    """
    nir = _nir()
    meta = graph.metadata or {}
    if dt is None:
        dt = float(meta.get("dt", 0) or 0)
        if not dt:
            raise NIRExportError("the graph's metadata has no dt; pass from_nir(graph, dt=...)")
    decays = json.loads(meta["mpbn_decay"]) if "mpbn_decay" in meta else {}
    torch_flatten = meta.get("flatten_convention") == "torch"
    preds: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for src, dst in graph.edges:
        preds[dst].append(src)
    order: list[str] = []
    while len(order) < len(preds):
        ready = [n for n in preds if n not in order and all(p in order for p in preds[n])]
        if not ready:
            raise NIRExportError("from_nir handles feed-forward graphs; this one has a cycle")
        order += ready
    layers = {}
    for name in order:
        layer = _layer(name, graph.nodes[name], dt, decays, torch_flatten)
        if layer is not None:
            layers[name] = layer
    outputs = [n for n in order if isinstance(graph.nodes[n], nir.Output)]
    if len(outputs) != 1:
        raise NIRExportError(f"from_nir needs exactly one Output node, found {len(outputs)}")
    net = NIRNet(layers, order, preds, outputs[0],
                 meta.get("readout", "per_step") == "mean_over_time")
    return net.double().eval()
