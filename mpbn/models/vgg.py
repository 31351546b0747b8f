"""Spiking VGGs: VGG16 (MPBN), VGG9 and VGG11 (BNTT), VGGSNN (CIFAR10-DVS), and a small CNN.

Every conv is followed by its norm and a LIF (``conv-norm-LIF``); pooling is 2x2 average pooling
of the spikes.

- ``vgg16`` (MPBN Tables 2-3; the authors' CIFAR VGG16): torchvision's configuration "D" with
  BN after every conv, convs with a bias, average pooling, global average pooling and one linear
  layer.
- ``vgg9`` / ``vgg11`` (BNTT Tables 1, 5; the BNTT authors' code): bias-free convs and linears,
  BNTT after every conv and after the hidden linear layer, Poisson rate coding, soft-reset LIF
  with leak 0.99 and threshold 1, linear surrogate with damping 0.3 (BNTT Sec. 3.1, 4.1;
  :data:`mpbn.recipes.BNTT_NEURON`, which says why 0.99 and not the 0.95 of the authors' model
  classes: pass ``decay=0.95`` for that).
- ``vggsnn`` (the common CIFAR10-DVS net, 2 x 48 x 48 event frames): 64, 128, AP, 256, 256, AP,
  512, 512, AP, 512, 512, AP, then one linear layer on the flattened 512 x 3 x 3 features.
- ``small_cnn``: conv 16, LIF, AP, conv 32, LIF, AP, linear; for 1 x 8 x 8 digits (default) or
  3 x 32 x 32 images; used by the demo run and the tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from mpbn.layers.sequence import ConvNorm, IntegratingClassifier, PerStep
from mpbn.models._registry import register_model
from mpbn.models.base import SpikingNet, conv_out_size, init_weights, input_hw
from mpbn.models.factories import LayerFactories, make_factories, split_neuron_kwargs
from mpbn.recipes import BNTT_NEURON, MPBN_NEURON

__all__ = ["SpikingVGG", "BNTT_NEURON"]

CFG_VGG16 = [64, 64, "A", 128, 128, "A", 256, 256, 256, "A", 512, 512, 512, "A",
             512, 512, 512, "A"]
CFG_VGG9 = [64, 64, "A", 128, 128, "A", 256, 256, 256, "A"]
CFG_VGG11 = [64, "A", 128, "A", 256, 256, "A", 512, 512, "A", 512, 512, "G"]
CFG_VGGSNN = [64, 128, "A", 256, 256, "A", 512, 512, "A", 512, 512, "A"]


class SpikingVGG(SpikingNet):
    """A plain spiking conv net from a configuration list.

    Args:
        cfg: Channel counts (``conv-norm-LIF``), ``"A"`` (2x2 average pooling) or ``"G"``
            (global average pooling to 1x1).
        hidden: Widths of hidden linear layers (``linear-norm-LIF``) before the classifier.
        layers: Norm and neuron factories.
        num_classes: Classifier outputs.
        in_channels: Input channels.
        input_size: Input ``(H, W)``.
        timesteps: ``T``.
        encoding: ``"direct"``, ``"poisson"`` or ``"sequence"``.
        bias: Whether convs and linears have a bias (VGG16, VGGSNN) or not (BNTT nets).
        head: ``"avg"`` (global average pooling, then the classifier) or ``"flatten"``.
    """

    def __init__(self, cfg: Sequence[int | str], hidden: Sequence[int], layers: LayerFactories,
                 num_classes: int, in_channels: int, input_size: tuple[int, int],
                 timesteps: int, encoding: str, bias: bool, head: str) -> None:
        super().__init__((in_channels, *input_size), timesteps, encoding)
        h, w = input_size
        c = in_channels
        body: list[nn.Module] = []
        stem: ConvNorm | None = None
        # Whether the next layer reads a LIF's spikes directly (bool-saving convs): not the
        # stem (image or signed Poisson spikes), not after average pooling.
        spikes = False
        for v in cfg:
            if v == "A":
                body.append(PerStep(nn.AvgPool2d(2)))
                h, w = conv_out_size(h, 2, 2), conv_out_size(w, 2, 2)
                spikes = False
            elif v == "G":
                body.append(PerStep(nn.AdaptiveAvgPool2d(1)))
                h, w = 1, 1
                spikes = False
            else:
                conv = ConvNorm(nn.Conv2d(c, int(v), 3, padding=1, bias=bias), layers.norm(int(v)),
                                spike_input=spikes)
                c = int(v)
                if stem is None:
                    stem = conv  # the first conv + norm + LIF is the encoder (MPBN Sec. 5)
                else:
                    body.append(conv)
                body.append(layers.neuron(c, (c, h, w)))
                spikes = True
        assert stem is not None
        self.stem = stem
        features = c * h * w if head == "flatten" else c
        if hidden:
            body.append(PerStep(nn.Flatten()))
            for f in hidden:
                body += [ConvNorm(nn.Linear(features, f, bias=bias), layers.norm(f),
                                  spike_input=spikes),  # flatten: still 0/1
                         layers.neuron(f, (f,))]
                features = f
                spikes = True
            head = "flatten"
        self.body = nn.Sequential(*body)
        self.num_features = features
        self.head = IntegratingClassifier(nn.Linear(features, num_classes, bias=bias), pool=head)
        init_weights(self)


def _build(cfg: Sequence[int | str], hidden: Sequence[int], *, defaults: Mapping[str, Any],
           bias: bool, head: str, num_classes: int, timesteps: int, norm: str,
           mpbn: str | None, neuron: Mapping[str, Any] | None, in_channels: int,
           input_size: int | Sequence[int], encoding: str, width: int | None,
           kwargs: dict[str, Any]) -> SpikingVGG:
    overrides = split_neuron_kwargs(kwargs)
    if kwargs:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(kwargs))}")
    if width is not None:
        first = next(v for v in cfg if isinstance(v, int))
        cfg = [v if isinstance(v, str) else max(1, int(v) * width // first) for v in cfg]
    layers = make_factories(norm, mpbn, timesteps, neuron, defaults, overrides)
    return SpikingVGG(cfg, hidden, layers, num_classes, in_channels, input_hw(input_size),
                      timesteps, encoding, bias, head)


@register_model
def vgg16(*, num_classes: int = 10, timesteps: int = 4, norm: str = "bn",
          mpbn: str | None = None, neuron: Mapping[str, Any] | None = None,
          in_channels: int = 3, input_size: int | Sequence[int] = 32, width: int | None = None,
          encoding: str = "direct", **kwargs: Any) -> SpikingVGG:
    """Spiking VGG16 (MPBN Tables 2-3): 14,728,266 parameters at 10 classes."""
    return _build(CFG_VGG16, (), defaults=MPBN_NEURON, bias=True, head="avg",
                  num_classes=num_classes, timesteps=timesteps, norm=norm, mpbn=mpbn,
                  neuron=neuron, in_channels=in_channels, input_size=input_size,
                  encoding=encoding, width=width, kwargs=kwargs)


@register_model
def vgg9(*, num_classes: int = 10, timesteps: int = 25, norm: str = "bntt",
         mpbn: str | None = None, neuron: Mapping[str, Any] | None = None,
         in_channels: int = 3, input_size: int | Sequence[int] = 32, width: int | None = None,
         encoding: str = "poisson", **kwargs: Any) -> SpikingVGG:
    """BNTT's VGG9 (CIFAR-10, 25 steps): 7 bias-free convs, FC 1024, classifier."""
    return _build(CFG_VGG9, (1024,), defaults=BNTT_NEURON, bias=False, head="flatten",
                  num_classes=num_classes, timesteps=timesteps, norm=norm, mpbn=mpbn,
                  neuron=neuron, in_channels=in_channels, input_size=input_size,
                  encoding=encoding, width=width, kwargs=kwargs)


