"""The SNN normalization family over ``[T, B, C, ...]``, applied after a conv/linear layer.

- :class:`SeqBatchNorm`: plain BN with statistics over ``T*B*H*W`` (what most SNN code does);
  folds into the preceding layer.
- :class:`ThresholdDependentBN` (tdBN, Zheng et al. 2021): ``alpha * V_th * gamma * x_hat + beta``,
  statistics over ``T*B*H*W``; folds into the preceding layer.
- :class:`TemporalEffectiveBN` (TEBN, Duan et al. 2022): BN with statistics shared over all steps,
  then a learnable scale ``p[t]`` per time step. Time-varying: does not fold into weights.
- :class:`BatchNormThroughTime` (BNTT, Kim & Panda 2021):
  ``gamma_t * (x - mu_t) / sqrt(var_t + eps)`` with separate batch statistics, running
  statistics and ``gamma`` for every step, no ``beta``.
- :class:`SeqLayerNorm`: LayerNorm over ``(C, H, W)`` of each sample and step (BNTT Sec. 4.8),
  with a per-channel affine.

All keep PyTorch's names (``weight``, ``bias``, ``running_mean``, ``running_var``) so state dicts
look familiar. They are not ``nn.BatchNorm*`` subclasses: ``convert_sync_batchnorm`` would swap
them for layers that normalize dim 1 of ``[T, B, C, ...]`` (the batch); their synchronized
twins are built by :func:`mpbn.layers.sync.convert_sync_norms`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mpbn.recipes import MPBN_NEURON

__all__ = [
    "NORMS",
    "NORM_ALIASES",
    "canonical_norm_name",
    "SeqNorm",
    "SeqBatchNorm",
    "ThresholdDependentBN",
    "TemporalEffectiveBN",
    "BatchNormThroughTime",
    "SeqLayerNorm",
    "create_norm",
]


class SeqNorm(nn.Module):
    """Shared checks and parameters of the norm family; ``stats_shape`` sizes the buffers."""

    #: True where eval-mode output is an affine map of the input that is the same at every step.
    folds_into_weights = False

    def __init__(self, num_features: int, *, eps: float = 1e-5, momentum: float = 0.1,
                 stats_shape: tuple[int, ...] | None = None, bias: bool = True,
                 running_stats: bool = True) -> None:
        super().__init__()
        if not isinstance(num_features, int) or num_features <= 0:
            raise ValueError(f"num_features must be a positive int, got {num_features!r}")
        self.num_features = num_features
        self.eps, self.momentum = eps, momentum
        shape = stats_shape or (num_features,)
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(num_features)) if bias else None
        if running_stats:
            self.register_buffer("running_mean", torch.zeros(shape))
            self.register_buffer("running_var", torch.ones(shape))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def check_input(self, x: Tensor) -> None:
        if x.dim() < 3 or x.shape[2] != self.num_features:
            raise ValueError(
                f"{type(self).__name__} expects [T, B, C={self.num_features}, ...], "
                f"got shape {tuple(x.shape)}"
            )

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"

    def _batch_norm(self, x: Tensor, weight: Tensor | None, bias: Tensor | None,
                    running_mean: Tensor, running_var: Tensor) -> Tensor:
        """BN over dim 1 of ``x`` (overridden by the synchronized twins, mpbn.layers.sync)."""
        if self.training:
            self.num_batches_tracked.add_(1)
        return F.batch_norm(x, running_mean, running_var, weight, bias, self.training,
                            self.momentum, self.eps)


class SeqBatchNorm(SeqNorm):
    """Plain BN over ``[T, B, C, ...]`` with statistics over ``T*B*H*W`` (BN Eq. 4-5)."""

    folds_into_weights = True

    def fold_scale(self) -> float:
        """Constant factor in front of ``gamma * x_hat`` (1 for plain BN)."""
        return 1.0

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        weight = self.weight * self.fold_scale() if self.fold_scale() != 1.0 else self.weight
        y = self._batch_norm(x.flatten(0, 1), weight, self.bias, self.running_mean,
                             self.running_var)
        return y.view_as(x)


class ThresholdDependentBN(SeqBatchNorm):
    """tdBN: ``alpha * V_th * gamma * (x - mu) / sqrt(var + eps) + beta``, stats over ``T*B*H*W``.

    Args:
        alpha: tdBN's ``alpha`` (1, or ``1/sqrt(2)`` before a residual addition).
        v_threshold: The firing threshold of the neurons that follow.
    """

    def __init__(self, num_features: int, *, alpha: float = 1.0,
                 v_threshold: float = MPBN_NEURON["v_threshold"],
                 eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.alpha, self.v_threshold = float(alpha), float(v_threshold)

    def fold_scale(self) -> float:
        return self.alpha * self.v_threshold

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, alpha={self.alpha}, v_threshold={self.v_threshold}"


class TemporalEffectiveBN(SeqNorm):
    """TEBN: ``y[t] = p[t] * BN(x[t])``, BN statistics shared over all steps.

    ``step_scale`` (``p``, one learnable scalar per step, initialized to 1) is what makes the
    layer time-varying. An input with fewer steps than ``timesteps`` uses the first ones (early
    exit); more steps is an error.
    """

    def __init__(self, num_features: int, *, timesteps: int, eps: float = 1e-5,
                 momentum: float = 0.1) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        if not isinstance(timesteps, int) or timesteps <= 0:
            raise ValueError(f"TEBN needs timesteps, a positive int; got {timesteps!r}")
        self.timesteps = timesteps
        self.step_scale = nn.Parameter(torch.ones(timesteps))

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        steps = _check_steps(x, self.timesteps, "TEBN")
        y = self._batch_norm(x.flatten(0, 1), self.weight, self.bias, self.running_mean,
                             self.running_var).view_as(x)
        return y * self.step_scale[:steps].view(steps, *([1] * (x.dim() - 1)))


class BatchNormThroughTime(SeqNorm):
    """BNTT: ``gamma_t * (x[t] - mu_t) / sqrt(var_t + eps)`` with per-step statistics and gamma.

    ``weight``, ``running_mean`` and ``running_var`` have shape ``[T, C]``; there is no ``bias``
    (BNTT drops beta). An input with fewer steps than ``timesteps`` uses the first ones (early
    exit, BNTT Sec. 3.4); more steps is an error.
    """

    def __init__(self, num_features: int, *, timesteps: int, eps: float = 1e-4,
                 momentum: float = 0.1) -> None:
        if not isinstance(timesteps, int) or timesteps <= 0:
            raise ValueError(f"BNTT needs timesteps, a positive int; got {timesteps!r}")
        super().__init__(num_features, eps=eps, momentum=momentum,
                         stats_shape=(timesteps, num_features), bias=False)
        self.timesteps = timesteps

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        steps = _check_steps(x, self.timesteps, "BNTT")
        c = self.num_features
        # One BN call over [B, T*C, ...]: feature (t, c) gets its own statistics, which is BNTT.
        x_btc = x.movedim(0, 1).reshape(x.shape[1], steps * c, *x.shape[3:])
        y = self._batch_norm(
            x_btc, self.weight[:steps].reshape(-1), None,
            self.running_mean[:steps].view(-1), self.running_var[:steps].view(-1),
        )
        return y.view(x.shape[1], steps, *x.shape[2:]).movedim(1, 0)


class SeqLayerNorm(SeqNorm):
    """LayerNorm over ``(C, H, W)`` of every sample and time step, per-channel affine.

    The normalization BNTT compares against (BNTT Sec. 4.8): statistics of one layer's
    activations per sample, no batch or running statistics.
    """

    def __init__(self, num_features: int, *, eps: float = 1e-5) -> None:
        super().__init__(num_features, eps=eps, running_stats=False)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return F.group_norm(x.flatten(0, 1), 1, self.weight, self.bias, self.eps).view_as(x)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def _check_steps(x: Tensor, timesteps: int, name: str) -> int:
    if x.shape[0] > timesteps:
        raise ValueError(
            f"{name} was built for {timesteps} time steps, got an input with {x.shape[0]}"
        )
    return x.shape[0]


NORMS: dict[str, type[SeqNorm]] = {
    "bn": SeqBatchNorm,
    "tdbn": ThresholdDependentBN,
    "tebn": TemporalEffectiveBN,
    "bntt": BatchNormThroughTime,
    "ln": SeqLayerNorm,
}
#: Other names accepted for a norm wherever a norm name is read (models, presets, CLI).
NORM_ALIASES = {"baseline": "bn", "batchnorm": "bn", "layernorm": "ln"}


def canonical_norm_name(name: str) -> str:
    """The :data:`NORMS` key for ``name`` (an alias resolved); a ValueError listing them if none."""
    key = NORM_ALIASES.get(name, name) if isinstance(name, str) else name
    if key not in NORMS:
        raise ValueError(f"unknown norm {name!r}; valid: {', '.join(NORMS)}")
    return key


def create_norm(name: str, num_features: int, *, timesteps: int | None = None,
                v_threshold: float = MPBN_NEURON["v_threshold"], alpha: float = 1.0,
                **kwargs: float) -> SeqNorm:
    """Build a norm layer by name: ``bn``, ``tdbn``, ``tebn``, ``bntt`` or ``ln``.

    Args:
        name: Norm name (aliases: ``baseline``/``batchnorm`` for ``bn``, ``layernorm``).
        num_features: Channel count.
        timesteps: Number of steps (TEBN and BNTT keep per-step parameters).
        v_threshold: Threshold of the following neurons (tdBN).
        alpha: tdBN's alpha.
        **kwargs: ``eps``, ``momentum``.
    """
    key = canonical_norm_name(name)
    if key == "tdbn":
        return ThresholdDependentBN(num_features, alpha=alpha, v_threshold=v_threshold, **kwargs)
    if key in ("tebn", "bntt"):
        return NORMS[key](num_features, timesteps=timesteps, **kwargs)  # type: ignore[call-arg]
    if key == "ln":
        kwargs.pop("momentum", None)
    return NORMS[key](num_features, **kwargs)  # type: ignore[call-arg]
