"""Building blocks shared by the model zoo: conv + norm over ``[T, B, ...]``, per-step wrappers,
the integrating classifier, layer factories and the base class that handles encoding.

All tensors are time-first ``[T, B, ...]``. A model is ``stem -> body -> head``:

- ``stem`` is a :class:`ConvNorm`; with the LIF that follows it, it is the encoder (MPBN
  Sec. 5: "an ANN-like convolutional layer and a LIF layer to encode the inputs").
- ``body`` maps the stem's currents ``[T, B, ...]`` to features ``[T, B, ...]`` (spikes).
- ``head`` is a :class:`IntegratingClassifier` (MPBN Eq. 3).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from mpbn.functional.spike_ops import spike_conv, spike_linear, spike_ops_apply
from mpbn.layers.neuron import LIF, MEMBRANE_NORMS, create_neuron
from mpbn.layers.norm import NORMS, SeqLayerNorm, SeqNorm, create_norm
from mpbn.models._checkpoint import body_units, run_checkpointed

__all__ = [
    "ConvNorm",
    "PerStep",
    "IntegratingClassifier",
    "SpikingNet",
    "LayerFactories",
    "make_factories",
    "conv_out_size",
    "ENCODINGS",
]

#: ``direct``: the static input is the current at every step (MPBN Sec. 5); ``poisson``: Bernoulli
#: rate coding of pixels (BNTT Sec. 3.1); ``sequence``: a static ``[B, ...]`` input is read as a
#: sequence of its flattened values, one per step (Sequential MNIST, BNTT Sec. 4.1).
ENCODINGS = ("direct", "poisson", "sequence")

NormFactory = Callable[..., nn.Module]
NeuronFactory = Callable[[int, Sequence[int]], LIF]


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


class _SpikeInputRoute(TorchFunctionMode):
    """Within one conv/linear module call, run its op on ``x`` as the bool-saving spike op.

    The module itself is called (not its weights through a function), so its class, state dict
    and forward hooks (SOP counting in :mod:`mpbn.analysis.spikes`, the memory benchmark's
    accounting, the NIR exporter's shape probe) are those of a standard layer.
    """

    _OPS = {F.conv1d: spike_conv, F.conv2d: spike_conv, F.conv3d: spike_conv,
            F.linear: spike_linear}

    def __init__(self, x: Tensor) -> None:
        super().__init__()
        self.x = x

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        op = self._OPS.get(func)
        # Only the call on x itself (not on a padded copy, padding_mode != "zeros") and with
        # integer padding (spike_conv has no "same"/"valid").
        if op is not None and args and args[0] is self.x:
            padding = kwargs.get("padding", args[4] if len(args) > 4 else 0)
            if not isinstance(padding, str):
                return op(*args, **kwargs)
        return func(*args, **kwargs)


class ConvNorm(nn.Module):
    """A conv (or linear) layer followed by its norm, over ``[T, B, ...]`` in one batched call.

    ``[T, B, ...]`` is flattened to ``[T*B, ...]`` for the conv (one call instead of ``T``), then
    unflattened for the norm, which needs the time axis (BNTT and TEBN vary over time).

    ``norm_follows_conv`` tells :func:`mpbn.layers.fold.fold_norms_into_weights` that ``norm`` acts
    directly on ``conv``'s output, so a norm with shared statistics can be folded into ``conv``
    (the pass replaces ``norm`` by :class:`nn.Identity`).

    Args:
        conv: The conv or linear layer.
        norm: Its norm (``None``: identity).
        spike_input: The input is a LIF's spikes, exactly 0 or 1 (not pooled, not signed
            Poisson, not an image): ``conv`` then keeps its input for backward as ``torch.bool``
            (:mod:`mpbn.functional.spike_ops`; same results, a quarter of the float32 bytes).
            Set by the model builders; not part of the state dict.
    """

    norm_follows_conv = True

    def __init__(self, conv: nn.Module, norm: nn.Module | None = None,
                 spike_input: bool = False) -> None:
        super().__init__()
        if not isinstance(conv, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            raise TypeError(f"ConvNorm needs a Conv or Linear layer, got {type(conv).__name__}")
        self.conv = conv
        self.norm = norm if norm is not None else nn.Identity()
        self.spike_input = bool(spike_input)

    def forward(self, x_seq: Tensor) -> Tensor:
        x = x_seq.flatten(0, 1)
        if self.spike_input and spike_ops_apply(x, self.conv.weight, self.conv.bias):
            with _SpikeInputRoute(x):
                y = self.conv(x)
        else:
            y = self.conv(x)
        return self.norm(y.unflatten(0, x_seq.shape[:2]))

    def extra_repr(self) -> str:
        return "spike_input=True" if self.spike_input else ""

    def forward_static(self, x: Tensor, timesteps: int) -> Tensor:
        """Direct encoding: the same image at every step (MPBN Sec. 5), conv computed once.

        The conv runs on ``[B, ...]`` and is broadcast over ``T`` with ``expand`` (no copy). The
        norm also runs once where that is exact: a norm with per-sample statistics (LayerNorm),
        an identity (folded) or a shared-statistics BN in eval mode. In training, BN statistics
        over ``T*B`` identical copies equal those over ``B`` for the output, but the unbiased
        running variance would be updated with ``B*H*W - 1`` instead of ``T*B*H*W - 1``, so
        the norm sees the expanded tensor; per-step norms (BNTT, TEBN) always do.
        """
        y = self.conv(x).unsqueeze(0)
        norm = self.norm
        once = (isinstance(norm, (nn.Identity, SeqLayerNorm))
                or (getattr(norm, "folds_into_weights", False) and not norm.training))
        if once:
            return norm(y).expand(timesteps, *y.shape[1:])
        return norm(y.expand(timesteps, *y.shape[1:]))


class PerStep(nn.Module):
    """Apply a stateless module (pooling, flatten, dropout) to every step of ``[T, B, ...]``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x_seq: Tensor) -> Tensor:
        y = self.module(x_seq.flatten(0, 1))
        return y.unflatten(0, x_seq.shape[:2])


