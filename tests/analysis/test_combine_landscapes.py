"""scripts/combine_landscapes.py: saved per-run landscapes -> one plot, refusing mismatches."""

import json
import runpy
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "combine_landscapes.py"


def _saved(folder: Path, label: str, losses: list[float], *, seed: int = 0,
           nested: bool = True) -> Path:
    where = folder / "images" if nested else folder
    where.mkdir(parents=True)
    alphas = [-1.0, -0.5, 0.0, 0.5, 1.0]
    curve = {"alpha": alphas, "loss": losses, "acc": [0.1 * i for i in range(len(alphas))]}
    (where / "landscape.json").write_text(json.dumps(
        {"n_samples": 64, "seed": seed, "curves": {label: curve}}))
    return folder


def _main():
    return runpy.run_path(str(SCRIPT), run_name="not_main")["main"]


def test_two_saved_landscapes_become_one_plot_with_both_curves(tmp_path, capsys):
    a = _saved(tmp_path / "a", "baseline", [3.0, 1.5, 0.5, 1.2, 2.5])
    b = _saved(tmp_path / "b", "mpbn", [2.0, 1.0, 0.4, 1.0, 2.0], nested=False)
    out = tmp_path / "out"
    _main()([str(out), str(a), str(b)])
    combined = json.loads((out / "landscape.json").read_text())
    assert list(combined["curves"]) == ["baseline", "mpbn"]
    assert combined["curves"]["mpbn"]["loss"] == [2.0, 1.0, 0.4, 1.0, 2.0]
    assert (out / "landscape.png").stat().st_size > 0
    rows = (out / "landscape.csv").read_text().splitlines()
    assert rows[0] == "model,alpha,loss,acc" and len(rows) == 1 + 10
    text = capsys.readouterr().out
    assert "| baseline | 3.000 | 0.500 | 2.500 |" in text
    assert "| mpbn | 2.000 | 0.400 | 2.000 |" in text


def test_landscapes_on_other_samples_or_twice_the_same_label_are_refused(tmp_path):
    a = _saved(tmp_path / "a", "baseline", [3.0, 1.5, 0.5, 1.2, 2.5])
    other_seed = _saved(tmp_path / "b", "mpbn", [2.0, 1.0, 0.4, 1.0, 2.0], seed=1)
    same_label = _saved(tmp_path / "c", "baseline", [2.0, 1.0, 0.4, 1.0, 2.0])
    with pytest.raises(SystemExit, match="not comparable"):
        _main()([str(tmp_path / "o1"), str(a), str(other_seed)])
    with pytest.raises(SystemExit, match="already in the plot"):
        _main()([str(tmp_path / "o2"), str(a), str(same_label)])
    with pytest.raises(SystemExit, match="no landscape.json"):
        _main()([str(tmp_path / "o3"), str(tmp_path)])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "landscape.json").write_text('{"curves": {}}')
    with pytest.raises(SystemExit, match="not a landscape.json written by mpbn report"):
        _main()([str(tmp_path / "o5"), str(broken)])
    with pytest.raises(SystemExit, match="usage"):
        _main()([str(tmp_path / "o4")])
