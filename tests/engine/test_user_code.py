"""Code of one's own in the engine: the config's imports, builder arguments, errors, reloads."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch
from own_code import restored_registries  # noqa: F401  (fixture)

from mpbn.cli import main
from mpbn.engine import loading
from mpbn.engine.config import ConfigError, TrainConfig, apply_overrides
from mpbn.engine.loading import DataShape, build_model, factory_kwargs, import_user_code
from mpbn.models import _registry, list_models, register_model

pytestmark = pytest.mark.usefixtures("restored_registries")

# A model (no norm, no neuron settings) and an in-memory dataset, as docs/OWN_MODEL.md has.
USER_FILE = '''
import numpy as np
from pathlib import Path
from torch import nn

from mpbn.data.arrays import ArrayDataset, in_memory_loaders
from mpbn.data.registry import register
from mpbn.layers import LIF, ConvNorm, DirectEncoding, IntegratingClassifier, PerStep
from mpbn.models import register_model

with open(Path(__file__).with_name("executions.log"), "a") as log:
    log.write("run\\n")


@register_model
def {model}(*, num_classes=3, timesteps=4, mpbn="channel", width=4):
    return nn.Sequential(DirectEncoding(timesteps), PerStep(nn.Flatten()),
                         ConvNorm(nn.Linear(16, width)),
                         LIF(membrane_norm=mpbn, num_features=width),
                         IntegratingClassifier(nn.Linear(width, num_classes)))


def _split(count, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, count)
    images = (rng.integers(0, 40, (count, 1, 4, 4)) + 70 * labels[:, None, None, None])
    return ArrayDataset(images.astype(np.uint8), labels.astype(np.int64))


@register("{data}")
def _build(request):
    return in_memory_loaders(request, _split(48, 0), _split(24, 1), spec=None, mean=(0.3,),
                             std=(0.3,), layout="image", scale=1 / 255, num_classes=3,
                             input_shape=(1, 4, 4), kind="static", timesteps=None,
                             split="generated")
'''
SHAPE = DataShape(num_classes=3, input_shape=(1, 4, 4))


def _write(folder, name="user_snn", model="user_snn", data="user-data", text=USER_FILE):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(text.replace("{model}", model).replace("{data}", data))
    return path


def _config(path, **overrides):
    return apply_overrides(TrainConfig(), {"imports": [str(path)], "model.name": "user_snn",
                                           "data.name": "user-data", **overrides})


def test_importing_a_file_registers_its_model_and_dataset_once(tmp_path):
    from mpbn.data import list_datasets

    path = _write(tmp_path)
    import_user_code([str(path)])
    import_user_code([str(path)])
    assert "user_snn" in list_models() and "user-data" in list_datasets()
    assert (tmp_path / "executions.log").read_text() == "run\n"  # imported once
    assert loading.dataset_source("user-data") == str(path)
    assert loading.user_code_source(_registry.model_builder("user_snn")) == str(path)
    assert loading.user_code_source(_registry.model_builder("small_cnn")) is None


def test_the_same_file_in_another_folder_replaces_the_older_definition(tmp_path):
    first, second = _write(tmp_path / "a"), _write(tmp_path / "b")
    import_user_code([str(first)])
    old = _registry.model_builder("user_snn")
    import_user_code([str(second)])
    assert _registry.model_builder("user_snn") is not old
    assert loading.user_code_source(_registry.model_builder("user_snn")) == str(second)


def test_a_name_registered_by_another_module_is_refused():
    def small_cnn(**kwargs):
        return torch.nn.Identity()

    with pytest.raises(ValueError, match=r"model 'small_cnn' is already registered \(by "
                                         r"mpbn\.models\.\w+\); give the builder another name"):
        register_model(small_cnn)


def test_a_module_name_in_the_current_folder_is_found(tmp_path, monkeypatch):
    _write(tmp_path, name="user_snn_module")
    monkeypatch.chdir(tmp_path)
    import_user_code(["user_snn_module"])
    assert "user_snn" in list_models()
    assert loading.user_code_source(_registry.model_builder("user_snn")) == "user_snn_module"


@pytest.mark.parametrize(("text", "name", "message"), [
    (None, "missing", r"cannot import '.*missing\.py': no such file; give the \.py file's "
                      r"path \(where it is now\) with --import PATH"),
    ("import torch\n\nraise RuntimeError('no GPU here')\n", "raising",
     r"cannot import '.*raising\.py': RuntimeError: no GPU here \(.*raising\.py line 3\)"),
    ("def broken(:\n", "broken", r"cannot import '.*broken\.py': SyntaxError: invalid syntax "
                                 r"\(.*broken\.py line 1\)"),
    ("x = 1\n", "json", r"cannot import '.*json\.py': its module name 'json' is taken by .*"
                        r"json.*; rename the file"),
    ("x = 1\n", "my-net", r"'my-net' is not a Python module name; rename the file"),
])
def test_an_import_that_fails_is_one_line_naming_it(tmp_path, text, name, message):
    path = tmp_path / f"{name}.py"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError, match=message) as caught:
        import_user_code([str(path)])
    assert "\n" not in str(caught.value)
    assert name not in sys.modules or name == "json"


def test_a_missing_module_says_how_to_make_it_importable():
    with pytest.raises(ConfigError, match=r"cannot import 'no_such_lab\.nets': no module named "
                                          r"'no_such_lab' \(install it, put its folder on "
                                          "PYTHONPATH, or give the path of a .py file"):
        import_user_code(["no_such_lab.nets"])


def test_a_builder_gets_only_the_arguments_it_names(tmp_path):
    cfg = _config(_write(tmp_path), **{"model.timesteps": 2})
    import_user_code(cfg.imports)
    # in_channels, input_size, norm, encoding and the neuron at their defaults are not passed.
    assert factory_kwargs(cfg, SHAPE) == {"num_classes": 3, "timesteps": 2, "mpbn": "channel"}
    model = build_model(cfg, SHAPE)
    assert model(torch.rand(5, 1, 4, 4)).shape == (5, 3)
    # The zoo's builders take **kwargs: every argument, as before.
    zoo = apply_overrides(TrainConfig(), {"model.name": "small_cnn"})
    assert set(factory_kwargs(zoo, DataShape(10, (1, 8, 8)))) >= {"in_channels", "norm", "decay"}


@pytest.mark.parametrize(("override", "message"), [
    ({"model.norm": "tdbn"}, r"model 'user_snn' \(.*user_snn\.py\) takes no argument 'norm', so "
                             r"model\.norm=tdbn would be ignored; add 'norm' to its signature "
                             r"\(or \*\*kwargs\), or leave model\.norm at bn"),
    ({"model.neuron.alpha": 2.0}, r"takes no argument 'alpha', so model\.neuron\.alpha=2\.0"),
    ({"model.neuron.decay": 0.5}, r"takes no argument 'decay'"),
    ({"model.kwargs": {"depth": 3}}, r"takes no argument 'depth', given in model\.kwargs; it "
                                     "takes: mpbn, num_classes, timesteps, width"),
])
def test_a_changed_setting_the_builder_cannot_take_is_an_error(tmp_path, override, message):
    cfg = _config(_write(tmp_path), **override)
    with pytest.raises(ConfigError, match=message):
        build_model(cfg, SHAPE)


def test_a_builder_that_returns_no_module_is_named(tmp_path):
    path = tmp_path / "not_a_model.py"
    path.write_text("from mpbn.models import register_model\n\n@register_model\n"
                    "def user_snn(num_classes=3):\n    return 'a string'\n")
    cfg = apply_overrides(TrainConfig(), {"imports": [str(path)], "model.name": "user_snn"})
    with pytest.raises(ConfigError, match=r"model 'user_snn' \(.*not_a_model\.py\) returned a "
                                          "str, not an nn.Module"):
        build_model(cfg, SHAPE)


def test_an_old_config_without_imports_loads_with_none():
    saved = TrainConfig().to_dict()
    del saved["imports"]
    assert TrainConfig.from_dict(saved).imports == []


def _forget(path):
    """As a fresh process: the file's module, model and dataset unknown again."""
    from mpbn.data import registry

    _registry._MODELS.pop("user_snn", None)
    registry._BUILDERS.pop("user-data", None)
    loading._IMPORTED_FILES.pop(path.resolve(), None)
    sys.modules.pop(path.stem, None)


