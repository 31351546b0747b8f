"""What every zoo model shares: :class:`SpikingNet` (input encoding, ``stem -> body -> head``),
weight initialization and the output-size arithmetic the builders use.

All tensors are time-first ``[T, B, ...]``. A model is ``stem -> body -> head``:

- ``stem`` is a :class:`~mpbn.layers.ConvNorm`; with the LIF that follows it, it is the encoder
  (MPBN Sec. 5: "an ANN-like convolutional layer and a LIF layer to encode the inputs").
- ``body`` maps the stem's currents ``[T, B, ...]`` to features ``[T, B, ...]`` (spikes).
- ``head`` is an :class:`~mpbn.layers.IntegratingClassifier` (MPBN Eq. 3).

The layers themselves live in :mod:`mpbn.layers.sequence`; the norm and neuron factories the
blocks receive in :mod:`mpbn.models.factories`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mpbn.functional.encoding import poisson_encode
from mpbn.models._checkpoint import body_units, run_checkpointed

__all__ = ["SpikingNet", "ENCODINGS", "conv_out_size", "input_hw", "init_weights",
           "count_parameters"]

#: ``direct``: the static input is the current at every step (MPBN Sec. 5); ``poisson``: Bernoulli
#: rate coding of pixels (BNTT Sec. 3.1); ``sequence``: a static ``[B, ...]`` input is read as a
#: sequence of its flattened values, one per step (Sequential MNIST, BNTT Sec. 4.1).
ENCODINGS = ("direct", "poisson", "sequence")


def input_hw(input_size: int | Sequence[int]) -> tuple[int, int]:
    """``(H, W)`` of a builder's ``input_size`` (an int for a square input)."""
    if isinstance(input_size, int):
        return (input_size, input_size)
    h, w = input_size
    return (int(h), int(w))


def conv_out_size(size: int, kernel: int, stride: int = 1, padding: int = 0,
                  ceil_mode: bool = False) -> int:
    """Spatial output size of a convolution or pooling (PyTorch's formula)."""
    span = size + 2 * padding - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1  # PyTorch drops a last window that would start in the right padding
    if out <= 0:
        raise ValueError(f"input of size {size} is too small for kernel {kernel}, stride {stride}")
    return out


class SpikingNet(nn.Module):
    """Base class of the zoo: encoding, ``stem -> body -> head``, shape checks.

    Subclasses set ``self.stem`` (a :class:`~mpbn.layers.ConvNorm`), ``self.body`` and
    ``self.head``.

    Args:
        input_shape: Shape of one step of one sample, e.g. ``(3, 32, 32)``.
        timesteps: ``T`` used to encode static inputs.
        encoding: One of :data:`ENCODINGS`.
    """

    def __init__(self, input_shape: Sequence[int], timesteps: int, encoding: str) -> None:
        super().__init__()
        if encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {encoding!r}; valid: {', '.join(ENCODINGS)}")
        self.input_shape = tuple(int(s) for s in input_shape)
        self.timesteps = int(timesteps)
        self.encoding = encoding
        self.grad_checkpointing = 0  # units per checkpointed segment; 0: off
        # Poisson firing probability per unit |x| (mpbn.functional.encoding.poisson_encode):
        # 1 by default, 0.5 is the BNTT authors' PoissonGen (set_poisson_rate_scale).
        self.poisson_rate_scale = 1.0

    def set_poisson_rate_scale(self, rate_scale: float) -> None:
        """Fire with probability ``clamp(rate_scale * |x|, 0, 1)`` under Poisson encoding.

        The default 1 is the BNTT paper's "frequency proportional to the pixel intensity"
        (Sec. 3.5) at its simplest; 0.5 reproduces the BNTT authors' public ``PoissonGen``
        (``rand * 2 <= |x|``, on CIFAR inputs normalized by mean and std). See
        :func:`mpbn.functional.encoding.poisson_encode`.
        """
        rate_scale = float(rate_scale)
        if not (rate_scale > 0 and rate_scale < float("inf")):
            raise ValueError(f"rate_scale must be a positive finite number, got {rate_scale}")
        self.poisson_rate_scale = rate_scale

    def set_grad_checkpointing(self, enable: bool = True, every: int = 1) -> None:
        """Recompute the body in backward instead of keeping its activations (timm's API name).

        The body is split into units that end in spikes (a residual block, or a
        ``conv-norm-LIF``) and every ``every`` units form a segment whose input alone is kept
        over all ``T`` (:mod:`mpbn.models._checkpoint`). Gradients and running statistics are
        those of the plain forward; a step costs one more forward of the body. Only in training
        with gradients enabled; evaluation is unchanged.
        """
        if int(every) < 1:
            raise ValueError(f"every must be >= 1 (units per checkpointed segment), got {every}")
        self.grad_checkpointing = int(every) if enable else 0

    def encode(self, x: Tensor) -> Tensor:
        """The stem's output currents ``[T, B, ...]`` for a static batch or a sequence.

        A static batch ``[B, *input_shape]`` is encoded over ``self.timesteps`` steps; a
        sequence ``[T, B, *input_shape]`` (event frames, pre-encoded spikes) is used as is.
        """
        n = len(self.input_shape)
        if self.encoding == "sequence" and x.dim() != n + 2:
            # Sequential MNIST: one flattened value per step, [B, ...] -> [N, B, 1].
            return self.stem(x.flatten(1).t().unsqueeze(-1))
        if x.dim() == n + 2 and tuple(x.shape[2:]) == self.input_shape:
            return self.stem(x)
        if x.dim() != n + 1 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"{type(self).__name__} expects a static batch [B, {self._shape_text()}] or a "
                f"sequence [T, B, {self._shape_text()}], got {tuple(x.shape)}"
            )
        if self.encoding == "poisson":
            return self.stem(poisson_encode(x, self.timesteps,
                                            rate_scale=self.poisson_rate_scale))
        return self.stem.forward_static(x, self.timesteps)

    def _shape_text(self) -> str:
        return ", ".join(map(str, self.input_shape))

    def forward_features(self, x: Tensor) -> Tensor:
        """Spiking features ``[T, B, ...]`` before the classifier."""
        x = self.encode(x)
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return run_checkpointed(body_units(self.body), x, self.grad_checkpointing)
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, num_classes]`` for ``x`` ``[B, *input_shape]`` or ``[T, B, ...]``."""
        return self.head(self.forward_features(x))


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal convs (fan-out, as the authors' code) and PyTorch-default linears."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
