"""The fully connected SNN of BNTT Table 3 for Sequential MNIST: FC(1,256)-FC(256,256)-FC(256,10).

One pixel is presented per time step (``input_shape = (1,)``, 784 steps for 28x28 MNIST): a static
batch ``[B, 1, 28, 28]`` (or ``[B, 784]``) is read as the sequence ``[784, B, 1]``; a sequence
``[T, B, 1]`` is used as is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from mpbn.layers.sequence import ConvNorm, IntegratingClassifier
from mpbn.models._registry import register_model
from mpbn.models.base import SpikingNet
from mpbn.models.factories import LayerFactories, make_factories, split_neuron_kwargs
from mpbn.recipes import BNTT_NEURON

__all__ = ["SpikingMLP"]


class SpikingMLP(SpikingNet):
    """``(linear-norm-LIF) x len(hidden)`` then the integrating classifier (MPBN Eq. 3).

    Args:
        in_features: Features of one step.
        hidden: Hidden widths.
        layers: Norm and neuron factories.
        num_classes: Classifier outputs.
        timesteps: ``T``.
        encoding: ``"sequence"`` (one value per step), ``"direct"`` or ``"poisson"``.
        bias: Whether the linear layers have a bias.
    """

    def __init__(self, in_features: int, hidden: Sequence[int], layers: LayerFactories,
                 num_classes: int, timesteps: int, encoding: str, bias: bool = False) -> None:
        super().__init__((in_features,), timesteps, encoding)
        if not hidden:
            raise ValueError("SpikingMLP needs at least one hidden layer")
        f = hidden[0]
        self.stem = ConvNorm(nn.Linear(in_features, f, bias=bias), layers.norm(f))
        body: list[nn.Module] = [layers.neuron(f, (f,))]
        for g in hidden[1:]:
            body += [ConvNorm(nn.Linear(f, g, bias=bias), layers.norm(g),
                              spike_input=True),
                     layers.neuron(g, (g,))]
            f = g
        self.body = nn.Sequential(*body)
        self.num_features = f
        self.head = IntegratingClassifier(nn.Linear(f, num_classes, bias=bias), pool="flatten")


@register_model
def fc_smnist(*, num_classes: int = 10, timesteps: int = 784, norm: str = "bntt",
              mpbn: str | None = None, neuron: Mapping[str, Any] | None = None,
              in_features: int | None = None, hidden: Sequence[int] = (256, 256),
              encoding: str = "sequence", bias: bool = False, in_channels: int | None = None,
              **kwargs: Any) -> SpikingMLP:
    """BNTT's Sequential-MNIST net FC(1,256)-FC(256,256)-FC(256,10) (BNTT Table 3).

    ``timesteps`` is the sequence length (784 pixels); BNTT keeps one set of statistics per step.
    ``in_features`` (default 1) is the size of one step; ``in_channels``, the name the conv nets
    use and the training engine passes for every model, is accepted as the same.
    """
    overrides = split_neuron_kwargs(kwargs)
    if kwargs:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(kwargs))}")
    if in_features is not None and in_channels is not None and in_features != in_channels:
        raise ValueError(f"in_features={in_features} and in_channels={in_channels} disagree "
                         "(both are the size of one step)")
    in_features = in_features or in_channels or 1
    layers = make_factories(norm, mpbn, timesteps, neuron, BNTT_NEURON, overrides)
    return SpikingMLP(in_features, tuple(hidden), layers, num_classes, timesteps, encoding, bias)
