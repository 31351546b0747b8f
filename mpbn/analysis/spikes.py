"""Spike activity per layer and time step (BNTT Figs. 1, 5) and synaptic operations (SOPs).

Spike rate (BNTT Sec. 4.4 and Supp. D): the total number of spikes of layer ``l`` over all
``T`` steps divided by the number of neurons of the layer, averaged over samples. Per step,
``spikes_per_step[l][t]`` is the mean number of spikes per neuron at step ``t`` (a firing
probability), the quantity of BNTT Fig. 1's layer x time map.

SOPs (synaptic operations, accumulates): for every conv/linear layer that receives spikes, each
input spike costs one accumulate per synapse it drives, i.e. per (output position, output
channel) whose receptive field contains it. The count is exact, not the
``C_out * k^2 / stride^2`` approximation: the input event map ``E`` is convolved with an
all-ones kernel of the layer's geometry (same stride, padding, dilation, groups), which gives,
at each output position, the number of input events in its receptive field; summed and
multiplied by the output channels per group this is ``sum over events of fan-out``. A linear
layer has fan-out ``out_features``. Border effects of padding and strides are thus counted
exactly.

Events: a binary (or integer, e.g. the sum of two spike maps in a residual block, or signed
Poisson spikes) input counts ``|x|`` events per entry; a non-integer input that is not the
network input (spikes after average pooling) counts its non-zero entries. The first layer
applied to the network input with analog values (direct encoding, MPBN Sec. 5) does
multiply-accumulates, reported as ``macs`` instead of SOPs.

The integrating classifier (MPBN Eq. 3) applies its linear layer once to time-averaged
features as an implementation shortcut; it is counted as the SNN would run it: every spike
entering it at every step drives ``out_features`` accumulates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mpbn.analysis import defaults
from mpbn.analysis._common import (
    batch_size_of,
    chunks,
    eval_mode,
    forward_logits,
    save_figure,
    seeded,
    write_csv,
    write_json,
)
from mpbn.analysis.style import MAX_WIDTH, place_legend, run_colors, styled, wrap
from mpbn.layers.recording import SpikeRecord, record_spikes

__all__ = ["LayerSpikes", "SynapticLayer", "Activity", "event_map", "synaptic_ops",
           "ann_macs", "measure_activity", "plot_spikes", "analyze_spikes"]

_CONV_FN = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d}


@dataclass
class LayerSpikes:
    """Spike counts of one LIF layer, summed over all evaluated samples."""

    name: str
    neurons: int
    spikes_per_step: list[float] = field(default_factory=list)  # total spikes at each step

    def rate_per_step(self, n_samples: int) -> list[float]:
        """Mean spikes per neuron per sample at each step."""
        return [s / (self.neurons * n_samples) for s in self.spikes_per_step]

    def spike_rate(self, n_samples: int) -> float:
        """BNTT's spike rate: spikes over all steps / neurons, per sample."""
        return sum(self.spikes_per_step) / (self.neurons * n_samples)


@dataclass
class SynapticLayer:
    """Operations of one conv/linear layer, summed over all evaluated samples.

    Attributes:
        analog_input: The layer receives real values (network input under direct encoding):
            its work is MACs, not SOPs.
        events_per_step: Input events at each application (step).
        sops_per_step: Accumulates at each step (0 for an analog layer).
        macs: MACs performed (analog layers: per application x applications).
        ann_macs_per_sample: MACs of the same layer in the equivalent ANN (one pass).
    """

    name: str
    kind: str
    analog_input: bool = False
    events_per_step: list[float] = field(default_factory=list)
    sops_per_step: list[float] = field(default_factory=list)
    macs: float = 0.0
    ann_macs_per_sample: float = 0.0


