"""The layer factories a zoo model hands to its blocks (timm's ``norm_layer`` style).

A builder validates the model-level switches once (:func:`make_factories`); a block then calls
``layers.norm(planes)`` and ``layers.neuron(planes, (planes, h, w))`` with its own width, so
MPBN and the per-step norms get their sizes without the block knowing which norm or neuron
was chosen.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

from mpbn.layers.neuron import LIF, canonical_membrane_norm, create_neuron
from mpbn.layers.norm import SeqNorm, canonical_norm_name, create_norm

__all__ = ["LayerFactories", "make_factories", "split_neuron_kwargs", "tdbn_residual_alpha"]

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
        norm: Conv norm name (``bn``, ``tdbn``, ``tebn``, ``bntt``, ``ln``, or an alias of
            :data:`mpbn.layers.norm.NORM_ALIASES`).
        mpbn: ``None``/``"none"``, ``"channel"`` or ``"element"``.
        timesteps: ``T`` (per-step norms keep ``T`` sets of parameters).
        neuron: LIF keyword arguments (``decay``, ``v_threshold``, ``reset``, ...).
        defaults: The model family's LIF settings, a table of :mod:`mpbn.recipes`.
        overrides: LIF keywords given directly to the model builder; they win over ``neuron``.
    """
    key = canonical_norm_name(norm)
    membrane = canonical_membrane_norm(mpbn)
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


def tdbn_residual_alpha() -> float:
    """tdBN's ``alpha`` for the norms whose outputs are summed in a residual block (1/sqrt 2)."""
    return 1.0 / math.sqrt(2.0)
