"""Rewrite an exported graph into what one NIR importer reads, without changing a spike.

:func:`mpbn.export.to_nir` builds the full-fidelity graph (:mod:`mpbn.export.nir_graph`) and,
for ``target="snntorch"`` or ``"norse"``, hands it to :func:`rewrite`. Every rewrite is an exact
identity of the discrete dynamics (MPBN Eq. 1-2 after folding, Eq. 10 / 13), so the rewritten
graph is still a correct NIR graph (``mpbn.simulate_nir`` and :func:`mpbn.export.from_nir`
give the same spikes on it) *and* the importer's own reading of it is that same network.

The identities
--------------
A neuron ``u[t] = decay u[t-1] + c[t]`` firing where ``u > theta`` (``theta = sign * V~``, the
folded threshold of a neuron that, for ``sign = -1``, runs on the negated potential; reset to 0)
keeps every spike when its potential is scaled by a per-neuron ``k > 0``: ``u' = k u`` obeys the
same recurrence with input ``k c`` and fires where ``u' > k theta``; reset to 0 scales alike.
``c`` is the sum of the neuron's inputs (NIR sums the inputs of a node), each of which is an
affine map, so ``k`` (and the sign, and any input gain ``r``) fold into those maps' output rows
(``W' = g W``, ``b' = g b``, ``g`` per output row or channel). An input that is a spike train
(a residual shortcut) gets a diagonal map (a depthwise 1x1 conv or a diagonal ``Affine``).

snnTorch 1.0.0 (``snntorch.import_from_nir``)
    * one threshold per layer (it asserts ``np.unique(v_threshold).size == 1``): ``k = 1 /
      theta`` per neuron, threshold 1; needs ``theta > 0`` (``+inf``, a neuron that never
      fires, becomes ``k = 0``);
    * it ignores ``r`` and reads ``beta = 1 - dt / tau`` with ``dt = 1e-4`` fixed: ``tau`` is
      chosen so that this float64 expression is exactly ``decay``, ``r = tau / dt`` (its
      ``w_scale = r dt / tau`` check then passes), and the graph's ``dt`` is ``1e-4``;
    * it maps ``IF`` to ``Leaky(beta=0.9)``: a neuron without leak is written as an ``LIF``
      whose ``beta`` rounds to exactly 1;
    * its ``Flatten`` is ``torch.nn.Flatten(start_dim, end_dim)`` on ``[B, ...]``: written as
      ``start_dim = 1`` (NIR's own convention, used by ``target="nir"``, excludes the batch);
    * integer pool parameters (``avg_pool2d`` rejects float arrays).
Norse 1.1.0 (``norse.torch.from_nir``, its default ``dt = 1e-3``; pass ``dt=graph.metadata['dt']``)
    * per-element thresholds work as they are (``v_th`` is a tensor), any sign;
    * it ignores ``r``: ``LIFBox`` steps ``v += dt / tau (I - v)``, so ``r = 1`` is written and
      ``sign / (1 - decay)`` folds into the weights; ``tau`` is chosen so that Norse's float32
      ``dt * (1 / tau)`` is exactly ``float32(1 - decay)``. ``IAF`` adds its input (``r = 1 /
      dt`` is written, faithful to NIR, and Norse logs that it ignores it);
    * it has no ``AvgPool2d``: pools become ``SumPool2d`` (Norse's ``LPPool2d(1)``) and the
      ``1 / (kh kw)`` folds into the next weight layer;
    * ``Flatten`` and integer pool parameters as for snnTorch;
    * its loader (``nirtorch.load``) passes a node only one of its inputs, so residual models
      (a node summing two inputs) are refused for this target.

Neither importer has per-position weights, so a per-element gain on a conv output
(element-wise MPBN for snnTorch; element-wise MPBN with negative scales for Norse) unrolls the
graph's convs and pools into dense ``Affine`` layers on the flattened sample (exact: the same
sums); above :data:`MAX_DENSE_ENTRIES` weights per layer that is an error instead.

Not expressible for a target (one-line :class:`~mpbn.export.nir_graph.NIRExportError` naming
the layer, before anything is written): a non-positive folded threshold (snnTorch), a node the
importer lacks, a weight layer that feeds several nodes or sums several pools. Time-varying norms
(BNTT, TEBN), soft reset and unfolded MPBN are already refused by the generic exporter.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mpbn.export._common import NIRExportError, _nir

_GraphBuilder = Any  # mpbn.export.nir_graph._GraphBuilder (which imports this module)

__all__ = ["rewrite", "target_dt", "TARGET_METADATA", "MAX_DENSE_ENTRIES", "SNNTORCH_DT",
           "NORSE_DT"]

#: The time step snnTorch 1.0.0's importer hard-codes for every LIF (``import_nir.py``).
SNNTORCH_DT = 1e-4
#: Norse 1.1.0's ``from_nir`` default time step.
NORSE_DT = 1e-3
#: Largest dense weight matrix (entries) a conv is unrolled into for a per-element gain.
MAX_DENSE_ENTRIES = 1 << 24

TARGET_METADATA: dict[str, dict[str, Any]] = {
    "snntorch": {"flatten_convention": "torch", "importer": "snntorch.import_from_nir (1.0.0)"},
    "norse": {"flatten_convention": "torch",
              "importer": "norse.torch.from_nir(graph, dt=graph.metadata['dt']) (1.1.0)"},
}


def target_dt(target: str, dt: float | None) -> float:
    """The ``dt`` a target's graph is written with (the importer's convention)."""
    if target == "snntorch":
        if dt is not None and dt != SNNTORCH_DT:
            raise NIRExportError(f"target 'snntorch': its importer steps every LIF with dt = "
                                 f"{SNNTORCH_DT:g}; got dt={dt:g} (leave dt unset)")
        return SNNTORCH_DT
    if target == "norse":
        return NORSE_DT if dt is None else float(dt)
    return 1e-3 if dt is None else float(dt)


def _neighbours(x: float, n: int, dtype: type) -> list:
    out, lo, hi = [dtype(x)], dtype(x), dtype(x)
    for _ in range(n):
        lo, hi = np.nextafter(lo, dtype(-np.inf)), np.nextafter(hi, dtype(np.inf))
        out += [lo, hi]
    return out


def _snntorch_tau(decay: float) -> float:
    """A ``tau`` whose ``1 - 1e-4 / tau`` (snnTorch's ``beta``, float64) is exactly ``decay``."""
    if decay >= 1.0:
        return SNNTORCH_DT * 2.0 ** 60  # 1 - 2**-60 rounds to 1.0: no leak (IF)
    for tau in _neighbours(SNNTORCH_DT / (1.0 - decay), 256, np.float64):
        if 1.0 - SNNTORCH_DT / tau == decay:
            return float(tau)
    raise NIRExportError(f"target 'snntorch': no tau gives beta = {decay!r} exactly with "
                         f"dt = {SNNTORCH_DT:g}")


def _norse_tau(decay: float, dt: float) -> float:
    """A ``tau`` whose Norse step factor ``dt * (1 / float32(tau))`` is ``float32(1 - decay)``.

    Norse converts parameters to float32 (``_to_tensor``) and computes ``1 / tau``, then
    ``dt * tau_mem_inv``; the nearest ``tau`` need not round back, so neighbours are tried.
    """
    leak = torch.tensor(1.0 - decay, dtype=torch.float32)
    for inv in _neighbours(float(leak) / dt, 64, np.float32):
        if not torch.equal(dt * torch.tensor(inv), leak):
            continue
        for tau in _neighbours(1.0 / float(inv), 8, np.float32):
            if torch.equal(1 / torch.tensor(tau), torch.tensor(inv)):
                return float(tau)
    return dt / (1.0 - decay)


def _preds(b: _GraphBuilder, name: str) -> list[str]:
    return [s for s, d in b.edges if d == name]


def _succs(b: _GraphBuilder, name: str) -> list[str]:
    return [d for s, d in b.edges if s == name]


def _kind(node: Any) -> str:
    return type(node).__name__


def _check_thresholds(b: _GraphBuilder) -> None:
    for name, spec in b.neurons.items():
        bad = ~((spec.threshold > 0) | np.isposinf(spec.threshold))
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise NIRExportError(
                f"layer '{name}': folded threshold sign*V~ = {spec.threshold[where]:.4g} <= 0 at "
                f"{where}; target 'snntorch' needs one positive threshold per layer (inputs are "
                "scaled by 1/threshold), use target='nir' or 'norse'")


def _gain(b: _GraphBuilder, name: str, target: str) -> np.ndarray:
    """The per-neuron factor folded into the neuron's inputs (module docstring)."""
    spec = b.neurons[name]
    if target == "snntorch":
        k = np.where(np.isposinf(spec.threshold), 0.0, 1.0 / spec.threshold)
        return k * spec.sign
    return spec.sign / (1.0 - spec.decay) if spec.decay < 1.0 else spec.sign


def _per_channel(gain: np.ndarray) -> np.ndarray | None:
    """``gain`` ``[C, H, W]`` as ``[C]`` where it is constant over space, else ``None``."""
    flat = gain.reshape(gain.shape[0], -1)
    return flat[:, 0].copy() if (flat == flat[:, :1]).all() else None


def _needs_dense(b: _GraphBuilder, gains: dict[str, np.ndarray]) -> str | None:
    for name, gain in gains.items():
        if gain.ndim > 1 and _per_channel(gain) is None:
            return name
    return None


def _dense_of(name: str, fn: Any, in_shape: tuple, out_shape: tuple) -> tuple[np.ndarray, int]:
    n_in, n_out = int(np.prod(in_shape)), int(np.prod(out_shape))
    if n_in * n_out > MAX_DENSE_ENTRIES:
        raise NIRExportError(
            f"layer '{name}': a per-element gain needs this layer unrolled into a dense "
            f"{n_out}x{n_in} Affine (over {MAX_DENSE_ENTRIES} weights); use channel-wise MPBN "
            "or target='nir' for a model this size")
    eye = torch.eye(n_in, dtype=torch.float64).view(n_in, *in_shape)
    return fn(eye).reshape(n_in, n_out).T.numpy().copy(), n_out


def _densify(b: _GraphBuilder) -> None:
    """Unroll every conv and pool into a dense ``Affine`` on the flattened sample (exact)."""
    nir = _nir()
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
    shapes = dict(b.out_shapes)  # per-step shapes before flattening
    for name in list(b.nodes):
        node = b.nodes[name]
        in_shape = shapes[_preds(b, name)[0]] if _preds(b, name) else None
        if isinstance(node, nir.Conv2d):
            fn = lambda x, n=node: F.conv2d(x, t(n.weight), None, tuple(_i(n.stride)),  # noqa
                                            tuple(_i(n.padding)), tuple(_i(n.dilation)),
                                            int(n.groups))
            weight, _ = _dense_of(name, fn, in_shape, shapes[name])
            hw = int(np.prod(shapes[name][1:]))
            b.nodes[name] = nir.Affine(weight=weight, bias=np.repeat(np.asarray(node.bias), hw))
        elif isinstance(node, nir.AvgPool2d):
            fn = lambda x, n=node: F.avg_pool2d(x, tuple(_i(n.kernel_size)),  # noqa: E731
                                                tuple(_i(n.stride)), tuple(_i(n.padding)))
            weight, n_out = _dense_of(name, fn, in_shape, shapes[name])
            b.nodes[name] = nir.Affine(weight=weight, bias=np.zeros(n_out))
        elif isinstance(node, nir.Flatten):
            _remove(b, name)
            continue
        if name in b.neurons:
            spec = b.neurons[name]
            spec.threshold, spec.sign = spec.threshold.reshape(-1), spec.sign.reshape(-1)
        if name != "input":
            b.out_shapes[name] = (int(np.prod(b.out_shapes[name])),)
    shape = b.out_shapes["input"]
    if len(shape) > 1:
        _insert_after(b, "input", "input.flatten",
                      nir.Flatten(input_type={"input": np.array(shape)}, start_dim=1),
                      (int(np.prod(shape)),))
    b.nodes["output"] = nir.Output(output_type={"output": np.array(b.out_shapes["output"])})


def _i(v: Any) -> np.ndarray:
    return np.broadcast_to(np.asarray(v, dtype=np.int64), 2)


def _remove(b: _GraphBuilder, name: str) -> None:
    preds, succs = _preds(b, name), _succs(b, name)
    b.edges = [e for e in b.edges if name not in e] + [(p, s) for p in preds for s in succs]
    del b.nodes[name], b.out_shapes[name]


def _insert_after(b: _GraphBuilder, src: str, name: str, node: Any, shape: tuple) -> None:
    b.edges = [(name if s == src else s, d) for s, d in b.edges] + [(src, name)]
    b.nodes[name], b.out_shapes[name] = node, shape


def _scale_rows(name: str, node: Any, gain: np.ndarray) -> Any:
    """``node`` with output row/channel ``i`` multiplied by ``gain[i]`` (weight and bias)."""
    nir = _nir()
    if isinstance(node, nir.Affine):
        return nir.Affine(weight=node.weight * gain[:, None], bias=node.bias * gain)
    if isinstance(node, nir.Conv2d):
        return nir.Conv2d(input_shape=node.input_shape, weight=node.weight * gain[:, None, None,
                                                                                    None],
                          stride=node.stride, padding=node.padding, dilation=node.dilation,
                          groups=node.groups, bias=node.bias * gain)
    raise NIRExportError(f"layer '{name}' ({_kind(node)}): cannot take a neuron's input gain")


def _diagonal(gain: np.ndarray, shape: tuple) -> Any:
    nir = _nir()
    if len(shape) == 1:
        return nir.Affine(weight=np.diag(gain), bias=np.zeros(gain.shape))
    # A full 1x1 conv, not a depthwise one: both importers build Conv2d with in_channels =
    # weight.shape[1], which a grouped weight breaks. The zero products add exactly.
    return nir.Conv2d(input_shape=tuple(shape[1:]), weight=np.diag(gain)[:, :, None, None],
                      stride=np.ones(2, dtype=np.int64), padding=np.zeros(2, dtype=np.int64),
                      dilation=np.ones(2, dtype=np.int64), groups=1, bias=np.zeros(gain.shape))


def _fold_gain(b: _GraphBuilder, name: str, gain: np.ndarray) -> None:
    """Multiply neuron ``name``'s input by ``gain`` (per element) inside its input maps."""
    rows = gain if gain.ndim == 1 else _per_channel(gain)
    if np.all(rows == 1.0):
        return
    for src in _preds(b, name):
        node = b.nodes[src]
        if src in b.neurons or _kind(node) not in ("Affine", "Conv2d") or len(_succs(b, src)) > 1:
            # a spike input (residual shortcut) or a map shared with other nodes: a diagonal map
            scale = f"{name}.input_gain.{src}"
            b.nodes[scale] = _diagonal(rows, b.out_shapes[src])
            b.out_shapes[scale] = b.out_shapes[src]
            b.edges = [(scale, d) if (s, d) == (src, name) else (s, d) for s, d in b.edges]
            b.edges.append((src, scale))
        else:
            b.nodes[src] = _scale_rows(src, node, rows)


def _pools_to_sum(b: _GraphBuilder) -> None:
    """Norse has no AvgPool2d: ``avg = sum / (kh kw)``, the division folded into what follows."""
    nir = _nir()
    for name in [n for n, node in b.nodes.items() if isinstance(node, nir.AvgPool2d)]:
        node = b.nodes[name]
        k, stride = _i(node.kernel_size), _i(node.stride)
        if np.asarray(node.padding).any():
            raise NIRExportError(f"layer '{name}': padded pooling has no Norse mapping")
        b.nodes[name] = nir.SumPool2d(kernel_size=k.copy(), stride=stride.copy(),
                                      padding=np.zeros(2, dtype=np.int64))
        area = float(k[0] * k[1])
        targets = _succs(b, name)
        while targets:
            succ = targets.pop()
            succ_node = b.nodes[succ]
            if isinstance(succ_node, nir.Flatten):
                targets += _succs(b, succ)
                continue
            if not isinstance(succ_node, (nir.Affine, nir.Conv2d)) or len(_preds(b, succ)) > 1:
                # e.g. a residual shortcut straight from the pool: a depthwise 1x1 conv divides
                shape = b.out_shapes[name]
                scale = f"{succ}.input_gain.{name}"
                b.nodes[scale] = _diagonal(np.full(shape[0], 1.0 / area), shape)
                b.out_shapes[scale] = shape
                b.edges = [(scale, d) if (s, d) == (name, succ) else (s, d) for s, d in b.edges]
                b.edges.append((name, scale))
                continue
            cls = type(succ_node)
            kwargs = {k: getattr(succ_node, k) for k in ("input_shape", "stride", "padding",
                                                          "dilation", "groups")
                      if cls is nir.Conv2d}
            b.nodes[succ] = cls(weight=succ_node.weight / area, bias=succ_node.bias, **kwargs)


def _torch_flatten(b: _GraphBuilder) -> None:
    """Both importers build ``torch.nn.Flatten(start_dim, end_dim)`` and run it on ``[B, ...]``."""
    nir = _nir()
    for name, node in list(b.nodes.items()):
        if isinstance(node, nir.Flatten):
            b.nodes[name] = nir.Flatten(input_type=node.input_type, start_dim=1, end_dim=-1)


def _neuron_nodes(b: _GraphBuilder, target: str) -> None:
    nir = _nir()
    for name, spec in b.neurons.items():
        shape = spec.threshold.shape
        zeros, ones = np.zeros(shape), np.ones(shape)
        if target == "snntorch":
            tau = np.full(shape, _snntorch_tau(spec.decay))
            spec.threshold = ones
            b.nodes[name] = nir.LIF(tau=tau, r=tau / SNNTORCH_DT, v_leak=zeros,
                                    v_threshold=ones, v_reset=zeros)
        elif spec.decay >= 1.0:
            b.nodes[name] = nir.IF(r=ones / b.dt, v_threshold=spec.threshold, v_reset=zeros)
        else:
            b.nodes[name] = nir.LIF(tau=np.full(shape, _norse_tau(spec.decay, b.dt)), r=ones,
                                    v_leak=zeros, v_threshold=spec.threshold, v_reset=zeros)
        spec.sign = ones


_SUPPORTED = {"snntorch": ("Input", "Output", "Affine", "Conv2d", "Flatten", "AvgPool2d", "LIF",
                           "IF"),
              "norse": ("Input", "Output", "Affine", "Conv2d", "Flatten", "AvgPool2d", "LIF",
                        "IF")}


def rewrite(b: _GraphBuilder, target: str) -> None:
    """Rewrite the builder's graph in place for ``target`` (module docstring); checks first."""
    for name, node in b.nodes.items():
        if _kind(node) not in _SUPPORTED[target]:
            raise NIRExportError(f"layer '{name}' ({_kind(node)}): target {target!r} has no "
                                 f"mapping; valid nodes: {', '.join(_SUPPORTED[target])}")
    if target == "snntorch":
        _check_thresholds(b)
    if target == "norse":
        merged = next((n for n in b.nodes if len(_preds(b, n)) > 1), None)
        if merged is not None:
            raise NIRExportError(
                f"layer '{merged}': Norse 1.1.0's loader (nirtorch.load) feeds a node only one "
                "of its inputs, so this residual sum would be lost (measured: wrong spikes); "
                "use target='snntorch' or 'nir' for residual models")
    gains = {name: _gain(b, name, target) for name in b.neurons}
    if _needs_dense(b, gains) is not None:
        _densify(b)
        gains = {name: g.reshape(-1) for name, g in gains.items()}
    if target == "norse":
        _pools_to_sum(b)
    for name, gain in gains.items():
        _fold_gain(b, name, gain)
    _neuron_nodes(b, target)
    _torch_flatten(b)
    _topological_nodes(b)


def _topological_nodes(b: _GraphBuilder) -> None:
    """Order the node dictionary so that every node follows its inputs: Norse's loader
    (``nirtorch.load``) runs nodes in dictionary order, so an inserted gain node must not trail."""
    order: list[str] = []
    pending = list(b.nodes)
    while pending:
        ready = next(n for n in pending if all(p in order for p in _preds(b, n)))
        order.append(ready)
        pending.remove(ready)
    b.nodes = {n: b.nodes[n] for n in order}