def _train(argv, capsys):
    status = main(["train", *argv, "--set", "model.name=user_snn", "data.name=user-data",
                   "optim.epochs=2", "model.timesteps=2", "data.batch_size=16", "--quiet"])
    return status, capsys.readouterr()


def test_a_run_of_ones_own_rebuilds_from_its_record_and_after_a_move(tmp_path, capsys,
                                                                     monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _write(tmp_path / "code")
    status, _ = _train(["--import", "code/user_snn.py", "--out", "run"], capsys)
    assert status == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["imports"] == [str(path)]  # absolute: rebuilds from any folder

    _forget(path)
    model, cfg, _ = loading.load_model(tmp_path / "run" / "seed_0" / "last.pt")
    assert cfg.imports == [str(path)] and model(torch.rand(2, 1, 4, 4)).shape == (2, 3)

    moved = tmp_path / "moved" / "user_snn.py"
    moved.parent.mkdir()
    shutil.move(path, moved)
    _forget(path)
    assert main(["eval", "run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "last.pt needs code of its own: cannot import" in err
    assert "with --import PATH" in err
    assert main(["eval", "run", "--import", str(moved)]) == 0
    assert "user_snn on user-data" in capsys.readouterr().out
    assert main(["fold", "run", "-o", "deploy", "--import", str(moved)]) == 0
    assert json.loads((tmp_path / "deploy" / "model.json").read_text())["config"][
        "imports"] == [str(moved)]
    _forget(moved)
    assert main(["analyze", "spikes", "run", "-o", "spikes", "--n-samples", "8",
                 "--import", str(moved)]) == 0
    assert (tmp_path / "spikes").is_dir()


def test_resume_takes_the_new_place_of_a_moved_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _write(tmp_path / "a")
    assert _train(["--import", str(path), "--out", "run", "--stop-after", "1"], capsys)[0] == 0
    moved = _write(tmp_path / "b")
    path.unlink()
    _forget(path)
    assert main(["train", "--resume", "--out", "run", "--import", str(moved)]) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["imports"] == [str(moved)]
    result = json.loads((tmp_path / "run" / "seed_0" / "result.json").read_text())
    assert result["epochs"] == 2


def test_a_refused_setting_stops_before_the_run_folder_is_made(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _write(tmp_path)
    status, captured = _train(["--import", str(path), "--out", "run", "--set",
                               "model.norm=tdbn"], capsys)
    assert status == 2 and "takes no argument 'norm'" in captured.err
    assert not (tmp_path / "run").exists()


def test_unknown_names_suggest_the_close_one_and_the_import(tmp_path, capsys):
    path = _write(tmp_path)
    assert main(["train", "--import", str(path), "--set", "model.name=user_snm",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'user_snm' (did you mean user_snn?)" in err
    assert "--import the .py file that registers it with @mpbn.models.register_model" in err


def test_the_header_names_the_model_and_dataset_of_ones_own(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _write(tmp_path)
    assert main(["train", "--import", str(path), "--set", "model.name=user_snn",
                 "data.name=user-data", "optim.epochs=1", "model.timesteps=2",
                 "--out", "run", "--no-fold"]) == 0
    out = capsys.readouterr().out
    # Only the settings the builder takes (it has no norm): mpbn and T.
    assert f"  model      user_snn (your model, from {path}), MPBN channel, T=2\n" in out
    assert f"  data       user-data (your dataset, from {path}), batch 64\n" in out
    assert out.startswith("run default (the demo's settings, changed below)\n")
    assert "bundled 8x8 digits" not in out
