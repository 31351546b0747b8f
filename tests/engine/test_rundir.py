"""The run directory under ``--force``: old results survive a failed set-up, then move aside."""

from __future__ import annotations

import json

import pytest

from mpbn.engine.config import apply_overrides
from mpbn.engine.train import RunOptions, run


def _files(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_force_keeps_the_old_results_until_set_up_passed(tmp_path, tiny_config):
    out = tmp_path / "run"
    old_cfg = apply_overrides(tiny_config, dict(epochs=1))
    run(old_cfg, RunOptions(out=out, quiet=True))
    before = _files(out)
    assert {"config.json", "summary.json", "seed_0/metrics.jsonl", "seed_0/result.json",
            "seed_0/last.pt", "seed_0/best.pt"} <= set(before)

    # Set-up fails (a wrong data root): every file the user had is byte-identical.
    bad = apply_overrides(tiny_config, dict(root=str(tmp_path / "no-such-data")))
    with pytest.raises(FileNotFoundError, match="no-such-data"):
        run(bad, RunOptions(out=out, force=True, quiet=True))
    assert _files(out) == before
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "seed_0", "summary.json"]

    # Set-up passes: the old run moves, whole, into previous-<timestamp>/; the new one is in place.
    run(tiny_config, RunOptions(out=out, force=True, quiet=True))
    (previous,) = out.glob("previous-*")
    assert _files(previous) == before
    assert json.loads((out / "config.json").read_text()) == tiny_config.to_dict()
    epochs = [json.loads(line)["epoch"]
              for line in (out / "seed_0/metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]  # the new run's two epochs, nothing appended to the old one
    assert json.loads((out / "seed_0/result.json").read_text())["epochs"] == 2
    assert json.loads((out / "summary.json").read_text())["config"]["optim"]["epochs"] == 2


@pytest.mark.parametrize("name", ["config.json", "seed_0/result.json"])
def test_a_corrupt_run_file_is_a_one_line_error_naming_it(tmp_path, tiny_config, name):
    from mpbn.engine.config import ConfigError
    from mpbn.engine.train import RunOptions, run

    run(tiny_config, RunOptions(out=tmp_path, quiet=True))
    (tmp_path / name).write_text("")
    with pytest.raises(ConfigError, match=rf"{name}.*is not valid JSON.*restore it") as error:
        run(tiny_config, RunOptions(out=tmp_path, quiet=True, resume=True))
    assert "\n" not in str(error.value)


def test_force_removes_a_killed_runs_temporaries(tmp_path, tiny_config):
    from mpbn.engine.train import RunOptions, run

    tmp_path.mkdir(exist_ok=True)
    stale = tmp_path / ".config.json.abc123.tmp"  # a kill during the very first config write
    stale.write_text("{\"half")
    run(tiny_config, RunOptions(out=tmp_path, quiet=True, force=True))
    assert not stale.exists() and not list(tmp_path.rglob("*.tmp"))
    assert (tmp_path / "summary.json").exists()
