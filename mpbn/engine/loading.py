"""Config -> model and checkpoint -> model: the one place a saved model is rebuilt.

:func:`build_model` creates the model of a :class:`~mpbn.engine.config.TrainConfig`;
:func:`load_model` rebuilds the model of a training checkpoint (``last.pt``/``best.pt``) or of
a folded deploy folder (``model.json`` + ``model.safetensors``, :mod:`mpbn.engine.deploy`) and
loads its weights. ``mpbn eval``/``fold``, the analyses and :func:`load_folded` all use it, so
they build the same model with the same defaults. Old checkpoints with a flat config load too
(:meth:`TrainConfig.from_dict` converts it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from mpbn.engine.checkpoint import CheckpointError, load_checkpoint, unwrapped_name
from mpbn.engine.config import ConfigError, TrainConfig, apply_overrides

__all__ = ["DataShape", "LoadedModel", "build_model", "create_kwargs", "load_model",
           "load_state_or_explain", "data_shape_of"]


class DataShape(NamedTuple):
    """What a model needs to know of its dataset (stored as ``data_info`` in checkpoints)."""

    num_classes: int
    input_shape: tuple[int, ...]


class LoadedModel(NamedTuple):
    """A rebuilt model (eval mode), its config, and the checkpoint payload it came from."""

    model: nn.Module
    config: TrainConfig
    checkpoint: dict[str, Any]


def create_kwargs(cfg: TrainConfig, info: Any) -> dict[str, Any]:
    """The ``mpbn.models.create`` keyword arguments of ``cfg`` for a dataset's shapes."""
    model, neuron = cfg.model, cfg.model.neuron
    shape = tuple(info.input_shape)
    kwargs: dict[str, Any] = dict(
        num_classes=info.num_classes, timesteps=model.timesteps, norm=model.norm,
        mpbn=model.mpbn, in_channels=shape[0], encoding=model.encoding, decay=neuron.decay,
        v_threshold=neuron.v_threshold, reset=neuron.reset, surrogate=neuron.surrogate,
    )
    if neuron.alpha is not None:
        kwargs["alpha"] = neuron.alpha
    if len(shape) == 3:
        kwargs["input_size"] = shape[1:]
    kwargs.update(model.kwargs)
    return kwargs


def build_model(cfg: TrainConfig, info: Any) -> nn.Module:
    """``mpbn.models.create`` with the config's architecture and the dataset's shapes."""
    from mpbn import models

    model = models.create(cfg.model.name, **create_kwargs(cfg, info))
    if cfg.run.grad_checkpointing:
        if not hasattr(model, "set_grad_checkpointing"):
            raise ConfigError(f"model {cfg.model.name!r} does not support grad_checkpointing")
        model.set_grad_checkpointing(every=cfg.run.grad_checkpointing)
    return model


def load_state_or_explain(model: nn.Module, state: dict[str, Tensor], path: Path) -> None:
    """``load_state_dict`` with a one-line error when the checkpoint is of another model.

    Checkpoints of compiled or DDP-wrapped models prefix their keys; the prefixes are dropped.
    """
    state = {unwrapped_name(k): v for k, v in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).splitlines()[0:2]
        raise CheckpointError(f"checkpoint {path} does not fit this model: "
                              f"{' '.join(s.strip() for s in first)[:240]}") from None


def data_shape_of(cfg: TrainConfig, data_info: Any = None) -> DataShape:
    """The dataset shapes of a saved model: its ``data_info``, else read from the dataset."""
    if isinstance(data_info, dict):
        return DataShape(int(data_info["num_classes"]),
                         tuple(int(s) for s in data_info["input_shape"]))
    from mpbn.data import create_loaders

    d = cfg.data
    _, _, info = create_loaders(d.name, d.root, batch_size=1, augment=False, num_workers=0,
                                test_subset=1, train_subset=1, split=d.split)
    return DataShape(int(info.num_classes), tuple(info.input_shape))


def _config_of(saved: Any, path: Path, overrides: dict[str, Any] | None) -> TrainConfig:
    try:
        cfg = TrainConfig.from_dict(saved)
    except (ConfigError, TypeError) as error:
        raise CheckpointError(f"checkpoint {path} has an unusable config: {error}") from None
    return apply_overrides(cfg, overrides) if overrides else cfg


def load_model(checkpoint: str | Path, device: str | torch.device = "cpu",
               overrides: dict[str, Any] | None = None) -> LoadedModel:
    """Rebuild the model saved at ``checkpoint`` and load its weights (eval mode).

    Args:
        checkpoint: A training checkpoint (``seed_<s>/last.pt``, ``best.pt``), or a folder
            written by :func:`mpbn.engine.deploy.export_folded` (the folded model).
        device: Where the model is put.
        overrides: Config overrides (paths or flat names, :func:`apply_overrides`), e.g. the
            data root of another machine.

    Raises:
        CheckpointError: Missing, corrupt or foreign file, or weights of another model (one
            line naming the file).
    """
    path = Path(checkpoint)
    if path.is_dir():
        return _load_folded(path, device, overrides)
    ckpt = load_checkpoint(path, map_location=device)
    cfg = _config_of(ckpt["config"], path, overrides)
    model = build_model(cfg, data_shape_of(cfg, ckpt.get("data_info"))).to(device)
    load_state_or_explain(model, ckpt["model"], path)
    return LoadedModel(model.eval(), cfg, ckpt)


# A folded LIF's thresholds are per-channel/per-element tensors, and threshold_sign exists
# only where some MPBN scale was negative: the file says which tensors each neuron has.
_LIF_TENSORS = ("v_threshold", "threshold_sign", "reset_amount")


def _load_folded(folder: Path, device: str | torch.device,
                 overrides: dict[str, Any] | None) -> LoadedModel:
    from safetensors.torch import load_file

    from mpbn.layers.fold import fold

    meta_path, weights = folder / "model.json", folder / "model.safetensors"
    if not meta_path.is_file() or not weights.is_file():
        raise CheckpointError(f"{folder} is not a folded model folder (needs model.json and "
                              "model.safetensors, written by `mpbn fold`)")
    meta = json.loads(meta_path.read_text())
    cfg = _config_of(meta.get("config", {}), meta_path, overrides)
    model = fold(build_model(cfg, data_shape_of(cfg, meta.get("data_info"))))
    state = load_file(str(weights), device=str(device))
    _match_folded_neurons(model, state)
    load_state_or_explain(model, state, weights)
    return LoadedModel(model.to(device).eval(), cfg, meta)


def _match_folded_neurons(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Replace each LIF of ``model`` by one built with the threshold tensors ``state`` has."""
    from mpbn.layers.neuron import LIF

    for name, module in list(model.named_modules()):
        if not isinstance(module, LIF):
            continue
        tensors = {k: state[f"{name}.{k}"] for k in _LIF_TENSORS if f"{name}.{k}" in state}
        if not tensors:
            continue
        settings = dict(decay=module.decay, v_threshold=module.v_threshold, reset=module.reset,
                        surrogate=module.surrogate, alpha=module.alpha,
                        threshold_sign=module.threshold_sign, reset_amount=module.reset_amount,
                        detach_reset=module.detach_reset, backend=module.backend)
        settings.update(tensors)
        if "threshold_sign" not in tensors:
            settings["threshold_sign"] = None
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, LIF(**settings))
