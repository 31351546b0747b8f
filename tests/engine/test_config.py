"""The nested config: dotted paths and flat shorthands, text parsed once, old flat dicts."""

from __future__ import annotations

import pytest

from mpbn.cli import main
from mpbn.engine.config import (
    RUNTIME_FIELDS,
    ConfigError,
    TrainConfig,
    apply_overrides,
    choices,
    config_fields,
    flatten,
    parse_set,
    resolve_key,
)
from mpbn.engine.presets import get_preset, list_presets

#: The flat TrainConfig before it was nested (field: default), copied here as a literal so the
#: conversion is tested against the old layout itself, not against the code that converts it.
OLD_FLAT_DEFAULTS = {
    "name": "default",
    "description": "small spiking CNN with channel-wise MPBN on the bundled 8x8 digits",
    "model": "small_cnn", "dataset": "digits", "data_root": None, "download": False,
    "split": None, "train_subset": None, "test_subset": None, "timesteps": 4, "norm": "bn",
    "mpbn": "channel", "encoding": "direct", "decay": 0.25, "v_threshold": 0.5,
    "reset": "hard", "surrogate": "rectangle", "alpha": None, "model_kwargs": {},
    "epochs": 30, "batch_size": 64, "eval_batch_size": 512, "optimizer": "sgd", "lr": 0.1,
    "momentum": 0.9, "nesterov": False, "weight_decay": 1e-4, "decay_params": "weights",
    "schedule": "cosine", "milestones": [0.5, 0.7, 0.9], "gamma": 0.1, "warmup_epochs": 0,
    "label_smoothing": 0.0, "grad_clip": None, "augment": True, "autoaugment": False,
    "cutout": None, "seed": 0, "seeds": 1, "device": "auto", "amp": False, "compile": False,
    "channels_last": False, "grad_checkpointing": 0, "sync_norm": False, "num_workers": 4,
    "log_interval": 20, "fold": True,
}
#: Fields added after the nesting (no flat name ever existed for them; old configs get the
#: defaults).
NEWER_FIELDS = {"data.holdout", "run.tta_flip", "imports", "run.checkpoint_every",
                "optim.ema_decay", "optim.membrane_norm_lr", "run.eval_every"}
OLD_RUNTIME_FIELDS = {"device", "num_workers", "log_interval", "compile", "data_root",
                      "grad_checkpointing", "download", "eval_batch_size", "description",
                      "seeds"}


def test_every_old_flat_name_is_a_shorthand_of_its_own_path():
    paths = {key: resolve_key(key) for key in OLD_FLAT_DEFAULTS}
    assert len(set(paths.values())) == len(paths)  # no two old names share a path
    # ... and nothing is lost
    assert set(paths.values()) == set(flatten(TrainConfig().to_dict())) - NEWER_FIELDS
    # The colliding meanings live apart now.
    assert (paths["decay"], paths["weight_decay"]) == ("model.neuron.decay",
                                                       "optim.weight_decay")
    assert (paths["momentum"], paths["alpha"], paths["gamma"]) == (
        "optim.momentum", "model.neuron.alpha", "optim.gamma")
    assert {paths[k] for k in OLD_RUNTIME_FIELDS} == RUNTIME_FIELDS - NEWER_FIELDS


def test_an_old_flat_dict_converts_to_the_same_config():
    assert TrainConfig.from_dict(OLD_FLAT_DEFAULTS) == TrainConfig()
    old = {**OLD_FLAT_DEFAULTS, "decay": 0.99, "weight_decay": 5e-4, "momentum": 0.8,
           "alpha": 0.3, "gamma": 0.2, "model": "vgg9", "dataset": "cifar10",
           "model_kwargs": {"width": 16}, "optimizer": "adam", "data_root": "/data"}
    cfg = TrainConfig.from_dict(old)
    assert (cfg.model.neuron.decay, cfg.optim.weight_decay, cfg.optim.momentum,
            cfg.model.neuron.alpha, cfg.optim.gamma) == (0.99, 5e-4, 0.8, 0.3, 0.2)
    assert (cfg.model.name, cfg.data.name, cfg.model.kwargs, cfg.optim.name,
            cfg.data.root) == ("vgg9", "cifar10", {"width": 16}, "adam", "/data")
    with pytest.raises(ConfigError, match="'leak' is neither a field of the nested config "
                                          "nor of the flat one"):
        TrainConfig.from_dict({**OLD_FLAT_DEFAULTS, "leak": 0.5})


def test_dotted_paths_and_flat_shorthands_set_the_same_field():
    base = TrainConfig()
    by_path = apply_overrides(base, parse_set(["optim.lr=0.05", "model.neuron.decay=0.5",
                                               "data.test_subset=10"]))
    by_name = apply_overrides(base, {"lr": 0.05, "decay": 0.5, "test_subset": 10})
    assert by_path == by_name
    assert (by_path.optim.lr, by_path.model.neuron.decay, by_path.data.test_subset) == (
        0.05, 0.5, 10)
    assert base.optim.lr == 0.1  # a copy; the base is untouched
    with pytest.raises(ConfigError, match="unknown config key 'optim.nope'"):
        parse_set(["optim.nope=1"])


