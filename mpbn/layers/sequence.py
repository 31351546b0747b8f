"""Standard torch layers over spike sequences ``[T, B, ...]``: the glue of a multi-step SNN.

A torch conv, linear or pooling layer takes ``[N, C, ...]``; a spiking network carries every
tensor time-first, ``[T, B, C, ...]``, so that each neuron can run its recurrence over ``T``
inside one call (:class:`mpbn.LIF`). These wrappers fold ``T`` into the batch for the stateless
layer (one call for all steps, not ``T``) and unfold it again:

- :class:`ConvNorm`: a conv or linear layer and the norm on its output (the unit that
  :func:`mpbn.fold` folds into the conv's weights);
- :class:`PerStep`: any stateless module (pooling, flatten, dropout) at every step;
- :class:`IntegratingClassifier`: the non-firing output layer (MPBN Eq. 3);
- :class:`DirectEncoding`: a static batch ``[B, C, H, W]`` (what the loaders of image sets
  yield) repeated over ``T`` steps, as the first module of a model of one's own.

A user model is then ``ConvNorm -> LIF -> PerStep(pool) -> ... -> IntegratingClassifier``::

    from torch import nn
    from mpbn.layers import LIF, ConvNorm, IntegratingClassifier, PerStep, SeqBatchNorm

    net = nn.Sequential(
        ConvNorm(nn.Conv2d(3, 16, 3, padding=1, bias=False), SeqBatchNorm(16)),
        LIF(),
        PerStep(nn.AvgPool2d(2)),
        ConvNorm(nn.Conv2d(16, 32, 3, padding=1, bias=False), SeqBatchNorm(32),
                 spike_input=True),  # reads the LIF's spikes directly
        LIF(),
        IntegratingClassifier(nn.Linear(32, 10), pool="avg"),
    )
    logits = net(x.expand(4, *x.shape))  # direct encoding: [T=4, B, 3, H, W] -> [B, 10]
    logits = nn.Sequential(DirectEncoding(4), *net)(x)  # the same, from [B, 3, H, W]
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from mpbn.functional.encoding import direct_encode
from mpbn.functional.spike_ops import spike_conv, spike_linear, spike_ops_apply
from mpbn.layers.norm import SeqLayerNorm, SeqNorm

__all__ = ["ConvNorm", "DirectEncoding", "PerStep", "IntegratingClassifier"]

_WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


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

    ``[T, B, C, ...]`` is flattened to ``[T*B, C, ...]`` for ``conv`` (one call instead of
    ``T``), then unflattened for ``norm``, which needs the time axis (BNTT and TEBN vary over
    time; see :mod:`mpbn.layers.norm`).

    ``norm`` acts directly on ``conv``'s output, which is what :func:`mpbn.fold` relies on: in
    the folded copy, a norm with shared statistics (:attr:`SeqNorm.folds_into_weights`: plain
    BN, tdBN) is folded into ``conv``'s weight and bias and replaced by :class:`nn.Identity`.
    Put a conv and its norm in a :class:`ConvNorm` (not two :class:`PerStep` modules) so that
    the fold finds them.

    Args:
        conv: ``nn.Conv1d``/``2d``/``3d`` or ``nn.Linear``.
        norm: Its norm over ``[T, B, C, ...]``, usually a :class:`mpbn.layers.norm.SeqNorm`
            (``None``: identity).
        spike_input: The input is a LIF's spikes, exactly 0 or 1 (not pooled, not signed
            Poisson, not an image): ``conv`` then keeps its input for backward as ``torch.bool``
            (:mod:`mpbn.functional.spike_ops`; same results, a quarter of the float32 bytes).
            Not part of the state dict.

    Shape:
        ``[T, B, C_in, ...] -> [T, B, C_out, ...]`` (``[T, B, in] -> [T, B, out]`` for linear).

    Raises:
        TypeError: ``conv`` is not a conv or linear layer.
    """

    def __init__(self, conv: nn.Module, norm: nn.Module | None = None,
                 spike_input: bool = False) -> None:
        super().__init__()
        if not isinstance(conv, _WEIGHT_LAYERS):
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
        """Direct encoding: the same input ``x`` ``[B, ...]`` at every step (MPBN Sec. 5).

        Equals ``self(x.expand(timesteps, *x.shape))`` with the conv computed once: it runs on
        ``[B, ...]`` and is broadcast over ``T`` with ``expand`` (no copy). The norm also runs
        once where that is exact: a norm with per-sample statistics (LayerNorm), an identity
        (folded) or a shared-statistics BN in eval mode. In training, BN statistics over ``T*B``
        identical copies equal those over ``B`` for the output, but the unbiased running
        variance would be updated with ``B*H*W - 1`` instead of ``T*B*H*W - 1``, so the norm
        sees the expanded tensor; per-step norms (BNTT, TEBN) always do.

        Returns:
            ``[timesteps, B, C_out, ...]``.
        """
        y = self.conv(x).unsqueeze(0)
        norm = self.norm
        once = (isinstance(norm, (nn.Identity, SeqLayerNorm))
                or (isinstance(norm, SeqNorm) and norm.folds_into_weights and not norm.training))
        if once:
            return norm(y).expand(timesteps, *y.shape[1:])
        return norm(y.expand(timesteps, *y.shape[1:]))


class PerStep(nn.Module):
    """Apply a stateless module (pooling, flatten, dropout) to every step of ``[T, B, ...]``.

    ``module`` sees ``[T*B, ...]`` in one call, so it must treat samples independently (not a
    batch norm: use :mod:`mpbn.layers.norm`) and must keep the leading dimension.

    Shape:
        ``[T, B, ...] -> [T, B, ...']`` where ``module`` maps ``[N, ...] -> [N, ...']``.
    """

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

    Shape:
        ``[T, B, C, ...] -> [B, num_classes]`` (logits).
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


class DirectEncoding(nn.Module):
    """Direct encoding as a module: the static batch ``x`` at every one of ``timesteps`` steps.

    The first module of a model of one's own that trains on image sets, whose loaders yield
    ``[B, C, H, W]`` (MPBN Sec. 5 feeds the image to the first conv at every step):
    ``nn.Sequential(DirectEncoding(T), ConvNorm(...), LIF(...), ...)``. The output is
    :func:`mpbn.functional.encoding.direct_encode`'s expanded view (no copy); the following
    conv then runs ``T`` times on the same image, where the zoo's models run it once
    (:meth:`ConvNorm.forward_static`), which only costs time. A NIR graph of such a model
    starts after this module: its input is the image at every step (``mpbn fold --nir``).

    Args:
        timesteps: Number of steps ``T``.

    Shape:
        ``[B, ...] -> [T, B, ...]``.

    Raises:
        ValueError: ``timesteps`` is not a positive int.
    """

    def __init__(self, timesteps: int) -> None:
        super().__init__()
        if isinstance(timesteps, bool) or not isinstance(timesteps, int) or timesteps < 1:
            raise ValueError(f"DirectEncoding needs a positive int timesteps, got {timesteps!r}")
        self.timesteps = timesteps

    def forward(self, x: Tensor) -> Tensor:
        return direct_encode(x, self.timesteps)

    def extra_repr(self) -> str:
        return f"timesteps={self.timesteps}"
