"""What distinguishes runs: their config differences, in labels and in comparison warnings.

A run is named after its preset (or ``config.name``), so two runs of one preset with different
``--set`` overrides share a name, and a run given an override keeps the preset's name.
:func:`run_labels` adds what the name does not say, from the configs: ``"r1 (mpbn=channel,
T=2)"``. :func:`comparison_warnings` says when two compared runs differ in more than the
variable the comparison is about. Runtime fields (where the data is, the device, the seeds,
worker counts; :data:`RUNTIME_FIELDS`) never count as differences.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from mpbn.analysis.io import Run

__all__ = ["RUNTIME_FIELDS", "flat_config", "config_differences", "short_name", "run_labels",
           "comparison_warnings", "slug"]

#: Config paths that do not change what is trained: names, where the data is, the device and
#: process set-up, the seeds (compared runs are meant to differ in seeds), logging.
RUNTIME_FIELDS = frozenset({
    "name", "description", "imports",
    "data.root", "data.download", "data.num_workers", "data.eval_batch_size",
    "run.seed", "run.seeds", "run.device", "run.log_interval", "run.compile",
    "run.channels_last", "run.grad_checkpointing", "run.fold", "run.checkpoint_every",
    "run.tensorboard", "run.progress",
})

_SHORT = {"model.timesteps": "T", "model.name": "model", "data.name": "dataset",
          "optim.name": "optimizer"}


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model.mpbn": "channel", ...}``: a nested config flattened to dotted paths."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flat_config(value, path + "."))
        else:
            flat[path] = value
    return flat


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in flat_config(config).items() if k not in RUNTIME_FIELDS}


def config_differences(configs: Sequence[dict[str, Any]]) -> list[str]:
    """Config paths (outside :data:`RUNTIME_FIELDS`) whose values are not the same in every
    config, in config order; a path missing from one config differs. Empty configs (a run
    folder without ``config.json``) say nothing and are left out."""
    flats = [_comparable(c) for c in configs if c]
    paths = list(dict.fromkeys(k for f in flats for k in f))
    missing = object()
    return [p for p in paths if len({repr(f.get(p, missing)) for f in flats}) > 1]


def short_name(path: str, among: Sequence[str] = ()) -> str:
    """``model.timesteps`` -> ``T``, ``optim.lr`` -> ``lr``; the full path when another path
    of ``among`` ends the same way (``optim.gamma`` next to ``model.neuron.gamma``)."""
    if path in _SHORT:
        return _SHORT[path]
    last = path.rsplit(".", 1)[-1]
    clash = [p for p in among if p != path and p.rsplit(".", 1)[-1] == last]
    return path if clash else last


def _value_text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(_value_text(v) for v in value)
    return str(value)


def _assignments(config: dict[str, Any], paths: Sequence[str]) -> str:
    flat = flat_config(config)
    return ", ".join(f"{short_name(p, paths)}={_value_text(flat.get(p))}" for p in paths)


def _preset_config(name: str) -> dict[str, Any] | None:
    from mpbn.engine.presets import PRESETS, get_preset

    if name != "default" and name not in PRESETS:
        return None
    try:
        return get_preset(name).to_dict()
    except Exception:  # a preset that no longer validates says nothing about old runs
        return None


def run_labels(runs: Sequence[Run]) -> list[str]:
    """One label per run that says what distinguishes it from the others.

    * Runs that share a name are labelled by their folder (when the folders differ) and the
      config values that differ among them: ``"r1 (mpbn=channel)"``, ``"r2 (mpbn=none)"``.
    * A run with a name of its own that is a preset gets, of the values that differ among the
      runs, those it overrides from its preset: ``"cifar10-fast-t1-baseline (lr=0.05)"`` next
      to ``"cifar10-fast-t1-mpbn-channel"`` (the names already say ``mpbn``).
    * Any other name is kept as it is.

    Labels are unique: identical runs of one name in one folder name get their paths.
    """
    differing = config_differences([r.config for r in runs])
    labels = []
    for run in runs:
        group = [r for r in runs if r.name == run.name]
        if len(group) > 1:
            folders = [r.path.name for r in group]
            base = run.path.name if folders.count(run.path.name) == 1 else run.name
            paths = config_differences([r.config for r in group])
        else:
            base = run.name
            preset = _preset_config(run.name) if differing else None
            paths = []
            if preset is not None:
                own, ref = _comparable(run.config), _comparable(preset)
                paths = [p for p in differing if repr(own.get(p)) != repr(ref.get(p))]
        labels.append(f"{base} ({_assignments(run.config, paths)})" if paths else base)
    for i, run in enumerate(runs):
        if labels.count(labels[i]) > 1:
            labels[i] = f"{labels[i]} [{run.path}]"
    return labels


def comparison_warnings(runs: Sequence[Run], labels: Sequence[str],
                        variables: Sequence[str] | None = None) -> list[str]:
    """One line per variant that differs from the baseline (the first run) in more than the
    compared variable, naming every differing config path with both values.

    Args:
        variables: The config paths the comparison is about (``model.mpbn``); ``None``: the
            comparison is about one variable, whichever it is, so a variant that differs in
            two or more paths gets a line.
    """
    if len(runs) < 2:
        return []
    named = set(variables or [])
    lines = []
    base = runs[0]
    base_flat = flat_config(base.config)
    for run, label in zip(runs[1:], labels[1:], strict=True):
        paths = config_differences([base.config, run.config])
        extra = [p for p in paths if p not in named] if named else paths
        if (named and not extra) or (not named and len(paths) <= 1):
            continue
        flat = flat_config(run.config)
        detail = "; ".join(f"{p}: {_value_text(base_flat.get(p))} -> {_value_text(flat.get(p))}"
                           for p in paths)
        what = (f"more than {', '.join(sorted(named))}" if named
                else "more than one config value")
        lines.append(f"{label} differs from the baseline {labels[0]} in {what}: {detail}; "
                     "a difference in accuracy is not the effect of one change alone.")
    return lines


def slug(label: str) -> str:
    """A file-name form of a label (``"r1 (mpbn=channel)"`` -> ``"r1_mpbn-channel"``), for
    per-run folders that markdown links can name."""
    text = re.sub(r"=", "-", label)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "run"