class IntegratingClassifier(nn.Module):
    """The output layer of MPBN Eq. 3: ``o_out = (1/T) * sum_t (W x_t + b)``, no firing.

    The layer is linear, so it is applied once to the time-averaged features:
    ``mean_t(W x_t + b) = W mean_t(x_t) + b`` (``T`` times fewer multiply-adds).

    BNTT's output layer (BNTT Sec. 3.1) accumulates the membrane without leak (``lambda = 1``)
    and no firing, ``u_T = sum_t (W x_t + b)``, and feeds ``softmax(u_T / T)`` to the loss:
    ``u_T / T`` is exactly the mean above, so both papers' classifiers coincide.

    Args:
        linear: The classifier ``nn.Linear``.
        pool: ``"avg"`` (global average pooling over space first, as the CIFAR ResNets and
            VGG16) or ``"flatten"`` (the per-step features are flattened).
    """

    def __init__(self, linear: nn.Linear, pool: str = "avg") -> None:
        super().__init__()
        if pool not in ("avg", "flatten"):
            raise ValueError(f"unknown pool {pool!r}; valid: avg, flatten")
        self.pool = pool
        self.linear = linear

    def forward(self, x_seq: Tensor) -> Tensor:
        x = x_seq.mean(0)
        x = x.flatten(2).mean(2) if self.pool == "avg" and x.dim() > 2 else x.flatten(1)
        return self.linear(x)

    def extra_repr(self) -> str:
        return f"pool={self.pool}"