@dataclass
class Activity:
    """Spikes and synaptic operations of a model on ``n_samples`` samples."""

    n_samples: int
    timesteps: int
    spikes: list[LayerSpikes] = field(default_factory=list)
    synapses: list[SynapticLayer] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        n = self.n_samples
        return {
            "n_samples": n,
            "timesteps": self.timesteps,
            "layers": [{"name": s.name, "neurons": s.neurons, "spike_rate": s.spike_rate(n),
                        "rate_per_step": s.rate_per_step(n)} for s in self.spikes],
            "synapses": [{"name": s.name, "kind": s.kind, "analog_input": s.analog_input,
                          "events_per_sample": sum(s.events_per_step) / n,
                          "sops_per_sample": sum(s.sops_per_step) / n,
                          "sops_per_step_per_sample": [v / n for v in s.sops_per_step],
                          "macs_per_sample": s.macs / n,
                          "ann_macs_per_sample": s.ann_macs_per_sample}
                         for s in self.synapses],
            "total_sops_per_sample": sum(sum(s.sops_per_step) for s in self.synapses) / n,
        }


def event_map(x: Tensor) -> Tensor:
    """Events per input entry: ``|x|`` for integer-valued input (spikes), ``x != 0`` otherwise."""
    x = x.detach()
    if torch.equal(x, x.round()):
        return x.abs().float()
    return (x != 0).float()