@register_model
def vgg11(*, num_classes: int = 100, timesteps: int = 30, norm: str = "bntt",
          mpbn: str | None = None, neuron: Mapping[str, Any] | None = None,
          in_channels: int = 3, input_size: int | Sequence[int] = 32, width: int | None = None,
          encoding: str = "poisson", **kwargs: Any) -> SpikingVGG:
    """BNTT's VGG11 (CIFAR-100 / Tiny-ImageNet): 8 bias-free convs, FC 4096, classifier."""
    return _build(CFG_VGG11, (4096,), defaults=BNTT_NEURON, bias=False, head="flatten",
                  num_classes=num_classes, timesteps=timesteps, norm=norm, mpbn=mpbn,
                  neuron=neuron, in_channels=in_channels, input_size=input_size,
                  encoding=encoding, width=width, kwargs=kwargs)


@register_model
def vggsnn(*, num_classes: int = 10, timesteps: int = 10, norm: str = "bn",
           mpbn: str | None = None, neuron: Mapping[str, Any] | None = None,
           in_channels: int = 2, input_size: int | Sequence[int] = 48, width: int | None = None,
           encoding: str = "direct", **kwargs: Any) -> SpikingVGG:
    """VGGSNN for CIFAR10-DVS (MPBN Table 5): event frames ``[T, B, 2, 48, 48]``."""
    return _build(CFG_VGGSNN, (), defaults=MPBN_NEURON, bias=True, head="flatten",
                  num_classes=num_classes, timesteps=timesteps, norm=norm, mpbn=mpbn,
                  neuron=neuron, in_channels=in_channels, input_size=input_size,
                  encoding=encoding, width=width, kwargs=kwargs)


@register_model
def small_cnn(*, num_classes: int = 10, timesteps: int = 4, norm: str = "bn",
              mpbn: str | None = None, neuron: Mapping[str, Any] | None = None,
              in_channels: int = 1, input_size: int | Sequence[int] = 8,
              width: int | None = None, encoding: str = "direct",
              **kwargs: Any) -> SpikingVGG:
    """Tiny CNN (conv 16, LIF, AP, conv 32, LIF, AP, linear) for 1x8x8 digits or 3x32x32."""
    return _build([16, "A", 32, "A"], (), defaults=MPBN_NEURON, bias=False, head="flatten",
                  num_classes=num_classes, timesteps=timesteps, norm=norm, mpbn=mpbn,
                  neuron=neuron, in_channels=in_channels, input_size=input_size,
                  encoding=encoding, width=width, kwargs=kwargs)
