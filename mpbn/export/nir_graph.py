"""Export folded zoo models to NIR (Neuromorphic Intermediate Representation), and read them back.

Mapping of the discrete LIF onto NIR
------------------------------------
Our neuron is discrete (MPBN Eq. 1-2): ``u_pre[t] = decay * u[t-1] + c[t]``, fire where
``u_pre[t] > V_th``, then hard reset ``u[t] = 0``. NIR's ``LIF`` is a continuous ODE,
``tau dv/dt = (v_leak - v) + r I``; nir 1.0 has no discrete-time neuron node. One forward-Euler
step of length ``dt`` gives::

    v[t] = v[t-1] + (dt / tau) * (v_leak - v[t-1] + r * I[t])

which equals the discrete LIF exactly when::

    tau = dt / (1 - decay),   r = 1 / (1 - decay),   v_leak = 0,   v_reset = 0

(``dt / tau = 1 - decay`` and ``(dt / tau) * r = 1``). ``v_threshold`` is the folded per-element
threshold ``V~`` (MPBN Eq. 10 / 13), broadcast to the neuron's shape. A neuron without leak
(``decay = 1``) maps to ``nir.IF`` with ``r = 1 / dt`` (``v[t] = v[t-1] + dt * r * I[t]``).
Simulators must therefore step the graph with the same ``dt`` (stored in the graph's metadata and
passed to :func:`simulate_nir`), integrate before thresholding, and fire on ``v > v_threshold``.

Not expressible in NIR (the exporter stops with a one-line error naming the layer):

- an unfolded MPBN neuron (call :func:`mpbn.fold` first: MPBN folds into the threshold);
- soft reset (subtract the threshold; NIR resets to ``v_reset``), i.e. BNTT-style neurons;
- any norm left after folding: BNTT and TEBN (per-step parameters), LayerNorm (per-sample
  statistics), and a BN that does not directly follow a conv/linear layer (e.g. average pooling
  followed by BN): NIR has no normalization node;
- padded average pooling (the ImageNet ResNets' 3x3/2 stem pooling: NIR does not say whether
  padding counts in the average) and ceil-mode pooling whose windows do not tile the input.

A folded neuron with a negative MPBN scale fires *below* its threshold (``threshold_sign = -1``:
``u < V~``). It exports exactly as the same LIF on the negated potential: ``r`` and
``v_threshold`` are multiplied by the sign per element, so NIR's ``v = -u`` (reset to 0 is the
same for both) fires where ``-u > -V~``. Negation is exact in floating point, so the spikes do
not change.

Residual blocks export as a graph: the second conv and the shortcut both feed the block's second
LIF, and NIR sums a node's inputs, which is the residual addition.

The integrating classifier (MPBN Eq. 3, ``o_out = mean_t(W x_t + b)``) is exported as the
``Affine`` layer feeding the graph's ``Output``; the average over time is not a NIR node (it
depends on ``T``), so the graph's metadata says ``readout = "mean_over_time"`` and
:func:`simulate_nir` applies it. Direct encoding means the graph's input is the analog image at
every step; Poisson-encoded models take the spike train as input.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mpbn.export._common import NIRExportError, _nir
from mpbn.layers import LIF, ConvNorm, DirectEncoding, IntegratingClassifier, PerStep, SeqNorm
from mpbn.models import BasicBlock, SpikingNet

__all__ = ["to_nir", "simulate_nir", "write_nir", "read_nir", "NIRExportError", "TARGETS",
           "NeuronSpec", "build_graph"]


def _np(t: Tensor | float) -> np.ndarray:
    if isinstance(t, Tensor):
        return t.detach().cpu().double().numpy()
    return np.asarray(t, dtype=np.float64)


def _step_shapes(model: nn.Module, input_shape: tuple) -> dict[str, tuple]:
    """Per-step output shape of every submodule, from one dummy step (no batch, no time)."""
    shapes: dict[str, tuple] = {}
    inside_head = {n for n, m in model.named_modules() if isinstance(m, IntegratingClassifier)}
    def keep(name: str, out: Any) -> None:
        if isinstance(out, Tensor):
            shapes[name] = out.shape[2:]

    hooks = [m.register_forward_hook(lambda m, i, o, n=n: keep(n, o))
             for n, m in model.named_modules()
             if n and not any(n == h or n.startswith(h + ".") for h in inside_head)]
    param = next(model.parameters())
    x = torch.zeros(1, 1, *input_shape, dtype=param.dtype)
    try:
        with torch.no_grad():
            if isinstance(model, SpikingNet):
                model.body(model.stem(x))
            else:
                model(x)
    finally:
        for h in hooks:
            h.remove()
    return {k: tuple(v) for k, v in shapes.items()}


@dataclass
class NeuronSpec:
    """What a target rewrite needs of an exported neuron, exactly (NIR keeps only tau, r).

    ``threshold`` is the NIR threshold ``sign * V~`` per element, ``sign`` the folded
    ``threshold_sign`` per element (+1 or -1), ``decay`` the discrete leak of MPBN Eq. 1.
    """

    decay: float
    threshold: np.ndarray
    sign: np.ndarray


def _neuron_spec(name: str, lif: LIF, shape: tuple) -> NeuronSpec:
    if lif.membrane_norm is not None:
        raise NIRExportError(
            f"layer '{name}': unfolded MPBN cannot be expressed in NIR; export mpbn.fold(model)"
        )
    if lif.reset != "hard":
        raise NIRExportError(
            f"layer '{name}': soft reset (subtract the threshold) cannot be expressed in NIR, "
            "whose neurons reset to v_reset"
        )
    ones = np.ones(shape)
    # sign = -1 (fire below V~) runs the neuron on -u: r and the threshold flip (module docs).
    sign = _per_element(lif.threshold_sign, shape) if lif.threshold_sign is not None else ones
    return NeuronSpec(float(lif.decay), sign * _per_element(lif.v_threshold, shape), sign)


def _neuron_node(spec: NeuronSpec, dt: float) -> Any:
    nir = _nir()
    zeros = np.zeros(spec.threshold.shape)
    if spec.decay >= 1.0:
        return nir.IF(r=spec.sign / dt, v_threshold=spec.threshold, v_reset=zeros)
    leak = 1.0 - spec.decay
    return nir.LIF(tau=np.full(zeros.shape, dt / leak), r=spec.sign / leak, v_leak=zeros,
                   v_threshold=spec.threshold, v_reset=zeros)


def _per_element(value: Tensor | float, shape: tuple) -> np.ndarray:
    """A scalar, per-channel ``[C]`` or per-element neuron parameter as an array of ``shape``."""
    if isinstance(value, Tensor) and value.dim() == 1 and len(shape) > 1:
        value = value.view(-1, *([1] * (len(shape) - 1)))
    return _np(value) * np.ones(shape)


def _weight_node(name: str, conv: nn.Module, in_shape: tuple) -> Any:
    nir = _nir()
    bias = conv.bias if conv.bias is not None else torch.zeros(conv.weight.shape[0])
    if isinstance(conv, nn.Linear):
        return nir.Affine(weight=_np(conv.weight), bias=_np(bias))
    if not isinstance(conv, nn.Conv2d) or conv.padding_mode != "zeros":
        raise NIRExportError(f"layer '{name}' ({type(conv).__name__}): not supported; valid: "
                             "nn.Linear, nn.Conv2d with zero padding")
    if isinstance(conv.padding, str):
        raise NIRExportError(f"layer '{name}': padding={conv.padding!r}; give integer padding")
    return nir.Conv2d(input_shape=tuple(int(d) for d in in_shape[1:]), weight=_np(conv.weight),
                      stride=_ints(conv.stride), padding=_ints(conv.padding),
                      dilation=_ints(conv.dilation), groups=int(conv.groups), bias=_np(bias))


def _conv_norm_node(name: str, module: ConvNorm, in_shape: tuple) -> Any:
    if not isinstance(module.norm, nn.Identity):
        kind = type(module.norm).__name__
        folds = isinstance(module.norm, SeqNorm) and module.norm.folds_into_weights
        why = ("fold the model first (mpbn.fold)" if folds
               else "NIR has no normalization node, and this one cannot fold into weights")
        raise NIRExportError(f"layer '{name}.norm' ({kind}): {why}")
    return _weight_node(f"{name}.conv", module.conv, in_shape)


def _ints(value: Any) -> np.ndarray:
    """A pair of integer pool/conv parameters (NIR readers pass them on to torch, which needs
    integers: ``np.zeros(2)`` as padding crashes ``avg_pool2d``)."""
    return np.broadcast_to(np.asarray(value, dtype=np.int64), 2).copy()


def _global_pool(shape: tuple) -> Any:
    k = _ints(shape[1:])
    return _nir().AvgPool2d(kernel_size=k, stride=k.copy(), padding=np.zeros(2, dtype=np.int64))


def _pool_node(name: str, pool: nn.Module, in_shape: tuple) -> Any:
    nir = _nir()
    if isinstance(pool, nn.AdaptiveAvgPool2d):
        if tuple(np.broadcast_to(pool.output_size, 2)) != (1, 1):
            raise NIRExportError(f"layer '{name}': adaptive pooling is supported only to 1x1")
        return _global_pool(in_shape)
    stride = pool.kernel_size if pool.stride is None else pool.stride
    k, s, p = (_ints(v) for v in (pool.kernel_size, stride, pool.padding))
    # ceil_mode changes nothing when the windows tile the input exactly (the ResNet20 shortcut
    # on even sizes); otherwise NIR's pooling (floor, zero padding counted) cannot express it.
    tiles = all((d - kk) % ss == 0 for d, kk, ss in zip(in_shape[1:], k, s, strict=True))
    if p.any() or (pool.ceil_mode and not tiles):
        raise NIRExportError(f"layer '{name}': padded or ceil-mode average pooling")
    return nir.AvgPool2d(kernel_size=k, stride=s, padding=p)


def _flatten_node(shape: tuple) -> Any:
    # NIR's Flatten indexes the per-sample shape (no batch dimension): start_dim 0 flattens
    # all of it, which is what the per-step flatten of our [T, B, ...] models does.
    return _nir().Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1)


#: Layers the exporter walks, for the error that names what is not among them.
SUPPORTED_LAYERS = ("ConvNorm (folded), LIF (folded, hard reset), PerStep(Conv2d | Linear | "
                    "Flatten | AvgPool2d | AdaptiveAvgPool2d(1)), nn.Linear, nn.Flatten(2), "
                    "nn.Identity, nn.Dropout, nn.Sequential, BasicBlock, IntegratingClassifier")


class _GraphBuilder:
    """Collects NIR nodes and edges while walking a model; ``emit`` returns the last node.

    Besides the nodes it keeps what a target rewrite (:mod:`mpbn.export.targets`) needs
    exactly: each node's per-step output shape and each neuron's :class:`NeuronSpec`.
    """

    def __init__(self, shapes: dict[str, tuple], dt: float) -> None:
        self.nodes: dict[str, Any] = {}
        self.edges: list[tuple[str, str]] = []
        self.shapes = shapes
        self.out_shapes: dict[str, tuple] = {}
        self.neurons: dict[str, NeuronSpec] = {}
        self.dt = dt
        self.readout = "per_step"

    def add(self, name: str, node: Any, sources: list[str], shape: tuple) -> str:
        self.nodes[name] = node
        self.out_shapes[name] = tuple(int(d) for d in shape)
        self.edges += [(src, name) for src in sources]
        return name

    def neuron(self, name: str, lif: LIF, sources: list[str], shape: tuple) -> str:
        spec = _neuron_spec(name, lif, shape)
        self.neurons[name] = spec
        return self.add(name, _neuron_node(spec, self.dt), sources, shape)

    def _out(self, name: str, fallback: tuple) -> tuple:
        return self.shapes.get(name, fallback)

    def emit(self, name: str, module: nn.Module, src: str, shape: tuple) -> tuple[str, tuple]:
        inner = module.module if isinstance(module, PerStep) else None
        if isinstance(module, ConvNorm):
            node = _conv_norm_node(name, module, shape)
        elif isinstance(module, LIF):
            return self.neuron(name, module, [src], shape), shape
        elif isinstance(module, nn.Linear) or isinstance(inner, (nn.Linear, nn.Conv2d)):
            node = _weight_node(name, inner if inner is not None else module, shape)
        elif isinstance(inner, nn.Flatten) or isinstance(module, nn.Flatten):
            start = inner.start_dim if inner is not None else module.start_dim - 1
            end = inner.end_dim if inner is not None else module.end_dim
            if start != 1 or end != -1:
                raise NIRExportError(f"layer '{name}': only a flatten of the whole sample is "
                                     "supported (PerStep(nn.Flatten()) or nn.Flatten(2) on "
                                     "[T, B, ...])")
            node = _flatten_node(shape)
        elif isinstance(inner, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            node = _pool_node(name, inner, shape)
        elif isinstance(module, (nn.Identity, nn.Dropout)) or isinstance(inner, (nn.Identity,
                                                                                 nn.Dropout)):
            return src, shape  # identity in eval mode
        elif isinstance(module, nn.Sequential):
            for child_name, child in module.named_children():
                src, shape = self.emit(f"{name}.{child_name}" if name else child_name, child,
                                       src, shape)
            return src, shape
        elif isinstance(module, BasicBlock):
            # NIR sums the inputs of a node: conv2 + shortcut both feed the block's second LIF,
            # which is the residual addition followed by firing (MPBN's "original ResNet").
            out, out_shape = src, shape
            for child in ("conv1", "lif1", "conv2"):
                out, out_shape = self.emit(f"{name}.{child}", getattr(module, child), out,
                                           out_shape)
            short = src
            if module.shortcut is not None:
                short, _ = self.emit(f"{name}.shortcut", module.shortcut, src, shape)
            return self.neuron(f"{name}.lif2", module.lif2, [out, short], out_shape), out_shape
        elif isinstance(module, IntegratingClassifier):
            return self.emit_head(name, module, src, shape)
        elif isinstance(module, SeqNorm):
            raise NIRExportError(f"layer '{name}' ({type(module).__name__}): NIR has no norm node")
        else:
            kind = (f"PerStep({type(inner).__name__})" if inner is not None
                    else type(module).__name__)
            raise NIRExportError(f"layer '{name}' ({kind}): not supported; valid: "
                                 f"{SUPPORTED_LAYERS}")
        out_shape = self._out(name, shape)
        return self.add(name, node, [src], out_shape), out_shape

    def emit_head(self, name: str, head: IntegratingClassifier, src: str,
                  shape: tuple) -> tuple[str, tuple]:
        nir = _nir()
        if head.pool == "avg" and len(shape) == 3:
            src = self.add(f"{name}.pool", _global_pool(shape), [src], (shape[0], 1, 1))
            shape = (shape[0], 1, 1)
        if len(shape) > 1:
            flat = (int(np.prod(shape)),)
            src = self.add(f"{name}.flatten", _flatten_node(shape), [src], flat)
            shape = flat
        lin = head.linear
        bias = lin.bias if lin.bias is not None else torch.zeros(lin.out_features)
        src = self.add(f"{name}.linear", nir.Affine(weight=_np(lin.weight), bias=_np(bias)),
                       [src], (lin.out_features,))
        self.readout = "mean_over_time"
        return src, (lin.out_features,)


def build_graph(model: nn.Module, dt: float, input_shape: tuple | None = None) -> _GraphBuilder:
    """Walk ``model`` into a :class:`_GraphBuilder` (nodes, edges, shapes, neuron specs)."""
    nir = _nir()
    if isinstance(model, SpikingNet):
        shape = tuple(model.input_shape)
        children = [("stem", model.stem), *((f"body.{n}", m)
                                            for n, m in model.body.named_children()),
                    ("head", model.head)]
    else:
        if input_shape is None:
            raise NIRExportError(
                f"to_nir needs input_shape= (the per-step sample shape, without T and B) for a "
                f"{type(model).__name__} that is not from mpbn.models")
        shape = tuple(int(d) for d in input_shape)
        model = _after_direct_encoding(model)
        children = [("", model)]
    builder = _GraphBuilder(_step_shapes(model, shape), dt)
    src = builder.add("input", nir.Input(input_type={"input": np.array(shape)}), [], shape)
    for name, module in children:
        src, shape = builder.emit(name, module, src, shape)
    builder.add("output", nir.Output(output_type={"output": np.array(shape)}), [src], shape)
    return builder


def _after_direct_encoding(model: nn.Module) -> nn.Module:
    """A model of one's own without its leading :class:`~mpbn.layers.DirectEncoding`: the
    graph's input is then the image at every step, as for the zoo's direct encoding."""
    if isinstance(model, nn.Sequential) and len(model) and isinstance(model[0], DirectEncoding):
        return model[1:]
    return model


#: Export targets of :func:`to_nir`: the full-fidelity graph and the importers it is tested with.
TARGETS = ("nir", "snntorch", "norse")


def to_nir(model: nn.Module, target: str = "nir", *, dt: float | None = None,
           input_shape: tuple | None = None,
           preprocessing: dict[str, Any] | None = None) -> Any:
    """Export a folded model (feed-forward or spiking ResNet) to a ``nir.NIRGraph``.

    Args:
        model: A folded model (``mpbn.fold(model)``): one from :func:`mpbn.models.create`, or
            a model of one's own built from mpbn's multi-step layers (``ConvNorm``,
            ``PerStep``, ``LIF``, ``IntegratingClassifier``, nested ``nn.Sequential``) on
            ``[T, B, ...]``, optionally led by a ``DirectEncoding`` (skipped: the graph's input
            is the sample at every step); such a model needs ``input_shape``.
        target: ``"nir"`` (default): the graph as NIR defines it, every parameter exact.
            ``"snntorch"`` / ``"norse"``: the same spikes rewritten into what that importer
            reads (:mod:`mpbn.export.targets`; snnTorch 1.0.0, Norse 1.1.0).
        dt: The time step the discrete LIF is mapped with (``tau = dt / (1 - decay)``,
            ``r = 1 / (1 - decay)``); default ``1e-3``. snnTorch's importer fixes ``1e-4``.
        input_shape: The per-step sample shape (``[C, H, W]`` or ``[F]``) of a model that is
            not from :mod:`mpbn.models`.
        preprocessing: How raw samples become the input
            (:func:`mpbn.engine.deploy.preprocessing`: pixel scale, mean/std, encoding, T,
            dataset and class names), stored in the metadata as a JSON string under
            ``"preprocessing"`` (HDF5 attributes hold no nested or null values), with
            ``dataset``, ``mean`` and ``std`` also as plain entries where known.

    Raises:
        NIRExportError: A layer NIR or the target cannot express (one line naming it), raised
            before anything is returned or written.
    """
    from mpbn.export import targets

    nir = _nir()
    if target not in TARGETS:
        raise NIRExportError(f"unknown NIR target {target!r}; valid: {', '.join(TARGETS)}")
    dt = targets.target_dt(target, dt)
    builder = build_graph(model, dt, input_shape)
    metadata: dict[str, Any] = {"dt": float(dt), "readout": builder.readout, "producer": "mpbn",
                                "target": target}
    if isinstance(model, SpikingNet):
        metadata.update(encoding=model.encoding, timesteps=int(model.timesteps))
    elif _after_direct_encoding(model) is not model:
        metadata.update(encoding="direct", timesteps=int(model[0].timesteps))
    if target != "nir":
        targets.rewrite(builder, target)
        metadata.update(targets.TARGET_METADATA[target])
    # The exact discrete leak of every neuron: 1 - dt / tau rounds, and from_nir reads this back.
    metadata["mpbn_decay"] = json.dumps({n: s.decay for n, s in builder.neurons.items()})
    if preprocessing is not None:
        metadata["preprocessing"] = json.dumps(preprocessing, sort_keys=True)
        metadata.update({k: preprocessing[k] for k in ("dataset", "mean", "std")
                         if preprocessing.get(k) is not None})
    return nir.NIRGraph(nodes=builder.nodes, edges=builder.edges, metadata=metadata,
                        type_check=False)


def write_nir(graph: Any, path: str | Path) -> None:
    """Write ``graph`` to an HDF5 file (``nir.write``)."""
    _nir().write(str(path), graph)


def read_nir(path: str | Path) -> Any:
    """Read a graph written by :func:`write_nir` (``nir.read``)."""
    return _nir().read(str(path), type_check=False)


def _topological_order(graph: Any) -> list[str]:
    preds: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for src, dst in graph.edges:
        preds[dst].append(src)
    order, done = [], set()
    while len(order) < len(preds):
        ready = [n for n in preds if n not in done and all(p in done for p in preds[n])]
        if not ready:
            raise ValueError("the NIR graph has a cycle; simulate_nir handles feed-forward graphs")
        for n in sorted(ready):
            order.append(n)
            done.add(n)
    return order


def _flatten(x: Tensor, node: Any, torch_convention: bool) -> Tensor:
    """NIR's ``start_dim``/``end_dim`` index the sample without the batch dimension; the
    snnTorch and Norse targets write torch's (``nn.Flatten`` on ``[B, ...]``)."""
    start, end = int(node.start_dim), int(node.end_dim)
    if torch_convention:
        return x.flatten(start, end)
    return x.flatten(1 + start, end if end < 0 else 1 + end)


