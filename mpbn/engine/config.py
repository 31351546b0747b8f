"""The typed training configuration, its validation, and ``key=value`` overrides.

One :class:`TrainConfig` describes an experiment completely; it is saved with every run
(``config.json``) and inside every checkpoint, so a run can be resumed or re-created from it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TrainConfig", "ConfigError", "apply_overrides", "parse_set", "config_diff",
           "RUNTIME_FIELDS"]


class ConfigError(ValueError):
    """A configuration value is invalid; the message is one line saying what is valid."""


@dataclass
class TrainConfig:
    """Everything that defines a training run. Defaults are the demo run (``mpbn train``).

    Attributes:
        name: Run name (the preset name, or ``"default"``).
        description: One line on what the configuration reproduces.
        model: Model name (``mpbn.models.list_models()``).
        dataset: Dataset name (``mpbn.data.list_datasets()``).
        data_root: Dataset folder; ``None`` uses ``$MPBN_DATA/<dataset>``.
        download: Let the data layer fetch missing files.
        split: Dataset split where there are several (CIFAR10-DVS).
        train_subset: Train on a seeded stratified subset of this many samples.
        test_subset: Test on a seeded stratified subset of this many samples.
        timesteps: Number of time steps ``T``.
        norm: Norm after conv/linear layers: ``bn``, ``tdbn``, ``tebn``, ``bntt``, ``ln``.
        mpbn: Membrane potential BN: ``None``, ``"channel"`` or ``"element"``.
        encoding: ``"direct"`` (first layer sees the image each step) or ``"poisson"``.
        decay: LIF leak ``tau`` (MPBN 0.25; BNTT's ``lambda``).
        v_threshold: Firing threshold (MPBN 0.5, BNTT 1.0).
        reset: ``"hard"`` (MPBN) or ``"soft"`` (BNTT).
        surrogate: Surrogate gradient name.
        alpha: Surrogate parameter (``None``: the surrogate's default).
        model_kwargs: Extra keyword arguments for ``mpbn.models.create``.
        epochs: Training epochs.
        batch_size: Global batch size (split over ranks).
        eval_batch_size: Test batch size per rank (``None``: ``batch_size``).
        optimizer: ``"sgd"``, ``"adam"`` or ``"adamw"``.
        lr: Peak learning rate.
        momentum: SGD momentum.
        nesterov: Nesterov momentum for SGD.
        weight_decay: L2 coefficient.
        decay_params: ``"weights"`` (conv/linear weights only: parameters with ndim > 1) or
            ``"all"`` (every parameter, as plain ``SGD(weight_decay=...)`` does).
        schedule: ``"cosine"`` (to 0, per step), ``"step"`` or ``"constant"``.
        milestones: Fractions of the run where ``"step"`` multiplies the lr by ``gamma``.
        gamma: Step-schedule factor.
        warmup_epochs: Linear warm-up epochs before the schedule.
        label_smoothing: Cross-entropy label smoothing.
        grad_clip: Clip the global gradient norm to this value (``None``: off).
        augment: The dataset's training augmentation (crop, flip, Cutout for CIFAR).
        autoaugment: Add AutoAugment on top (MPBN's public code does).
        cutout: Cutout hole side for CIFAR; ``None`` is the data default (16), 0 disables it.
        seed: Base seed; repeat ``i`` uses ``seed + i``.
        seeds: Number of repeats (mean and std are reported).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        amp: bf16 autocast (CUDA only; ignored with a note on CPU).
        compile: ``torch.compile`` the model.
        channels_last: Channels-last memory format for conv weights and inputs (CUDA).
        grad_checkpointing: Recompute the body in backward, this many units (residual blocks
            or ``conv-norm-LIF`` layers) per checkpointed segment; 0 keeps every activation.
            Same gradients, about half the memory, one more forward per step (long ``T``).
        sync_norm: Synchronize norm and MPBN statistics over ranks (DDP).
        num_workers: Loader workers for image-folder datasets.
        log_interval: Steps between progress-bar updates (the only per-step host syncs).
        fold: Fold MPBN into thresholds after training and evaluate the folded model.
    """

    name: str = "default"
    description: str = "small spiking CNN with channel-wise MPBN on the bundled 8x8 digits"
    model: str = "small_cnn"
    dataset: str = "digits"
    data_root: str | None = None
    download: bool = False
    split: str | None = None
    train_subset: int | None = None
    test_subset: int | None = None
    timesteps: int = 4
    norm: str = "bn"
    mpbn: str | None = "channel"
    encoding: str = "direct"
    decay: float = 0.25
    v_threshold: float = 0.5
    reset: str = "hard"
    surrogate: str = "rectangle"
    alpha: float | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 30
    batch_size: int = 64
    eval_batch_size: int | None = 512
    optimizer: str = "sgd"
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
    augment: bool = True
    autoaugment: bool = False
    cutout: int | None = None
    seed: int = 0
    seeds: int = 1
    device: str = "auto"
    amp: bool = False
    compile: bool = False
    channels_last: bool = False
    grad_checkpointing: int = 0
    sync_norm: bool = False
    num_workers: int = 4
    log_interval: int = 20
    fold: bool = True

    # ----------------------------------------------------------------------------------------
    def validate(self) -> TrainConfig:
        """Raise :class:`ConfigError` (one line: what is wrong, what is valid); return self."""
        checks: list[tuple[bool, str]] = [
            (self.timesteps >= 1, f"timesteps must be >= 1, got {self.timesteps}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.eval_batch_size is None or self.eval_batch_size >= 1,
             f"eval_batch_size must be >= 1, got {self.eval_batch_size}"),
            (math.isfinite(self.lr) and self.lr > 0,
             f"lr must be a positive number, got {self.lr}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.seeds >= 1, f"seeds must be >= 1, got {self.seeds}"),
            (self.grad_checkpointing >= 0, "grad_checkpointing must be >= 0 (units per "
             f"checkpointed segment, 0: off), got {self.grad_checkpointing}"),
            (self.seed >= 0, f"seed must be >= 0, got {self.seed}"),
            (0 < self.decay <= 1, f"decay must be in (0, 1], got {self.decay}"),
            (self.v_threshold > 0, f"v_threshold must be > 0, got {self.v_threshold}"),
            (self.warmup_epochs >= 0, f"warmup_epochs must be >= 0, got {self.warmup_epochs}"),
            (self.log_interval >= 1, f"log_interval must be >= 1, got {self.log_interval}"),
            (0 <= self.label_smoothing < 1,
             f"label_smoothing must be in [0, 1), got {self.label_smoothing}"),
            (self.grad_clip is None or self.grad_clip > 0,
             f"grad_clip must be > 0 or None, got {self.grad_clip}"),
            (self.train_subset is None or self.train_subset >= 1,
             f"train_subset must be >= 1, got {self.train_subset}"),
            (self.test_subset is None or self.test_subset >= 1,
             f"test_subset must be >= 1, got {self.test_subset}"),
            (all(0 < m < 1 for m in self.milestones),
             f"milestones are fractions of the run in (0, 1), got {self.milestones}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        choices = {
            "norm": ("bn", "tdbn", "tebn", "bntt", "ln"),
            "mpbn": (None, "channel", "element"),
            "encoding": ("direct", "poisson"),
            "reset": ("hard", "soft"),
            "optimizer": ("sgd", "adam", "adamw"),
            "decay_params": ("weights", "all"),
            "schedule": ("cosine", "step", "constant"),
        }
        for key, valid in choices.items():
            if getattr(self, key) not in valid:
                names = ", ".join("none" if v is None else v for v in valid)
                raise ConfigError(f"{key} must be one of {names}; got {getattr(self, key)!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a saved dict; unknown keys are an error (a newer or foreign config)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}; valid: {', '.join(sorted(names))}")
        return cls(**data)


#: Fields that say how a run executes, not what it computes: they may change on --resume.
#: ``seeds`` is one of them because each seed is an independent run: ``--resume --seeds 3``
#: on a finished one-seed run trains seeds 1 and 2 and reuses seed 0.
RUNTIME_FIELDS = frozenset({"device", "num_workers", "log_interval", "compile", "data_root",
                            "grad_checkpointing",
                            "download", "eval_batch_size", "description", "epochs_this_run",
                            "seeds"})


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _parse_value(key: str, text: str, annotation: Any) -> Any:
    """Convert ``text`` to the type of field ``key`` (``none`` is None for optional fields)."""
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    optional = type(None) in args
    if optional and text.lower() in ("none", "null", ""):
        return None
    if origin in (typing.Union, types.UnionType):
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
            return float(text)
        if annotation is str:
            return text
        if origin is list:
            return [float(v) for v in text.split(",") if v.strip()]
        if origin is dict:
            value = json.loads(text)
            if not isinstance(value, dict):
                raise ValueError
            return value
    except (ValueError, json.JSONDecodeError):
        pass
    kind = getattr(annotation, "__name__", str(annotation))
    if origin is list:
        kind = "comma-separated numbers"
    elif origin is dict:
        kind = "a JSON object"
    raise ConfigError(f"{key}={text!r} is not valid: expected {kind}")


def parse_set(items: list[str]) -> dict[str, Any]:
    """Parse ``["epochs=2", "lr=0.05"]`` into typed values for :func:`apply_overrides`."""
    hints = _field_types()
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if key not in hints:
            raise ConfigError(f"unknown config key {key!r}; valid: {', '.join(sorted(hints))}")
        out[key] = _parse_value(key, text.strip(), hints[key])
    return out


def apply_overrides(config: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """Return a copy of ``config`` with ``overrides`` applied and validated."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ConfigError(f"unknown config keys {unknown}; valid: {', '.join(sorted(names))}")
    values = dict(overrides)
    if values.get("mpbn") == "none":
        values["mpbn"] = None
    return dataclasses.replace(config, **values).validate()


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Keys (outside :data:`RUNTIME_FIELDS`) whose values differ, as ``key: old -> new``."""
    keys = sorted((set(old) | set(new)) - RUNTIME_FIELDS)
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
