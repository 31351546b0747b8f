"""A name -> builder registry, like timm's ``register_model`` / ``create_model``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

__all__ = ["register_model", "create", "list_models", "is_model"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])


def register_model(fn: Builder) -> Builder:
    """Register a builder under its function name (decorator).

    The builder takes keyword arguments (``num_classes``, ``timesteps``, ``norm``, ``mpbn``,
    ``neuron``, LIF keywords, and family-specific ones) and returns the model.
    """
    name = fn.__name__
    if name in _MODELS and _MODELS[name] is not fn:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = fn
    return fn


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_MODELS)


def is_model(name: str) -> bool:
    return name in _MODELS


def create(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model, e.g. ``create("resnet19", timesteps=2, mpbn="channel")``.

    Common keyword arguments: ``num_classes``, ``timesteps``, ``norm`` (``bn``, ``tdbn``,
    ``tebn``, ``bntt``, ``ln``), ``mpbn`` (``none``, ``channel``, ``element``), ``neuron`` (a
    dict of LIF options) or the LIF options directly (``decay``, ``v_threshold``, ``reset``,
    ``surrogate``, ``alpha``), ``encoding``, ``in_channels``, ``input_size``, ``width``.

    Raises:
        ValueError: Unknown model name (the message lists the registered names), norm or mpbn.
    """
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(list_models())}")
    return _MODELS[name](**kwargs)