def test_none_is_parsed_from_text_once_and_not_accepted_as_a_value():
    assert parse_set(["mpbn=none", "grad_clip=null"]) == {"model.mpbn": None,
                                                          "optim.grad_clip": None}
    assert apply_overrides(TrainConfig(), {"mpbn": None}).model.mpbn is None
    with pytest.raises(ConfigError, match="use None, not the string 'none'"):
        apply_overrides(TrainConfig(), {"mpbn": "none"})


def test_choice_lists_come_from_the_modules_that_own_them():
    from mpbn.functional import RESETS, SURROGATES
    from mpbn.layers import MEMBRANE_NORMS, NORMS
    from mpbn.models import ENCODINGS

    valid = choices()
    assert set(NORMS) <= set(valid["model.norm"])
    assert valid["model.mpbn"] == (None, *MEMBRANE_NORMS)
    assert valid["model.encoding"] == tuple(ENCODINGS)
    assert valid["model.neuron.reset"] == tuple(RESETS)
    assert valid["model.neuron.surrogate"] == tuple(SURROGATES)
    # The copy config.py used to hold lacked "sequence", which the models accept.
    assert apply_overrides(TrainConfig(), {"encoding": "sequence"}).model.encoding == "sequence"


def test_every_preset_round_trips_through_its_dict():
    for name in list_presets():
        cfg = get_preset(name)
        assert TrainConfig.from_dict(cfg.to_dict()) == cfg, name


def test_presets_verbose_documents_every_path(capsys):
    fields = config_fields()
    assert [f.path for f in fields] == list(flatten(TrainConfig().to_dict()))
    assert all(f.doc for f in fields), [f.path for f in fields if not f.doc]
    assert main(["presets", "-v"]) == 0
    out = capsys.readouterr().out
    for f in fields:
        assert f"  {f.path}" in out, f.path
    assert "model.neuron.decay [decay]  float = 0.25: Membrane leak" in out
    assert "optim.lr [lr]  float = 0.1: Peak learning rate." in out


# ------------------------------------------------------------------------------------------
# run directories and checkpoints written before the config was nested

TINY_FLAT = dict(epochs=2, train_subset=256, test_subset=128, batch_size=64,
                 eval_batch_size=128, timesteps=2, log_interval=2, fold=False)


def _make_old(run_dir, flat):
    """Rewrite a run directory as the flat-config code wrote it: config.json, checkpoints."""
    import json

    from mpbn.engine.checkpoint import load_checkpoint, save_checkpoint

    (run_dir / "config.json").write_text(json.dumps(flat, indent=2) + "\n")
    for path in run_dir.glob("seed_*/*.pt"):
        payload = load_checkpoint(path)
        payload["config"] = flat
        save_checkpoint(path, payload)
    summary = run_dir / "summary.json"
    if summary.exists():
        summary.write_text(json.dumps({**json.loads(summary.read_text()), "config": flat}))


def test_an_old_run_directory_resumes_evaluates_and_folds(tmp_path, tiny_config, capsys):
    import json

    import torch

    from mpbn.engine.checkpoint import load_checkpoint
    from mpbn.engine.train import RunOptions, run

    assert tiny_config == TrainConfig.from_dict({**OLD_FLAT_DEFAULTS, **TINY_FLAT})
    run(tiny_config, RunOptions(out=tmp_path / "a", quiet=True))
    old = tmp_path / "old"
    assert run(tiny_config, RunOptions(out=old, quiet=True, stop_after=1)) is None
    _make_old(old, {**OLD_FLAT_DEFAULTS, **TINY_FLAT})

    # Resume continues the old run and ends where an uninterrupted run ends.
    assert main(["train", "--resume", "--out", str(old), "--quiet"]) == 0
    a, b = load_checkpoint(tmp_path / "a/seed_0/last.pt"), load_checkpoint(old / "seed_0/last.pt")
    assert b["epoch"] == 2
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert json.loads((old / "config.json").read_text()) == tiny_config.to_dict()  # now nested

    # A changed config is still refused, naming the path.
    _make_old(old, {**OLD_FLAT_DEFAULTS, **TINY_FLAT})
    assert main(["train", "--resume", "--out", str(old), "--lr", "0.5", "--quiet"]) == 2
    assert "changed config (optim.lr: 0.1 -> 0.5)" in capsys.readouterr().err

    # eval and fold read the flat checkpoint config.
    capsys.readouterr()
    assert main(["eval", str(old / "seed_0/best.pt")]) == 0
    assert "acc unfolded" in capsys.readouterr().out
    assert main(["fold", str(old / "seed_0/last.pt"), "-o", str(tmp_path / "deploy")]) == 0

    # What cannot be converted fails with one line saying what changed.
    _make_old(old, {**OLD_FLAT_DEFAULTS, **TINY_FLAT, "leak": 0.5})
    capsys.readouterr()
    assert main(["eval", str(old / "seed_0/last.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'leak' is neither a field of the nested config" in err


@pytest.mark.parametrize("item", ["alpha=nan", "lr=inf", "optim.lr=-inf", "weight_decay=NaN",
                                  "model.neuron.v_threshold=1e400", "milestones=0.5,nan"])
def test_set_refuses_non_finite_numbers_naming_the_key(item):
    key = item.split("=")[0]
    with pytest.raises(ConfigError, match="finite") as caught:
        parse_set([item])
    message = str(caught.value)
    assert message.startswith(f"{key}=") and "\n" not in message
    assert parse_set([f"{key}={'0.5,0.7' if 'milestones' in key else '0.5'}"])  # finite: fine
