"""``fastnet``: a small plain spiking CNN sized for time-to-accuracy on CIFAR-10 on a CPU.

Not a network of either paper: the network of the ``cifar10-fast-*`` presets (issue 18), which
test MPBN at full CIFAR-10 scale within a fixed CPU budget. It is the "VGG without pooling"
form of fast CIFAR recipes: a 3x3 stem, then per stage a 3x3 stride-2 conv that halves the
resolution and ``extra`` 3x3 convs at the new resolution, every conv followed by its norm and
a LIF (``conv-norm-LIF``, binary spikes), then global average pooling and the integrating
classifier of MPBN Eq. 3.

Why strided convs and not average pooling of spikes: a conv followed by a 2x2 pool computes
four times the multiply-adds of the strided conv for the same output size, and its LIF runs on
four times the neurons. Every conv but the stem reads a LIF's spikes directly, so it keeps its
input for backward as bool (:mod:`mpbn.functional.spike_ops`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from mpbn.layers.sequence import ConvNorm, IntegratingClassifier
from mpbn.models._registry import register_model
from mpbn.models.base import SpikingNet, conv_out_size, init_weights, input_hw
from mpbn.models.factories import LayerFactories, make_factories, split_neuron_kwargs
from mpbn.recipes import MPBN_NEURON

__all__ = ["SpikingFastNet"]


class SpikingFastNet(SpikingNet):
    """Stem, then stages of a stride-2 ``conv-norm-LIF`` and ``extra`` stride-1 ones.

    Args:
        widths: Channels of the stem and of each stage, e.g. ``(32, 64, 128, 256)``.
        extra: Stride-1 convs after each stage's strided conv (one int for every stage, or
            one per stage).
        layers: Norm and neuron factories.
        num_classes: Classifier outputs.
        in_channels: Input channels.
        input_size: Input ``(H, W)``.
        timesteps: ``T``.
        encoding: ``"direct"``, ``"poisson"`` or ``"sequence"``.
    """

    def __init__(self, widths: Sequence[int], extra: int | Sequence[int],
                 layers: LayerFactories, num_classes: int, in_channels: int,
                 input_size: tuple[int, int], timesteps: int, encoding: str) -> None:
        super().__init__((in_channels, *input_size), timesteps, encoding)
        widths = [int(w) for w in widths]
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(f"widths needs the stem's and at least one stage's channels, all "
                             f">= 1, got {widths}")
        stages = len(widths) - 1
        extras = [int(extra)] * stages if isinstance(extra, int) else [int(e) for e in extra]
        if len(extras) != stages or min(extras) < 0:
            raise ValueError(f"extra must be an int >= 0 or one per stage ({stages}), got "
                             f"{extra}")
        h, w = input_size
        c = widths[0]
        self.stem = ConvNorm(nn.Conv2d(in_channels, c, 3, padding=1, bias=False),
                             layers.norm(c))
        body: list[nn.Module] = [layers.neuron(c, (c, h, w))]
        for out, repeats in zip(widths[1:], extras, strict=True):
            h, w = conv_out_size(h, 3, 2, 1), conv_out_size(w, 3, 2, 1)
            for stride in (2, *([1] * repeats)):
                body += [ConvNorm(nn.Conv2d(c, out, 3, stride=stride, padding=1, bias=False),
                                  layers.norm(out), spike_input=True),
                         layers.neuron(out, (out, h, w))]
                c = out
        self.body = nn.Sequential(*body)
        self.num_features = c
        self.head = IntegratingClassifier(nn.Linear(c, num_classes), pool="avg")
        init_weights(self)


@register_model
def fastnet(*, num_classes: int = 10, timesteps: int = 1, norm: str = "bn",
            mpbn: str | None = None, neuron: Mapping[str, Any] | None = None,
            in_channels: int = 3, input_size: int | Sequence[int] = 32,
            widths: Sequence[int] = (32, 64, 128, 256), extra: int | Sequence[int] = 1,
            encoding: str = "direct", **kwargs: Any) -> SpikingFastNet:
    """The ``cifar10-fast-*`` presets' plain spiking CNN (strided convs, no pooling).

    At the default widths 32/64/128/256 and one extra conv per stage: 7 convs, 1.17M
    parameters, 43M multiply-adds per image and step at 32x32.
    """
    overrides = split_neuron_kwargs(kwargs)
    if kwargs:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(kwargs))}")
    layers = make_factories(norm, mpbn, timesteps, neuron, MPBN_NEURON, overrides)
    return SpikingFastNet(widths, extra, layers, num_classes, in_channels, input_hw(input_size),
                          timesteps, encoding)