def synaptic_ops(layer: nn.Module, events: Tensor) -> Tensor:
    """Accumulates per sample caused by ``events`` ``[N, C_in, ...]`` (or ``[N, in]``) in ``layer``.

    Exact fan-out (see module docstring): conv of the event map with an all-ones kernel.

    Returns:
        ``[N]`` float64 counts.
    """
    if isinstance(layer, nn.Linear):
        return events.flatten(1).sum(1).double() * layer.out_features
    conv_fn = _CONV_FN.get(type(layer)) or next(
        (fn for cls, fn in _CONV_FN.items() if isinstance(layer, cls)), None)
    if conv_fn is None:
        raise TypeError(f"cannot count SOPs of {type(layer).__name__}")
    groups = layer.groups
    ones = torch.ones(groups, layer.in_channels // groups, *layer.kernel_size,
                      dtype=torch.float64, device=events.device)
    # Non-"zeros" padding modes are counted as zero padding (padded values are copies, not
    # events of their own; the difference is a border effect).
    covered = conv_fn(events.double(), ones, None, layer.stride, layer.padding, layer.dilation,
                      groups)
    return covered.flatten(1).sum(1) * (layer.out_channels // groups)


def ann_macs(layer: nn.Module, out_shape: tuple[int, ...]) -> float:
    """MACs of ``layer`` for one sample in an ANN, given one sample's output shape."""
    if isinstance(layer, nn.Linear):
        return float(layer.in_features * layer.out_features)
    per_output = layer.in_channels // layer.groups * math.prod(layer.kernel_size)
    return float(math.prod(out_shape) * per_output)


def _is_integrating_head(module: nn.Module) -> bool:
    # Duck-typed so stand-in models and the zoo's IntegratingClassifier are both recognized.
    return isinstance(getattr(module, "linear", None), nn.Linear) and hasattr(module, "pool")


class _SynapseRecorder:
    """Forward hooks that accumulate SOPs/MACs over several batches (spikes: record_spikes)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.synapses: dict[str, SynapticLayer] = {}
        self.batch = 1
        self.first_call = True
        self.handles: list[Any] = []
        head_linears = set()
        for name, m in model.named_modules():
            if _is_integrating_head(m):
                head_linears.add(id(m.linear))
                self.handles.append(m.register_forward_hook(self._head_hook(name)))
        for name, m in model.named_modules():
            if isinstance(m, (nn.Linear, *_CONV_FN)) and id(m) not in head_linears:
                self.handles.append(m.register_forward_hook(self._synapse_hook(name)))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()

    @staticmethod
    def _add(values: list[float], new: list[float]) -> None:
        if len(values) < len(new):
            values.extend([0.0] * (len(new) - len(values)))
        for i, v in enumerate(new):
            values[i] += v

    def _head_hook(self, name: str) -> Any:
        def hook(module: nn.Module, inputs: Any, out: Tensor) -> None:
            x_seq = inputs[0]
            events = event_map(x_seq).flatten(2).sum(2).sum(1)  # [T]
            fan_out = module.linear.out_features
            layer = self.synapses.setdefault(
                name, SynapticLayer(name, "linear (integrating classifier)"))
            self._add(layer.events_per_step, events.double().tolist())
            self._add(layer.sops_per_step, (events.double() * fan_out).tolist())
            layer.ann_macs_per_sample = float(module.linear.in_features * fan_out)
        return hook

    def _synapse_hook(self, name: str) -> Any:
        def hook(module: nn.Module, inputs: Any, out: Tensor) -> None:
            x = inputs[0]
            steps = max(x.shape[0] // self.batch, 1)
            kind = "linear" if isinstance(module, nn.Linear) else type(module).__name__.lower()
            layer = self.synapses.get(name)
            if layer is None:
                analog = self.first_call and not torch.equal(x, x.round())
                layer = self.synapses[name] = SynapticLayer(name, kind, analog_input=analog)
                layer.ann_macs_per_sample = ann_macs(module, tuple(out.shape[1:]))
            self.first_call = False
            if layer.analog_input:
                layer.macs += layer.ann_macs_per_sample * x.shape[0]
                self._add(layer.events_per_step, [0.0] * steps)
                self._add(layer.sops_per_step, [0.0] * steps)
                return
            events = event_map(x)
            sops = synaptic_ops(module, events).view(steps, -1).sum(1)
            self._add(layer.events_per_step,
                      events.flatten(1).sum(1).double().view(steps, -1).sum(1).tolist())
            self._add(layer.sops_per_step, sops.tolist())
        return hook


@torch.no_grad()
def measure_activity(model: nn.Module, x: Tensor, *, batch_size: int = 256,
                     timesteps: int | None = None, seed: int | None = 0) -> Activity:
    """Spikes per LIF layer and step, and SOPs/MACs per conv/linear layer (eval mode).

    Args:
        x: Input sample, static ``[N, ...]`` or sequence ``[T, N, ...]``.
        timesteps: Run only this many steps; ``None``: the model's ``timesteps``.
        seed: RNG seed during the run (Poisson encoding).
    """
    recorder = _SynapseRecorder(model)
    dummy_y = torch.zeros(batch_size_of(x, model), dtype=torch.long)
    try:
        with eval_mode(model), seeded(seed), record_spikes(model, keep="counts") as record:
            for xb, _ in chunks(x, dummy_y, model, batch_size):
                recorder.batch = batch_size_of(xb, model)
                recorder.first_call = True
                forward_logits(model, xb, timesteps)
    finally:
        recorder.remove()
    spikes = _layer_spikes(record)
    steps = max((len(s.spikes_per_step) for s in spikes), default=0)
    return Activity(n_samples=int(dummy_y.shape[0]), timesteps=steps, spikes=spikes,
                    synapses=list(recorder.synapses.values()))


def _layer_spikes(record: SpikeRecord) -> list[LayerSpikes]:
    """Per LIF layer in order of first call: its neurons and total spikes at each step."""
    return [LayerSpikes(name, record.neurons[name], per_step.tolist())
            for name, per_step in record.spikes_per_step.items()]


@styled
def plot_spikes(activities: dict[str, Activity], out_dir: str | Path, name: str = "spikes",
                colors: dict[str, str] | None = None) -> list[Path]:
    """Per model a layer x time heatmap (BNTT Fig. 1), all on one colour scale with one
    colour bar; below them the per-layer spike rates of every model (BNTT Fig. 5).

    Heatmaps are laid out three to a row, so the figure stays readable for many models;
    ``colors`` (``{label: colour}``) colours the bars and the heatmap titles.
    """
    import matplotlib.pyplot as plt

    colors = run_colors(activities, colors)
    tables = {label: np.array([s.rate_per_step(act.n_samples) for s in act.spikes])
              if act.spikes else np.zeros((1, 1)) for label, act in activities.items()}
    n_models = max(len(activities), 1)
    ncols = min(n_models, 3)
    nrows = -(-n_models // ncols)
    n_layers = max((len(a.spikes) for a in activities.values()), default=1)
    map_height = min(max(1.4 + 0.28 * n_layers, 2.4), 4.5)
    fig = plt.figure(figsize=(min(max(3.4 * ncols + 1.0, 6.5), MAX_WIDTH),
                              map_height * nrows + 3.6), constrained_layout=True)
    grid = fig.add_gridspec(nrows + 1, ncols, height_ratios=[map_height] * nrows + [3.6])
    # One scale for every model (the range over all maps), so colours compare across maps.
    vmin = min((float(t.min()) for t in tables.values()), default=0.0)
    vmax = max((float(t.max()) for t in tables.values()), default=1.0)
    norm = plt.Normalize(vmin, vmax if vmax > vmin else vmin + 1e-6)
    maps = []
    for i, (label, act) in enumerate(activities.items()):
        ax = fig.add_subplot(grid[i // ncols, i % ncols])
        maps.append(ax)
        table = tables[label]
        im = ax.imshow(table, aspect="auto", cmap="viridis", norm=norm, interpolation="nearest")
        ax.set_xlabel("time step t")
        ax.set_xticks(range(table.shape[1]), [str(t + 1) for t in range(table.shape[1])])
        ax.set_yticks(range(len(act.spikes)), [s.name for s in act.spikes], fontsize=8)
        if i % ncols == 0:
            ax.set_ylabel("LIF layer (depth)")
        ax.set_title(wrap(label, 30 if ncols > 1 else 60), color=colors[label],
                     fontweight="bold")
    if maps:
        fig.colorbar(im, ax=maps, label="spikes / neuron / sample")
    ax = fig.add_subplot(grid[nrows, :])
    width = 0.8 / n_models
    for i, (label, act) in enumerate(activities.items()):
        rates = [s.spike_rate(act.n_samples) for s in act.spikes]
        ax.bar(np.arange(len(rates)) + i * width, rates, width=width, label=label,
               color=colors[label])
    names = [s.name for s in next(iter(activities.values())).spikes] if activities else []
    ax.set_xticks(np.arange(len(names)) + width * (n_models - 1) / 2, names,
                  rotation=30 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center",
                  fontsize=8)
    ax.set_xlabel("LIF layer (depth)")
    ax.set_ylabel("spike rate\n(spikes over T per neuron)")
    ax.set_title("Layer-wise spike rate (BNTT Fig. 5)")
    ax.grid(alpha=0.3, axis="y")
    fig.suptitle("Spikes per neuron per sample at each step (BNTT Fig. 1), one colour scale")
    place_legend(ax)
    return save_figure(fig, out_dir, name)


def analyze_spikes(models: dict[str, nn.Module], x: Tensor, out_dir: str | Path, *,
                   batch_size: int = defaults.BATCH_SIZE, seed: int = defaults.SEED,
                   colors: dict[str, str] | None = None) -> dict[str, Any]:
    """Spike activity of several models: ``spikes.png``/svg, ``spikes.json``, ``spikes.csv``."""
    activities = {label: measure_activity(m, x, batch_size=batch_size, seed=seed)
                  for label, m in models.items()}
    out = Path(out_dir)
    files = plot_spikes(activities, out, colors=colors)
    data = {label: a.to_dict() for label, a in activities.items()}
    write_json(data, out / "spikes.json")
    write_csv([{"model": label, "layer": layer["name"], "neurons": layer["neurons"],
                "spike_rate": layer["spike_rate"],
                **{f"t{t + 1}": r for t, r in enumerate(layer["rate_per_step"])}}
               for label, d in data.items() for layer in d["layers"]], out / "spikes.csv")
    return {"activity": data, "activities": activities, "files": [str(p) for p in files]}
