"""A name -> builder registry, like timm's ``register_model`` / ``create_model``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

__all__ = ["register_model", "create", "list_models", "is_model", "model_builder"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])


def register_model(fn: Builder) -> Builder:
    """Register a builder under its function name (decorator).

    The builder takes keyword arguments (``num_classes``, ``timesteps``, ``norm``, ``mpbn``,
    ``neuron``, LIF keywords, and family-specific ones) and returns the model. ``mpbn train``
    passes a builder only the arguments its signature names, unless it takes ``**kwargs``
    (:func:`mpbn.engine.loading.factory_kwargs`).

    Registering a name again is an error, except for the same function of the same module
    (a module imported anew, e.g. ``mpbn train --import`` of a file in a fresh folder): the
    newer definition replaces the older.
    """
    name = fn.__name__
    old = _MODELS.get(name)
    if old is not None and old is not fn and (
            (old.__module__, old.__qualname__) != (fn.__module__, fn.__qualname__)):
        raise ValueError(f"model {name!r} is already registered (by {old.__module__}); "
                         "give the builder another name")
    _MODELS[name] = fn
    return fn


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_MODELS)


def is_model(name: str) -> bool:
    return name in _MODELS


def model_builder(name: str) -> Callable[..., nn.Module]:
    """The function registered as ``name``.

    Raises:
        ValueError: Unknown model name (the message lists the registered names).
    """
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(list_models())}")
    return _MODELS[name]


def create(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model, e.g. ``create("resnet19", timesteps=2, mpbn="channel")``.

    Common keyword arguments: ``num_classes``, ``timesteps``, ``norm`` (``bn``, ``tdbn``,
    ``tebn``, ``bntt``, ``ln``), ``mpbn`` (``none``, ``channel``, ``element``), ``neuron`` (a
    dict of LIF options) or the LIF options directly (``decay``, ``v_threshold``, ``reset``,
    ``surrogate``, ``alpha``), ``encoding``, ``in_channels``, ``input_size``, ``width``.

    Raises:
        ValueError: Unknown model name (the message lists the registered names), norm or mpbn.
    """
    return model_builder(name)(**kwargs)
