"""docs/OWN_MODEL.md runs as written: its file, its `mpbn` commands, its Python.

The page's ```python block that starts with ``# my_snn.py`` is written to a fresh folder; every
line of its ```bash blocks that starts with ``mpbn`` runs through :func:`mpbn.cli.main` there;
its other ```python blocks then run in order. So the worked example cannot rot.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from own_code import restored_registries  # noqa: F401  (fixture)

from mpbn.cli import main

DOC = Path(__file__).resolve().parents[1] / "docs" / "OWN_MODEL.md"
FILE_MARK = "# my_snn.py\n"


def _blocks() -> list[tuple[str, str]]:
    return re.findall(r"^```(\w*)\n(.*?)^```$", DOC.read_text(), flags=re.S | re.M)


def test_the_page_has_a_file_commands_and_python():
    blocks = _blocks()
    assert sum(lang == "python" and body.startswith(FILE_MARK) for lang, body in blocks) == 1
    commands = [line for lang, body in blocks if lang == "bash" for line in body.splitlines()]
    assert all(line.startswith("mpbn ") for line in commands if line.strip())
    assert [shlex.split(c)[1] for c in commands] == ["train", "eval", "fold", "train"]


@pytest.mark.usefixtures("restored_registries")
def test_the_worked_example_runs_start_to_finish(tmp_path, monkeypatch, capsys):
    pytest.importorskip("nir")
    pytest.importorskip("safetensors")
    monkeypatch.chdir(tmp_path)
    blocks = _blocks()
    source = next(body for lang, body in blocks if lang == "python" and body.startswith(FILE_MARK))
    (tmp_path / "my_snn.py").write_text(source)

    for lang, body in blocks:
        if lang != "bash":
            continue
        for line in body.splitlines():
            assert main(shlex.split(line)[1:]) == 0, line
    out = capsys.readouterr().out
    assert f"my_snn (your model, from {tmp_path / 'my_snn.py'})" in out
    assert f"bars (your dataset, from {tmp_path / 'my_snn.py'})" in out
    # mpbn eval --fold-check float64: exact in float64 (float32 may flip spikes at threshold)
    assert "in float64      0 of " in out
    for name in ("model.safetensors", "model.json", "model.nir"):
        assert (tmp_path / "deploy" / "my-snn" / name).is_file()
    meta = json.loads((tmp_path / "deploy" / "my-snn" / "model.json").read_text())
    assert meta["config"]["imports"] == [str(tmp_path / "my_snn.py")]
    assert meta["preprocessing"]["class_names"][0] == "horizontal"
    element = json.loads((tmp_path / "runs" / "my-snn-element" / "summary.json").read_text())
    assert element["best_val_acc"][0] is not None  # data.holdout worked on the user's dataset

    for lang, body in blocks:
        if lang == "python" and not body.startswith(FILE_MARK):
            exec(compile(body, str(DOC), "exec"), {"__name__": "own_model_doc"})
    printed = capsys.readouterr().out.split("\n")
    assert printed[1] == "0"  # the spike mismatch the page says is 0
    assert (tmp_path / "runs" / "my-snn-py" / "summary.json").is_file()