class LayerFactories:
    """The norm and neuron factories a model hands to its blocks (timm's ``norm_layer`` style).

    ``norm(channels, alpha=1.0)`` builds the configured norm; ``neuron(channels, shape)`` builds
    a LIF with MPBN sized for the per-step feature shape ``shape`` (``(C, H, W)`` or ``(C,)``).
    """

    def __init__(self, norm: str, membrane_norm: str | None, timesteps: int,
                 neuron_kwargs: Mapping[str, Any]) -> None:
        self.norm_name = norm
        self.membrane_norm = membrane_norm
        self.timesteps = timesteps
        self.neuron_kwargs = dict(neuron_kwargs)

    def norm(self, channels: int, alpha: float = 1.0) -> SeqNorm:
        v_th = self.neuron_kwargs.get("v_threshold", 0.5)
        return create_norm(self.norm_name, channels, timesteps=self.timesteps,
                           v_threshold=float(v_th), alpha=alpha)

    def neuron(self, channels: int, shape: Sequence[int]) -> LIF:
        return create_neuron(channels, feature_shape=tuple(shape),
                             membrane_norm=self.membrane_norm, **self.neuron_kwargs)


_NORM_ALIASES = {"baseline": "bn", "batchnorm": "bn", "layernorm": "ln"}
# Every LIF keyword except those the model sets itself from the layer it builds (MPBN size) or
# that only folding produces; read from the signature so new LIF options reach the models.
_MODEL_SET = {"self", "membrane_norm", "num_features", "feature_shape", "threshold_sign",
              "reset_amount"}
_LIF_KEYS = tuple(k for k in inspect.signature(LIF.__init__).parameters if k not in _MODEL_SET)


def make_factories(norm: str, mpbn: str | None, timesteps: int,
                   neuron: Mapping[str, Any] | None, defaults: Mapping[str, Any],
                   overrides: Mapping[str, Any]) -> LayerFactories:
    """Validate the model-level switches and build the layer factories.

    Args:
        norm: Conv norm name (``bn``, ``tdbn``, ``tebn``, ``bntt``, ``ln``).
        mpbn: ``None``/``"none"``, ``"channel"`` or ``"element"``.
        timesteps: ``T`` (per-step norms keep ``T`` sets of parameters).
        neuron: LIF keyword arguments (``decay``, ``v_threshold``, ``reset``, ...).
        defaults: The model family's LIF defaults (MPBN Sec. 5: decay 0.25, V_th 0.5).
        overrides: LIF keywords given directly to the model builder; they win over ``neuron``.
    """
    key = _NORM_ALIASES.get(norm, norm) if isinstance(norm, str) else norm
    if key not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")
    membrane = None if mpbn in (None, "none", False) else mpbn
    if membrane is not None and membrane not in MEMBRANE_NORMS:
        raise ValueError(f"unknown mpbn {mpbn!r}; valid: none, {', '.join(MEMBRANE_NORMS)}")
    if not isinstance(timesteps, int) or timesteps <= 0:
        raise ValueError(f"timesteps must be a positive int, got {timesteps!r}")
    kwargs = {**defaults, **(neuron or {}), **overrides}
    unknown = set(kwargs) - set(_LIF_KEYS)
    if unknown:
        raise ValueError(
            f"unknown neuron option(s) {sorted(unknown)}; valid: {', '.join(_LIF_KEYS)}"
        )
    return LayerFactories(key, membrane, timesteps, kwargs)


def split_neuron_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Pop the LIF keywords (``decay=``, ``v_threshold=``, ...) out of a builder's ``kwargs``."""
    return {k: kwargs.pop(k) for k in _LIF_KEYS if k in kwargs}


def _poisson_encode(x: Tensor, timesteps: int) -> Tensor:
    from mpbn.functional.encoding import poisson_encode

    return poisson_encode(x, timesteps)


class SpikingNet(nn.Module):
    """Base class of the zoo: encoding, ``stem -> body -> head``, shape checks.

    Subclasses set ``self.stem`` (a :class:`ConvNorm`), ``self.body`` and ``self.head``.

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
            return self.stem(_poisson_encode(x, self.timesteps))
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


def tdbn_residual_alpha() -> float:
    """tdBN's ``alpha`` for the norms whose outputs are summed in a residual block (1/sqrt 2)."""
    return 1.0 / math.sqrt(2.0)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
