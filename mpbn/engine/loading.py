"""Config -> model and checkpoint -> model: the one place a saved model is rebuilt.

:func:`build_model` creates the model of a :class:`~mpbn.engine.config.TrainConfig`;
:func:`load_model` rebuilds the model of a training checkpoint (``last.pt``/``best.pt``) or of
a folded deploy folder (``model.json`` + ``model.safetensors``, :mod:`mpbn.engine.deploy`) and
loads its weights. ``mpbn eval``/``fold``, the analyses and :func:`load_folded` all use it, so
they build the same model with the same defaults. Old checkpoints with a flat config load too
(:meth:`TrainConfig.from_dict` converts it).

Models and datasets of one's own: :func:`import_user_code` imports a config's ``imports``
(module names or ``.py`` files, ``mpbn train --import``) before anything is built, so the
names they register are known; :func:`build_model` then passes the model's builder the
arguments of :func:`create_kwargs` that its signature names (:func:`factory_kwargs`), and
refuses to drop a setting the user changed. docs/OWN_MODEL.md is the worked example.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import sys
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from mpbn.engine.checkpoint import CheckpointError, load_checkpoint, unwrapped_name
from mpbn.engine.config import ConfigError, TrainConfig, apply_overrides, flatten

__all__ = ["DataShape", "LoadedModel", "build_model", "builder_arguments",
           "check_builder_arguments", "create_kwargs", "data_shape_of", "dataset_source",
           "factory_kwargs", "import_user_code", "load_model", "load_state_or_explain",
           "resolve_imports", "user_code_source"]


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


# ------------------------------------------------------------------------------------------
# code of one's own: the config's imports


#: Module name -> the ``imports`` entry that brought it in (run headers name it).
_ENTRY_OF_MODULE: dict[str, str] = {}
#: Dataset name -> the ``imports`` entry whose import registered it.
_ENTRY_OF_DATASET: dict[str, str] = {}
#: Resolved ``.py`` path -> module name, so each file runs once per process.
_IMPORTED_FILES: dict[Path, str] = {}


def _is_file_entry(entry: str) -> bool:
    return entry.endswith(".py") or "/" in entry or os.sep in entry


def resolve_imports(entries: Iterable[str]) -> list[str]:
    """``imports`` entries as a config should record them: ``.py`` paths made absolute (so a
    checkpoint rebuilds from any folder), module names as given."""
    return [str(Path(e).expanduser().resolve()) if _is_file_entry(e) else e
            for e in (e.strip() for e in entries)]


def _user_frame(error: BaseException, filename: str | None) -> str:
    """`` (FILE line N)`` of the deepest frame of ``error`` in ``filename`` (else the last)."""
    frames = traceback.extract_tb(error.__traceback__)
    if isinstance(error, SyntaxError) and error.filename:
        return f" ({error.filename} line {error.lineno})"  # a frame of the importer, not its
    mine = [f for f in frames if filename is not None and f.filename == filename]
    frame = (mine or frames or [None])[-1]
    return "" if frame is None else f" ({frame.filename} line {frame.lineno})"


def _reason(error: BaseException, filename: str | None) -> str:
    """``Type: first line of the message (FILE line N)`` of an exception the import raised."""
    text = error.msg if isinstance(error, SyntaxError) else str(error)
    first = (str(text).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {first}{_user_frame(error, filename)}"


def _import_file(entry: str) -> str:
    path = Path(entry).expanduser().resolve()
    if path in _IMPORTED_FILES:
        return _IMPORTED_FILES[path]
    if not path.is_file():
        where = "" if Path(entry).expanduser().is_absolute() else f" (from {Path.cwd()})"
        raise ConfigError(f"cannot import {entry!r}: no such file{where}; give the .py "
                          "file's path (where it is now) with --import PATH")
    name = path.stem
    if not name.isidentifier():
        raise ConfigError(f"cannot import {entry!r}: {name!r} is not a Python module name; "
                          "rename the file (letters, digits, underscores)")
    taken = sys.modules.get(name)
    taken_file = getattr(taken, "__file__", None)
    if taken_file is not None and Path(taken_file).resolve() == path:
        _IMPORTED_FILES[path] = name  # imported already (`import my_snn` in one's script)
        return name
    if taken is not None and name not in _IMPORTED_FILES.values():
        raise ConfigError(f"cannot import {entry!r}: its module name {name!r} is taken by "
                          f"{taken_file or 'a built-in module'}; "
                          "rename the file")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as `import name` would (dataclasses, pickling need it)
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        sys.modules.pop(name, None)
        raise ConfigError(f"cannot import {entry!r}: {_reason(error, str(path))}") from error
    for old in [p for p, n in _IMPORTED_FILES.items() if n == name]:
        del _IMPORTED_FILES[old]  # the same module name from another file: the newer wins
    _IMPORTED_FILES[path] = name
    return name


def _import_module(entry: str) -> str:
    try:
        try:
            importlib.import_module(entry)
        except ModuleNotFoundError as error:
            # Like uvicorn's --app-dir default: a module in the current folder is found too
            # (the `mpbn` script's sys.path does not hold it, `python -m` does).
            top, cwd = entry.split(".")[0], os.getcwd()
            if error.name != top or cwd in sys.path:
                raise
            sys.path.append(cwd)
            importlib.import_module(entry)
    except ModuleNotFoundError as error:
        if error.name is not None and entry.startswith(error.name):
            raise ConfigError(f"cannot import {entry!r}: no module named {error.name!r} "
                              "(install it, put its folder on PYTHONPATH, or give the path of "
                              "a .py file)") from error
        raise ConfigError(f"cannot import {entry!r}: {_reason(error, None)}") from error
    except Exception as error:
        raise ConfigError(f"cannot import {entry!r}: {_reason(error, None)}") from error
    return entry


def import_user_code(entries: Iterable[str]) -> None:
    """Import each module name or ``.py`` file of a config's ``imports``, once per process.

    Their ``@mpbn.models.register_model`` and ``@mpbn.data.registry.register(...)`` decorators
    run, so the names they register are valid ``model.name``/``data.name`` values. A file is
    imported as the module named by its stem (``my_snn.py`` -> ``my_snn``); relative paths are
    relative to the current folder. A module name is imported normally, the current folder
    being searched last.

    Raises:
        ConfigError: An entry that cannot be imported, in one line naming it and why (no such
            file or module, or the exception its code raised with the file and line).
    """
    from mpbn.data import list_datasets

    for entry in entries:
        before = set(list_datasets())
        name = _import_file(entry) if _is_file_entry(entry) else _import_module(entry)
        _ENTRY_OF_MODULE[name] = entry
        _ENTRY_OF_DATASET.update({d: entry for d in set(list_datasets()) - before})


def user_code_source(builder: Callable[..., Any]) -> str | None:
    """Where a registered model builder comes from: the ``imports`` entry that defined it, its
    module (registered by one's own script), or None for mpbn's own."""
    module = getattr(builder, "__module__", "") or ""
    if module == "mpbn" or module.startswith("mpbn."):
        return None
    return _ENTRY_OF_MODULE.get(module) or _ENTRY_OF_MODULE.get(module.split(".")[0]) or module


def dataset_source(name: str) -> str | None:
    """The ``imports`` entry that registered dataset ``name``, or None (mpbn's own, or one
    registered without ``imports``)."""
    return _ENTRY_OF_DATASET.get(name.lower())


# ------------------------------------------------------------------------------------------
# config -> model


#: The config path of each :func:`create_kwargs` argument that a user can set; the others
#: (``num_classes``, ``in_channels``, ``input_size``) are the dataset's shapes.
_SETTING_OF: dict[str, str] = {
    "timesteps": "model.timesteps", "norm": "model.norm", "mpbn": "model.mpbn",
    "encoding": "model.encoding", "decay": "model.neuron.decay",
    "v_threshold": "model.neuron.v_threshold", "reset": "model.neuron.reset",
    "surrogate": "model.neuron.surrogate", "alpha": "model.neuron.alpha",
}


def builder_arguments(builder: Callable[..., Any]) -> set[str] | None:
    """The keyword arguments ``builder`` names, or None when it takes ``**kwargs`` (all)."""
    params = inspect.signature(builder).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def factory_kwargs(cfg: TrainConfig, info: Any) -> dict[str, Any]:
    """:func:`create_kwargs` cut to what the model's builder accepts.

    A builder with ``**kwargs`` (the zoo's) gets every argument. Otherwise those its
    signature does not name are left out, but only where nothing is lost: the dataset's
    shapes, and settings at the :class:`TrainConfig` default. A ``model.kwargs`` entry or a
    changed setting (``--set model.mpbn=element``) the builder cannot take is an error.

    Raises:
        ConfigError: One line naming the builder, the argument and the setting.
    """
    accepted = check_builder_arguments(cfg)
    kwargs = create_kwargs(cfg, info)
    if accepted is None:
        return kwargs
    return {k: v for k, v in kwargs.items() if k in accepted}


def check_builder_arguments(cfg: TrainConfig) -> set[str] | None:
    """The arguments the model's builder names (None: ``**kwargs``, all), after checking that
    it takes every ``model.kwargs`` entry and every setting changed from its default.

    Raises:
        ConfigError: One line naming the builder, the argument and the setting.
    """
    from mpbn.models._registry import model_builder

    builder = model_builder(cfg.model.name)
    accepted = builder_arguments(builder)
    if accepted is None:
        return None
    values, defaults = flatten(cfg.to_dict()), flatten(TrainConfig().to_dict())
    where = user_code_source(builder)
    label = f"model {cfg.model.name!r}" + (f" ({where})" if where else "")
    unknown = [k for k in cfg.model.kwargs if k not in accepted]
    if unknown:
        raise ConfigError(f"{label} takes no argument {', '.join(map(repr, unknown))}, given "
                          f"in model.kwargs; it takes: {', '.join(sorted(accepted)) or 'nothing'}")
    for key, path in _SETTING_OF.items():
        if key not in accepted and values[path] != defaults[path]:
            raise ConfigError(f"{label} takes no argument {key!r}, so {path}="
                              f"{values[path]} would be ignored; add {key!r} to its signature "
                              f"(or **kwargs), or leave {path} at {defaults[path]}")
    return accepted


def build_model(cfg: TrainConfig, info: Any) -> nn.Module:
    """The config's model for a dataset's shapes, after the config's ``imports`` ran.

    The builder is called with :func:`factory_kwargs` (for the zoo: every argument of
    :func:`create_kwargs`, as ``mpbn.models.create`` takes them).
    """
    import_user_code(cfg.imports)
    model = _call_builder(cfg, factory_kwargs(cfg, info))
    if cfg.run.grad_checkpointing:
        if not hasattr(model, "set_grad_checkpointing"):
            raise ConfigError(f"model {cfg.model.name!r} does not support grad_checkpointing")
        model.set_grad_checkpointing(every=cfg.run.grad_checkpointing)
    return model


def _call_builder(cfg: TrainConfig, kwargs: dict[str, Any]) -> nn.Module:
    from mpbn.models._registry import model_builder

    builder = model_builder(cfg.model.name)
    model = builder(**kwargs)
    if not isinstance(model, nn.Module):
        where = user_code_source(builder)
        raise ConfigError(f"model {cfg.model.name!r}{f' ({where})' if where else ''} returned "
                          f"a {type(model).__name__}, not an nn.Module")
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
    cfg = apply_overrides(cfg, overrides) if overrides else cfg
    # Before the data shapes are read: a dataset of one's own is registered by these too.
    try:
        import_user_code(cfg.imports)
    except ConfigError as error:
        raise ConfigError(f"{path} needs code of its own: {error}") from error
    return cfg


def load_model(checkpoint: str | Path, device: str | torch.device = "cpu",
               overrides: dict[str, Any] | None = None) -> LoadedModel:
    """Rebuild the model saved at ``checkpoint`` and load its weights (eval mode).

    Args:
        checkpoint: A training checkpoint (``seed_<s>/last.pt``, ``best.pt``), or a folder
            written by :func:`mpbn.engine.deploy.export_folded` (the folded model).
        device: Where the model is put.
        overrides: Config overrides (paths or flat names, :func:`apply_overrides`), e.g. the
            data root of another machine, or ``imports`` (code of one's own that moved).

    Raises:
        CheckpointError: Missing, corrupt or foreign file, or weights of another model (one
            line naming the file).
        ConfigError: The config's ``imports`` cannot be imported (one line naming the entry).
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
