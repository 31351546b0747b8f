"""The typed training configuration, its validation, and ``path=value`` overrides.

One :class:`TrainConfig` describes an experiment completely; it is saved with every run
(``config.json``) and inside every checkpoint, so a run can be resumed or re-created from it.
It is nested by role, so names that mean different things in different places do not
collide (the LIF leak ``model.neuron.decay`` vs ``optim.weight_decay``, SGD's
``optim.momentum``, the surrogate's ``model.neuron.alpha``, the step schedule's
``optim.gamma``)::

    TrainConfig(name, description,
                model=ModelConfig(name, timesteps, norm, mpbn, encoding, kwargs,
                                  neuron=NeuronConfig(decay, v_threshold, reset, surrogate,
                                                      alpha)),
                data=DataConfig(name, root, ...), optim=OptimConfig(name, lr, ...),
                run=RunConfig(seed, seeds, device, ...), imports)

Overrides name a field by its dotted path (``optim.lr``, ``model.neuron.decay``) or by a flat
shorthand: the leaf name where it is unique (``lr``, ``epochs``, ``decay``), or one of the flat
names of the configuration before it was nested (:data:`FLAT_ALIASES`: ``model`` is
``model.name``, ``dataset`` is ``data.name``...). :func:`config_fields` lists every path with
its type, default and meaning (``mpbn presets -v`` prints it).

Text is converted once, in :func:`parse_set`: ``none`` becomes ``None`` for optional fields.
Everything after it (validation, the engine, the models) sees Python values only.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import math
import re
import typing
from dataclasses import dataclass, field
from typing import Any

from mpbn.recipes import MPBN_NEURON

__all__ = ["TrainConfig", "ModelConfig", "NeuronConfig", "DataConfig", "OptimConfig",
           "RunConfig", "ConfigError", "FieldDoc", "apply_overrides", "parse_set",
           "config_diff", "config_fields", "resolve_key", "nest_flat_config", "flatten",
           "OPTIMIZERS", "SCHEDULES", "DECAY_PARAMS", "FLAT_ALIASES", "RUNTIME_FIELDS"]

#: Optimizers and learning-rate schedules of :mod:`mpbn.engine.train`.
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "linear", "step", "constant")
#: Which parameters weight decay applies to (see :func:`mpbn.engine.train.param_groups`).
DECAY_PARAMS = ("weights", "all")


class ConfigError(ValueError):
    """A configuration value is invalid; the message is one line saying what is valid."""


def _runtime(default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """A field that says how a run executes, not what it computes: it may change on resume."""
    return field(default=default, metadata={"runtime": True}, **kwargs)


@dataclass
class NeuronConfig:
    """The LIF neuron of every layer; defaults are MPBN's (:data:`mpbn.recipes.MPBN_NEURON`).

    Attributes:
        decay: Membrane leak ``tau`` in (0, 1] (MPBN 0.25; BNTT's ``lambda``).
        v_threshold: Firing threshold (MPBN 0.5, BNTT 1.0).
        reset: ``hard`` (to zero, MPBN) or ``soft`` (subtract the threshold, BNTT).
        surrogate: Surrogate gradient of the spike function.
        alpha: Surrogate parameter (None: the surrogate's default).
    """

    decay: float = MPBN_NEURON["decay"]
    v_threshold: float = MPBN_NEURON["v_threshold"]
    reset: str = MPBN_NEURON["reset"]
    surrogate: str = MPBN_NEURON["surrogate"]
    alpha: float | None = MPBN_NEURON["alpha"]


@dataclass
class ModelConfig:
    """The network: architecture, time steps, norms and neuron.

    Attributes:
        name: Model name (``mpbn.models.list_models()``).
        timesteps: Number of time steps ``T``.
        norm: Norm after conv/linear layers.
        mpbn: Membrane potential BN granularity (None: no MPBN).
        encoding: How a static input enters the first layer (direct: the image every step).
        kwargs: Extra keyword arguments for ``mpbn.models.create`` (e.g. ``{"width": 16}``).
        neuron: The LIF neuron.
    """

    name: str = "small_cnn"
    timesteps: int = 4
    norm: str = "bn"
    mpbn: str | None = "channel"
    encoding: str = "direct"
    kwargs: dict[str, Any] = field(default_factory=dict)
    neuron: NeuronConfig = field(default_factory=NeuronConfig)


@dataclass
class DataConfig:
    """The dataset, its loaders and the training augmentation.

    Attributes:
        name: Dataset name (``mpbn.data.list_datasets()``).
        root: Dataset folder (None: ``$MPBN_DATA/<dataset>``).
        download: Let the data layer fetch missing files.
        split: Dataset split where there are several (CIFAR10-DVS: ``9to1``/``first100``;
            DVS128 Gesture: ``official-64``/``official-128``/``official-48``, the frame size).
        holdout: Hold out this many training samples (a fixed class-stratified draw, the same
            for every seed: :func:`mpbn.data.sampling.holdout_split`) and evaluate on them after
            every epoch (``run.eval_every``); the test set is then evaluated once, after the
            last epoch. Choose hyperparameters on the held-out accuracy, never on the test one.
        train_subset: Train on a seeded stratified subset of this many samples (drawn from
            what ``holdout`` leaves).
        test_subset: Test on a seeded stratified subset of this many samples.
        batch_size: Global training batch size (split over ranks).
        eval_batch_size: Test batch size per rank (None: ``batch_size``).
        augment: The dataset's training augmentation (crop, flip, Cutout for CIFAR).
        autoaugment: Add AutoAugment on top (MPBN's public code does).
        cutout: Cutout hole side for CIFAR (None: the data default, 16; 0 disables it).
        num_workers: Loader workers for image-folder datasets.
    """

    name: str = "digits"
    root: str | None = _runtime(None)
    download: bool = _runtime(False)
    split: str | None = None
    holdout: int | None = None
    train_subset: int | None = None
    test_subset: int | None = None
    batch_size: int = 64
    eval_batch_size: int | None = _runtime(512)
    augment: bool = True
    autoaugment: bool = False
    cutout: int | None = None
    num_workers: int = _runtime(4)


@dataclass
class OptimConfig:
    """Optimizer, learning-rate schedule and loss.

    Attributes:
        name: Optimizer.
        epochs: Training epochs.
        lr: Peak learning rate.
        momentum: SGD momentum in [0, 1).
        nesterov: Nesterov momentum for SGD.
        weight_decay: L2 coefficient.
        decay_params: Parameters weight decay applies to (weights: parameters with two or
            more dimensions outside norm layers, i.e. conv, linear and a user's own layers'
            weights, no norm or MPBN scale or bias whatever its shape, nothing a model's
            ``no_weight_decay()`` names: :func:`mpbn.engine.optim.param_groups`; all: every
            parameter, as plain ``SGD(weight_decay=...)`` does).
        schedule: Learning-rate schedule after the warm-up, per step (cosine: to 0; linear: a
            straight line to 0, with the warm-up the one-cycle "triangle"; step: ``gamma`` at
            the ``milestones``; constant).
        milestones: Fractions of the run where the step schedule multiplies the lr by gamma.
        gamma: Step-schedule factor.
        warmup_epochs: Linear warm-up epochs before the schedule.
        label_smoothing: Cross-entropy label smoothing in [0, 1).
        grad_clip: Clip the global gradient norm to this value (None: off).
        ema_decay: Keep an exponential moving average of the weights and norm statistics,
            ``W_ema <- d * W_ema + (1 - d) * W`` after every step, in [0, 1); the average is
            what is evaluated, kept and folded (mpbn.engine.ema). 0: off.
        membrane_norm_lr: Multiplier of the learning rate for MPBN's scales and shifts
            (lambda, beta of Eq. 7), > 0. 1: the same lr as every other parameter (the
            papers). Element-wise MPBN's per-neuron pairs each get the gradient of one
            position, a channel's pair that of all ``H * W``, so they move far less at the
            same lr (docs/RESULTS.md).
    """

    name: str = "sgd"
    epochs: int = 30
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    decay_params: str = "weights"
    schedule: str = "cosine"
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.7, 0.9])
    gamma: float = 0.1
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    ema_decay: float = 0.0
    membrane_norm_lr: float = 1.0


@dataclass
class RunConfig:
    """Seeds, device and execution settings.

    Attributes:
        seed: Base seed; repeat ``i`` uses ``seed + i``.
        seeds: Number of repeats (mean and std are reported); more seeds may be added on
            resume, each seed being an independent run.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``...
        amp: bf16 autocast of the training forward pass (CUDA or CPU; on CPU fast only where
            it has native bf16 instructions, e.g. AVX512-BF16 or AMX). Evaluation stays
            float32: bf16 rounding flips spikes near the threshold.
        compile: ``torch.compile`` the model.
        channels_last: Channels-last memory format for conv weights and inputs (CUDA).
        grad_checkpointing: Recompute the body in backward, this many units (residual blocks
            or conv-norm-LIF layers) per checkpointed segment; 0 keeps every activation.
        sync_norm: Synchronize norm and MPBN statistics over ranks (DDP).
        log_interval: Steps between progress-bar updates (the only per-step host syncs).
        checkpoint_every: Also write ``last.pt`` every this many optimizer steps (global
            steps) within an epoch, from which ``--resume`` continues mid-epoch exactly; 0:
            at epoch ends only. Needs a training loader with ``state_dict``/``load_state_dict``
            (every built-in dataset's: in-memory ``DeviceLoader``, image-folder ``FolderLoader``).
        fold: Fold MPBN into thresholds after training and evaluate the folded model.
        tta_flip: Also evaluate the final model on the test set with horizontal-flip test-time
            augmentation (mean of the logits of the image and its mirror), reported separately
            as ``test_acc_flip``; the headline stays the plain accuracy.
        eval_every: Evaluate the per-epoch split (the held-out one with ``data.holdout``,
            else the test set) after every this many epochs and always after the last; 0:
            after the last only. A skipped epoch's ``metrics.jsonl`` record has its training
            keys only and ``best.pt`` is the best evaluated epoch. Training is the same
            whatever the cadence (evaluation runs under its own RNG), so it may change on
            resume. With ``data.holdout=None`` and 0 the test set is looked at once: train on
            every training sample with no per-epoch look at the test set.
    """

    seed: int = 0
    seeds: int = _runtime(1)
    device: str = _runtime("auto")
    amp: bool = False
    compile: bool = _runtime(False)
    channels_last: bool = False
    grad_checkpointing: int = _runtime(0)
    sync_norm: bool = False
    log_interval: int = _runtime(20)
    checkpoint_every: int = _runtime(0)
    fold: bool = True
    tta_flip: bool = False
    eval_every: int = _runtime(1)


@dataclass
class TrainConfig:
    """Everything that defines a training run. Defaults are the demo run (``mpbn train``).

    Attributes:
        name: Run name (the preset name, or ``default``).
        description: One line on what the configuration reproduces.
        model: The network and its neuron.
        data: Dataset, loaders, augmentation.
        optim: Optimizer, schedule, loss.
        run: Seeds, device, execution.
        imports: Code of one's own imported before the model and data are built: module names
            or paths of .py files (``mpbn train --import``) whose ``@register_model`` and
            ``@mpbn.data.registry.register`` make their names valid ``model.name`` and
            ``data.name`` values; checkpoints rebuild from them (docs/OWN_MODEL.md).
    """

    name: str = "default"
    description: str = _runtime(
        "small spiking CNN with channel-wise MPBN on the bundled 8x8 digits")
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    # Where code is found, not what it computes: a moved file may be given anew on --resume.
    imports: list[str] = _runtime(default_factory=list)

    # ----------------------------------------------------------------------------------------
    def validate(self) -> TrainConfig:
        """Raise :class:`ConfigError` (one line: what is wrong, what is valid); return self."""
        m, n, d, o, r = self.model, self.model.neuron, self.data, self.optim, self.run
        checks: list[tuple[bool, str, Any]] = [
            (m.timesteps >= 1, "model.timesteps must be >= 1", m.timesteps),
            (0 < n.decay <= 1, "model.neuron.decay must be in (0, 1]", n.decay),
            (n.v_threshold > 0, "model.neuron.v_threshold must be > 0", n.v_threshold),
            (d.batch_size >= 1, "data.batch_size must be >= 1", d.batch_size),
            (d.eval_batch_size is None or d.eval_batch_size >= 1,
             "data.eval_batch_size must be >= 1", d.eval_batch_size),
            (d.train_subset is None or d.train_subset >= 1, "data.train_subset must be >= 1",
             d.train_subset),
            (d.holdout is None or d.holdout >= 1, "data.holdout must be >= 1 (training samples "
             "held out) or None", d.holdout),
            (d.test_subset is None or d.test_subset >= 1, "data.test_subset must be >= 1",
             d.test_subset),
            (o.epochs >= 1, "optim.epochs must be >= 1", o.epochs),
            (math.isfinite(o.lr) and o.lr > 0, "optim.lr must be a positive number", o.lr),
            (0 <= o.momentum < 1, "optim.momentum must be in [0, 1)", o.momentum),
            (o.weight_decay >= 0, "optim.weight_decay must be >= 0", o.weight_decay),
            (o.warmup_epochs >= 0, "optim.warmup_epochs must be >= 0", o.warmup_epochs),
            (0 <= o.label_smoothing < 1, "optim.label_smoothing must be in [0, 1)",
             o.label_smoothing),
            (o.grad_clip is None or o.grad_clip > 0, "optim.grad_clip must be > 0 or None",
             o.grad_clip),
            (0 <= o.ema_decay < 1, "optim.ema_decay must be in [0, 1) (0: no weight average)",
             o.ema_decay),
            (math.isfinite(o.membrane_norm_lr) and o.membrane_norm_lr > 0,
             "optim.membrane_norm_lr must be a positive number (1: MPBN's scale and shift at the "
             "run's lr)", o.membrane_norm_lr),
            (all(0 < v < 1 for v in o.milestones),
             "optim.milestones are fractions of the run in (0, 1)", o.milestones),
            (r.seed >= 0, "run.seed must be >= 0", r.seed),
            (r.seeds >= 1, "run.seeds must be >= 1", r.seeds),
            (r.eval_every >= 0, "run.eval_every must be >= 0 (epochs between evaluations, 0: "
             "after the last epoch only)", r.eval_every),
            (r.grad_checkpointing >= 0, "run.grad_checkpointing must be >= 0 (units per "
             "checkpointed segment, 0: off)", r.grad_checkpointing),
            (r.log_interval >= 1, "run.log_interval must be >= 1", r.log_interval),
            (r.checkpoint_every >= 0, "run.checkpoint_every must be >= 0 (optimizer steps "
             "between mid-epoch checkpoints, 0: at epoch ends only)", r.checkpoint_every),
            (isinstance(self.imports, list)
             and all(isinstance(e, str) and e.strip() for e in self.imports),
             "imports must be a list of module names or .py file paths", self.imports),
        ]
        for ok, message, value in checks:
            if not ok:
                raise ConfigError(f"{message}, got {value}")
        values = flatten(self.to_dict())
        for path, valid in choices().items():
            value = values[path]
            if value not in valid:
                names = ", ".join("none" if v is None else v for v in valid)
                hint = " (use None, not the string 'none')" if value == "none" else ""
                raise ConfigError(f"{path} must be one of {names}; got {value!r}{hint}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """The nested dict of every field (``config.json``, checkpoints, summaries)."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a saved dict: the nested layout, or the flat one of older runs.

        Missing fields take their defaults; an unknown key is an error (a newer or foreign
        config).
        """
        if _is_flat(data):
            data = nest_flat_config(data)
        return _build(cls, data, "")


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"config section {prefix.rstrip('.') or 'root'} must be a mapping, "
                          f"got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config keys {[prefix + k for k in unknown]}; valid: "
                          f"{', '.join(prefix + k for k in fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in data.items():
        kind = hints[name]
        values[name] = (_build(kind, value, f"{prefix}{name}.")
                        if dataclasses.is_dataclass(kind) else value)
    return cls(**values)


def choices() -> dict[str, tuple[Any, ...]]:
    """Valid values of the fields with a fixed set of choices, from the modules that own them."""
    from mpbn.functional import RESETS, SURROGATES
    from mpbn.layers import MEMBRANE_NORMS, NORMS
    from mpbn.layers.norm import NORM_ALIASES
    from mpbn.models import ENCODINGS

    return {
        "model.norm": (*NORMS, *NORM_ALIASES),
        "model.mpbn": (None, *MEMBRANE_NORMS),
        "model.encoding": tuple(ENCODINGS),
        "model.neuron.reset": tuple(RESETS),
        "model.neuron.surrogate": tuple(SURROGATES),
        "optim.name": OPTIMIZERS,
        "optim.decay_params": DECAY_PARAMS,
        "optim.schedule": SCHEDULES,
    }


# ------------------------------------------------------------------------------------------
# paths, shorthands, the flat layout of older runs


def _leaves(cls: type = TrainConfig, prefix: str = "") -> dict[str, dataclasses.Field]:
    """``{dotted path: dataclass field}`` of every leaf field, in declaration order."""
    hints = typing.get_type_hints(cls)
    out: dict[str, dataclasses.Field] = {}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(_leaves(hints[f.name], f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = f
    return out


def _leaf_types(cls: type = TrainConfig, prefix: str = "") -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(_leaf_types(hints[f.name], f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = hints[f.name]
    return out


#: Flat names of the configuration before it was nested whose leaf was renamed; every other
#: old flat name is the (unique) leaf name of its new path.
FLAT_ALIASES: dict[str, str] = {
    "model": "model.name", "model_kwargs": "model.kwargs", "dataset": "data.name",
    "data_root": "data.root", "optimizer": "optim.name",
}


def _shorthands() -> dict[str, str]:
    """``{flat name: path}``: top-level fields, :data:`FLAT_ALIASES`, unique leaf names."""
    paths = list(_leaves())
    by_leaf: dict[str, list[str]] = {}
    for path in paths:
        by_leaf.setdefault(path.rsplit(".", 1)[-1], []).append(path)
    out = {leaf: found[0] for leaf, found in by_leaf.items() if len(found) == 1}
    out.update({p: p for p in paths if "." not in p})
    out.update(FLAT_ALIASES)
    return out


_PATHS = _leaves()
_TYPES = _leaf_types()
_SHORT = _shorthands()


def resolve_key(key: str) -> str:
    """The dotted path of an override key: a path, or a flat shorthand (``lr``, ``model``).

    Raises:
        ConfigError: Unknown or ambiguous key (one line with what is valid).
    """
    key = key.strip().replace("-", "_")
    if key in _PATHS:
        return key
    if key in _SHORT:
        return _SHORT[key]
    matches = [p for p in _PATHS if p.rsplit(".", 1)[-1] == key]
    if matches:
        raise ConfigError(f"config key {key!r} is ambiguous: use one of {', '.join(matches)}")
    close = [n if n in _PATHS else f"{n} ({_SHORT[n]})"
             for n in difflib.get_close_matches(key, [*_SHORT, *_PATHS], n=3, cutoff=0.7)]
    close = close or [p for p in _PATHS if key in p][:6]
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ConfigError(f"unknown config key {key!r}{hint}; `mpbn presets -v` lists the "
                      f"{len(_PATHS)} valid paths")


def _is_flat(data: dict[str, Any]) -> bool:
    top = {f.name for f in dataclasses.fields(TrainConfig)}
    return isinstance(data.get("model"), str) or bool(set(data) - top)


def nest_flat_config(flat: dict[str, Any]) -> dict[str, Any]:
    """The nested dict of a flat config (``config.json`` and checkpoints of older runs).

    Every flat name maps to one path (:func:`resolve_key`); a key that maps to none is an
    error saying which keys the older layout had.
    """
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        try:
            path = resolve_key(key)
        except ConfigError:
            raise ConfigError(f"config key {key!r} is neither a field of the nested config nor "
                              "of the flat one of older runs (model, dataset, lr, decay, ...)"
                              ) from None
        *sections, leaf = path.split(".")
        target = nested
        for section in sections:
            target = target.setdefault(section, {})
        target[leaf] = value
    return nested


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{dotted path: value}`` of a nested config dict (``model.kwargs`` stays one value)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = prefix + key
        if isinstance(value, dict) and path not in _PATHS:
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


# ------------------------------------------------------------------------------------------
# overrides


def _finite(value: float) -> float:
    # float() accepts nan/inf; a NaN alpha or lr trains to NaN weights and "finishes".
    if not math.isfinite(value):
        raise ValueError(value)
    return value


def _parse_value(key: str, text: str, annotation: Any) -> Any:
    """Convert ``text`` to the type of field ``key`` (``none`` is None for optional fields)."""
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    optional = type(None) in args
    if optional and text.lower() in ("none", "null", ""):
        return None
    if optional:
        annotation = next(a for a in args if a is not type(None))
        origin = typing.get_origin(annotation)
    try:
        if annotation is bool:
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if annotation is int:
            return int(text)
        if annotation is float:
            return _finite(float(text))
        if annotation is str:
            return text
        if origin is list and typing.get_args(annotation) == (str,):
            return [v.strip() for v in text.split(",") if v.strip()]
        if origin is list:
            return [_finite(float(v)) for v in text.split(",") if v.strip()]
        if origin is dict:
            value = json.loads(text)
            if not isinstance(value, dict):
                raise ValueError
            return value
    except (ValueError, json.JSONDecodeError):
        pass
    kind = getattr(annotation, "__name__", str(annotation))
    if annotation is float:
        kind = "a finite number (not nan or inf)"
    elif origin is list and typing.get_args(annotation) == (str,):
        kind = "comma-separated names"
    elif origin is list:
        kind = "comma-separated finite numbers"
    elif origin is dict:
        kind = "a JSON object"
    raise ConfigError(f"{key}={text!r} is not valid: expected {kind}")


def parse_set(items: list[str]) -> dict[str, Any]:
    """Parse ``["optim.lr=0.05", "epochs=2", "mpbn=none"]`` into ``{path: typed value}``.

    The one place where text becomes values: ``none``/``null`` is None for optional fields.
    """
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        path = resolve_key(key)
        out[path] = _parse_value(key.strip(), text.strip(), _TYPES[path])
    return out


def apply_overrides(config: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """Return a validated copy of ``config`` with ``overrides`` applied.

    Keys are dotted paths (``optim.lr``) or flat shorthands (``lr``, ``model``, ``dataset``:
    see :func:`resolve_key`); values are Python values (None, not ``"none"``).
    """
    values = flatten(config.to_dict())
    for key, value in overrides.items():
        values[resolve_key(key)] = value
    return TrainConfig.from_dict(nest_flat_config(values)).validate()


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Paths (outside :data:`RUNTIME_FIELDS`) whose values differ, as ``path: old -> new``.

    Either dict may be nested or in the flat layout of older runs; both are compared as
    full configurations, so a field an older run did not store compares as its default.
    """
    a = flatten(TrainConfig.from_dict(old).to_dict())
    b = flatten(TrainConfig.from_dict(new).to_dict())
    return [f"{k}: {a[k]!r} -> {b[k]!r}" for k in a if k not in RUNTIME_FIELDS and a[k] != b[k]]


#: Paths that say how a run executes, not what it computes: they may change on --resume.
#: ``run.seeds`` is one of them because each seed is an independent run: ``--resume --seeds 3``
#: on a finished one-seed run trains seeds 1 and 2 and reuses seed 0.
RUNTIME_FIELDS = frozenset(p for p, f in _PATHS.items() if f.metadata.get("runtime"))


# ------------------------------------------------------------------------------------------
# documentation of every path, generated from the dataclasses and their docstrings


@dataclass(frozen=True)
class FieldDoc:
    """One ``--set`` path: its type, default, meaning and flat shorthand."""

    path: str
    type: str
    default: Any
    doc: str
    shorthand: str | None
    choices: tuple[Any, ...] | None
    runtime: bool


def _attribute_docs(cls: type) -> dict[str, str]:
    """``{name: text}`` of the ``Attributes:`` section of a Google-style class docstring."""
    lines = inspect.cleandoc(cls.__doc__ or "").split("Attributes:", 1)[-1].splitlines()
    docs: dict[str, str] = {}
    name = None
    for line in lines:
        match = re.match(r"^ {4}(\w+): (.*)$", line)
        if match:
            name, text = match.groups()
            docs[name] = text.strip()
        elif name and line.startswith(" " * 8):
            docs[name] += " " + line.strip()
        elif line.strip():
            name = None
    return docs


def config_fields() -> list[FieldDoc]:
    """Every override path of :class:`TrainConfig` with its type, default and meaning."""
    short = {path: key for key, path in _shorthands().items() if key != path}
    valid = choices()
    defaults = flatten(TrainConfig().to_dict())
    out = []

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        docs = _attribute_docs(cls)
        for f in dataclasses.fields(cls):
            path = prefix + f.name
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], path + ".")
                continue
            out.append(FieldDoc(path=path, type=str(f.type), default=defaults[path],
                                doc=docs.get(f.name, ""), shorthand=short.get(path),
                                choices=valid.get(path), runtime=path in RUNTIME_FIELDS))

    walk(TrainConfig, "")
    return out
