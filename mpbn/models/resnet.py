"""Spiking ResNets with binary spikes (not SEW): ResNet19, ResNet20, ResNet20-narrow, ResNet18/34.

The BasicBlock follows the MPBN authors' code: ``conv-norm-LIF-conv-norm``, the shortcut is added
to the second norm's output and the block's second LIF fires on the sum (the "original ResNet"
form of MPBN Sec. 5, ImageNet paragraph), so every block output is a binary spike tensor.

- ``resnet19`` (tdBN, Zheng et al. 2021): 3x3 stem with 128 channels, no pooling, stages of
  3, 3, 2 blocks at 128/256/512 channels, shortcut ``1x1 conv stride 2 + norm``.
- ``resnet20`` (the MPBN paper's ResNet20, after Diet-SNN / Sengupta et al.): three 3x3 convs
  with 64 channels, 2x2 average pooling, four stages of 2 blocks at 64/128/256/512 channels,
  shortcut ``avg pool (stride) + 1x1 conv + norm``.
- ``resnet20_narrow`` (He et al. 2016 CIFAR ResNet-20, widths 16/32/64, 3 stages of 3 blocks)
  for CPU-scale runs; shortcut ``1x1 conv stride 2 + norm`` (He's option B).
- ``resnet18`` / ``resnet34`` (ImageNet): 7x7 stride-2 stem, 3x3 stride-2 average pooling (the
  authors' code uses average, not max, pooling), stages of 64..512 channels.

All end with global average pooling and the integrating classifier of MPBN Eq. 3.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from mpbn.layers.sequence import ConvNorm, IntegratingClassifier, PerStep
from mpbn.models._registry import register_model
from mpbn.models.base import SpikingNet, conv_out_size, init_weights, input_hw
from mpbn.models.factories import (
    LayerFactories,
    make_factories,
    split_neuron_kwargs,
    tdbn_residual_alpha,
)
from mpbn.recipes import MPBN_NEURON

__all__ = ["BasicBlock", "SpikingResNet"]


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """``LIF(norm(conv(LIF(norm(conv(x))))) + shortcut(x))`` over ``[T, B, C, H, W]``.

    Args:
        in_channels: Input channels.
        planes: Output channels.
        stride: Stride of the first conv (and of the shortcut).
        in_size: Input ``(H, W)``: the neurons need their per-step feature shape (MPBN
            element-wise, Sec. 5.2).
        layers: Norm and neuron factories.
        shortcut: ``"conv"`` (1x1 conv with stride + norm) or ``"avgconv"`` (avg pool with
            stride, then 1x1 conv + norm, as the MPBN ResNet20); used when the shape changes.
        spike_input: The block's input is a LIF's spikes (the previous block's or the stem's
            LIF), not average-pooled: the first conv and a ``"conv"`` shortcut then save it as
            bool. The second conv reads
            ``lif1``'s spikes.
    """

    def __init__(self, in_channels: int, planes: int, stride: int, in_size: tuple[int, int],
                 layers: LayerFactories, shortcut: str = "conv",
                 spike_input: bool = False) -> None:
        super().__init__()
        h, w = (conv_out_size(s, 3, stride, 1) for s in in_size)
        self.out_size = (h, w)
        # tdBN scales the two norms whose outputs are summed by 1/sqrt(2) (tdBN Sec. 4.2).
        alpha = tdbn_residual_alpha() if layers.norm_name == "tdbn" else 1.0
        self.conv1 = ConvNorm(conv3x3(in_channels, planes, stride), layers.norm(planes),
                              spike_input=spike_input)
        self.lif1 = layers.neuron(planes, (planes, h, w))
        self.conv2 = ConvNorm(conv3x3(planes, planes), layers.norm(planes, alpha=alpha),
                              spike_input=True)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != planes:
            proj = ConvNorm(nn.Conv2d(in_channels, planes, 1, stride=1 if shortcut == "avgconv"
                                      else stride, bias=False), layers.norm(planes, alpha=alpha),
                            spike_input=spike_input and shortcut == "conv")
            if shortcut == "avgconv":
                pool = nn.AvgPool2d(stride, stride=stride, ceil_mode=True,
                                    count_include_pad=False)
                self.shortcut = nn.Sequential(PerStep(pool), proj)
            elif shortcut == "conv":
                self.shortcut = proj
            else:
                raise ValueError(f"unknown shortcut {shortcut!r}; valid: conv, avgconv")
        self.lif2 = layers.neuron(planes, (planes, h, w))

    def forward(self, x_seq: Tensor) -> Tensor:
        out = self.conv2(self.lif1(self.conv1(x_seq)))
        identity = x_seq if self.shortcut is None else self.shortcut(x_seq)
        return self.lif2(out + identity)


class SpikingResNet(SpikingNet):
    """A spiking ResNet: stem (encoder), stages of :class:`BasicBlock`, integrating classifier.

    Args:
        stem: ``"cifar128"`` (ResNet19), ``"cifar3x64"`` (ResNet20), ``"cifar16"`` (He's
            ResNet-20; width from ``widths[0]``) or ``"imagenet"`` (7x7/2 conv + 3x3/2 avg pool).
        blocks: Blocks per stage.
        widths: Channels per stage.
        strides: Stride of each stage's first block.
        shortcut: ``"conv"`` or ``"avgconv"`` (see :class:`BasicBlock`).
        layers: Norm and neuron factories.
        num_classes: Classifier outputs.
        in_channels: Input channels.
        input_size: Input ``(H, W)``.
        timesteps: ``T``.
        encoding: ``"direct"`` or ``"poisson"``.
    """

    def __init__(self, stem: str, blocks: Sequence[int], widths: Sequence[int],
                 strides: Sequence[int], shortcut: str, layers: LayerFactories,
                 num_classes: int, in_channels: int, input_size: tuple[int, int],
                 timesteps: int, encoding: str) -> None:
        super().__init__((in_channels, *input_size), timesteps, encoding)
        h, w = input_size
        body: list[nn.Module] = []
        # Whether the body's next layer reads a LIF's spikes directly (bool-saving convs).
        spikes = False
        if stem == "imagenet":
            c = widths[0]
            self.stem = ConvNorm(nn.Conv2d(in_channels, c, 7, stride=2, padding=3, bias=False),
                                 layers.norm(c))
            h, w = conv_out_size(h, 7, 2, 3), conv_out_size(w, 7, 2, 3)
            body.append(layers.neuron(c, (c, h, w)))
            body.append(PerStep(nn.AvgPool2d(3, stride=2, padding=1)))
            h, w = conv_out_size(h, 3, 2, 1), conv_out_size(w, 3, 2, 1)
        elif stem == "cifar3x64":
            c = widths[0]
            self.stem = ConvNorm(conv3x3(in_channels, c), layers.norm(c))
            body.append(layers.neuron(c, (c, h, w)))
            for _ in range(2):
                body += [ConvNorm(conv3x3(c, c), layers.norm(c),
                                  spike_input=True),
                         layers.neuron(c, (c, h, w))]
            body.append(PerStep(nn.AvgPool2d(2)))
            h, w = conv_out_size(h, 2, 2), conv_out_size(w, 2, 2)
        elif stem in ("cifar128", "cifar16"):
            c = widths[0]
            self.stem = ConvNorm(conv3x3(in_channels, c), layers.norm(c))
            body.append(layers.neuron(c, (c, h, w)))
            spikes = True
        else:
            raise ValueError(f"unknown stem {stem!r}")
        for n_blocks, planes, stride in zip(blocks, widths, strides, strict=True):
            stage = []
            for i in range(n_blocks):
                block = BasicBlock(c, planes, stride if i == 0 else 1, (h, w), layers, shortcut,
                                   spike_input=spikes)
                spikes = True  # the block ends in lif2
                h, w = block.out_size
                c = planes
                stage.append(block)
            body.append(nn.Sequential(*stage))
        self.body = nn.Sequential(*body)
        self.num_features = c
        self.head = IntegratingClassifier(nn.Linear(c, num_classes), pool="avg")
        init_weights(self)


def _build(stem: str, blocks: Sequence[int], widths: Sequence[int], strides: Sequence[int],
           shortcut: str, *, num_classes: int, timesteps: int, norm: str, mpbn: str | None,
           neuron: Mapping[str, Any] | None, in_channels: int, input_size: int | Sequence[int],
           encoding: str, kwargs: dict[str, Any]) -> SpikingResNet:
    overrides = split_neuron_kwargs(kwargs)
    if kwargs:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(kwargs))}")
    layers = make_factories(norm, mpbn, timesteps, neuron, MPBN_NEURON, overrides)
    return SpikingResNet(stem, blocks, widths, strides, shortcut, layers, num_classes,
                         in_channels, input_hw(input_size), timesteps, encoding)


def _widths(base: Sequence[int], width: int | None) -> list[int]:
    if width is None:
        return list(base)
    return [width * c // base[0] for c in base]


@register_model
def resnet19(*, num_classes: int = 10, timesteps: int = 2, norm: str = "bn",
             mpbn: str | None = None, neuron: Mapping[str, Any] | None = None,
             in_channels: int = 3, input_size: int | Sequence[int] = 32,
             width: int | None = None, encoding: str = "direct", **kwargs: Any) -> SpikingResNet:
    """Spiking ResNet19 (tdBN's CIFAR net; MPBN Tables 2-3): 12,569,226 parameters at 10 classes.

    ``width`` sets the stem/first-stage channels (default 128; stages are 1x, 2x, 4x).
    """
    return _build("cifar128", (3, 3, 2), _widths((128, 256, 512), width), (1, 2, 2), "conv",
                  num_classes=num_classes, timesteps=timesteps, norm=norm, mpbn=mpbn,
                  neuron=neuron, in_channels=in_channels, input_size=input_size,
                  encoding=encoding, kwargs=kwargs)


@register_model
def resnet20(*, num_classes: int = 10, timesteps: int = 2, norm: str = "bn",
             mpbn: str | None = None, neuron: Mapping[str, Any] | None = None,
             in_channels: int = 3, input_size: int | Sequence[int] = 32,
             width: int | None = None, encoding: str = "direct", **kwargs: Any) -> SpikingResNet:
    """Spiking ResNet20 as in MPBN (Tables 1-3): 11,247,946 parameters at 10 classes.

    ``width`` sets the stem/first-stage channels (default 64; stages are 1x, 2x, 4x, 8x).
    """
    return _build("cifar3x64", (2, 2, 2, 2), _widths((64, 128, 256, 512), width), (1, 2, 2, 2),
                  "avgconv", num_classes=num_classes, timesteps=timesteps, norm=norm, mpbn=mpbn,
                  neuron=neuron, in_channels=in_channels, input_size=input_size,
                  encoding=encoding, kwargs=kwargs)


@register_model
def resnet20_narrow(*, num_classes: int = 10, timesteps: int = 2, norm: str = "bn",
                    mpbn: str | None = None, neuron: Mapping[str, Any] | None = None,
                    in_channels: int = 3, input_size: int | Sequence[int] = 32,
                    width: int | None = None, encoding: str = "direct",
                    **kwargs: Any) -> SpikingResNet:
    """He et al.'s CIFAR ResNet-20 (widths 16/32/64, 3x3 blocks) as an SNN, for CPU-scale runs."""
    return _build("cifar16", (3, 3, 3), _widths((16, 32, 64), width), (1, 2, 2), "conv",
                  num_classes=num_classes, timesteps=timesteps, norm=norm, mpbn=mpbn,
                  neuron=neuron, in_channels=in_channels, input_size=input_size,
                  encoding=encoding, kwargs=kwargs)


@register_model
def resnet18(*, num_classes: int = 1000, timesteps: int = 4, norm: str = "bn",
             mpbn: str | None = None, neuron: Mapping[str, Any] | None = None,
             in_channels: int = 3, input_size: int | Sequence[int] = 224,
             width: int | None = None, encoding: str = "direct", **kwargs: Any) -> SpikingResNet:
    """Spiking ResNet18 for ImageNet (MPBN Table 4), binary spikes (not SEW)."""
    return _build("imagenet", (2, 2, 2, 2), _widths((64, 128, 256, 512), width), (1, 2, 2, 2),
                  "conv", num_classes=num_classes, timesteps=timesteps, norm=norm, mpbn=mpbn,
                  neuron=neuron, in_channels=in_channels, input_size=input_size,
                  encoding=encoding, kwargs=kwargs)


@register_model
def resnet34(*, num_classes: int = 1000, timesteps: int = 4, norm: str = "bn",
             mpbn: str | None = None, neuron: Mapping[str, Any] | None = None,
             in_channels: int = 3, input_size: int | Sequence[int] = 224,
             width: int | None = None, encoding: str = "direct", **kwargs: Any) -> SpikingResNet:
    """Spiking ResNet34 for ImageNet (MPBN Table 4), binary spikes (not SEW)."""
    return _build("imagenet", (3, 4, 6, 3), _widths((64, 128, 256, 512), width), (1, 2, 2, 2),
                  "conv", num_classes=num_classes, timesteps=timesteps, norm=norm, mpbn=mpbn,
                  neuron=neuron, in_channels=in_channels, input_size=input_size,
                  encoding=encoding, kwargs=kwargs)