def _t(a: Any) -> Tensor:
    return torch.as_tensor(np.asarray(a), dtype=torch.float64)


@torch.no_grad()
def simulate_nir(graph: Any, x_seq: Tensor, *, dt: float | None = None,
                 record: bool = False) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
    """Step a feed-forward NIR graph with forward Euler over ``x_seq`` ``[T, B, ...]``.

    A node's input is the sum of its predecessors' outputs at the same step (NIR semantics).
    Neurons integrate, fire where ``v > v_threshold`` and reset to ``v_reset``. Runs in float64.

    Args:
        graph: A ``nir.NIRGraph`` (e.g. from :func:`to_nir` or :func:`read_nir`).
        x_seq: Input sequence ``[T, B, *input_shape]``.
        dt: Euler step; defaults to ``graph.metadata["dt"]``.
        record: Also return every node's outputs ``[T, B, ...]`` by node name.

    Returns:
        The classifier output ``mean_t(Output[t])`` ``[B, ...]`` (the ``mean_over_time`` readout
        of MPBN Eq. 3; ``Output[t]`` stacked ``[T, B, ...]`` where the metadata says
        ``readout = "per_step"``), and the records if ``record``.
    """
    nir = _nir()
    if dt is None:
        dt = float((graph.metadata or {}).get("dt", 0) or 0)
        if not dt:
            raise ValueError("the graph's metadata has no dt; pass dt=")
    torch_convention = (graph.metadata or {}).get("flatten_convention") == "torch"
    order = _topological_order(graph)
    preds: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for src, dst in graph.edges:
        preds[dst].append(src)
    outputs = [n for n in order if isinstance(graph.nodes[n], nir.Output)]
    if len(outputs) != 1:
        raise ValueError(f"simulate_nir needs exactly one Output node, found {len(outputs)}")
    state: dict[str, Tensor] = {}
    records: dict[str, list[Tensor]] = {n: [] for n in order}
    readout: list[Tensor] = []
    x_seq = x_seq.double()
    for t in range(x_seq.shape[0]):
        out: dict[str, Tensor] = {}
        for name in order:
            node = graph.nodes[name]
            x = x_seq[t] if isinstance(node, nir.Input) else sum(out[p] for p in preds[name])
            if isinstance(node, nir.Input | nir.Output):
                y = x
            elif isinstance(node, nir.Affine):
                y = x @ _t(node.weight).T + _t(node.bias)
            elif isinstance(node, nir.Linear):
                y = x @ _t(node.weight).T
            elif isinstance(node, nir.Conv2d):
                y = F.conv2d(x, _t(node.weight), _t(node.bias), tuple(node.stride),
                             tuple(node.padding), tuple(node.dilation), int(node.groups))
            elif isinstance(node, nir.AvgPool2d | nir.SumPool2d):
                k = tuple(int(v) for v in np.asarray(node.kernel_size).reshape(-1))
                k = k * 2 if len(k) == 1 else k
                s = tuple(int(v) for v in np.broadcast_to(np.asarray(node.stride), 2))
                p = tuple(int(v) for v in np.broadcast_to(np.asarray(node.padding), 2))
                y = F.avg_pool2d(x, k, s, p)
                if isinstance(node, nir.SumPool2d):
                    y = y * (k[0] * k[1])
            elif isinstance(node, nir.Flatten):
                y = _flatten(x, node, torch_convention)
            elif isinstance(node, nir.LIF | nir.IF):
                v = state.get(name, torch.zeros_like(x))
                if isinstance(node, nir.LIF):
                    a = dt / _t(node.tau)
                    v = v + a * (_t(node.v_leak) - v + _t(node.r) * x)
                else:
                    v = v + dt * _t(node.r) * x
                y = (v > _t(node.v_threshold)).double()
                reset = _t(node.v_reset) if node.v_reset is not None else torch.zeros(())
                state[name] = torch.where(y > 0, reset.expand_as(v), v)
            else:
                raise NotImplementedError(f"simulate_nir: node '{name}' ({type(node).__name__})")
            out[name] = y
            if record:
                records[name].append(y)
        readout.append(out[outputs[0]])
    result = torch.stack(readout)
    if (graph.metadata or {}).get("readout", "mean_over_time") == "mean_over_time":
        result = result.mean(0)
    if record:
        return result, {n: torch.stack(v) for n, v in records.items() if v}
    return result
