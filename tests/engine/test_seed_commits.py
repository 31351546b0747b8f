"""Which code trained a seed: the commit read when the process started (not when the seed
ended), and each invocation's commit in order when a seed is resumed under other code."""

from __future__ import annotations

import json

from mpbn.analysis.compare import commit_text
from mpbn.engine import train as train_module
from mpbn.engine.checkpoint import load_checkpoint, save_checkpoint
from mpbn.engine.train import RunOptions, run


class _Head:
    """A stand-in for ``git_commit``: HEAD as the test moves it."""

    def __init__(self, commit: str) -> None:
        self.commit, self.calls = commit, 0

    def __call__(self, *args, **kwargs) -> str:
        self.calls += 1
        return self.commit


def _result(path) -> dict:
    return json.loads((path / "seed_0/result.json").read_text())


def test_a_commit_made_while_a_seed_trains_is_not_credited_with_it(tmp_path, tiny_config,
                                                                  monkeypatch):
    head = _Head("a" * 40)
    monkeypatch.setattr(train_module, "git_commit", head)

    def commit_during_training(event, **info):
        if event == "epoch_end":
            head.commit = "b" * 40  # someone commits while the run goes on

    summary = run(tiny_config, RunOptions(out=tmp_path, quiet=True,
                                          hooks=[commit_during_training]))
    assert head.commit == "b" * 40  # the hook did move HEAD
    result = _result(tmp_path)
    assert result["commit"] == "a" * 40
    assert result["commit_history"] == ["a" * 40]
    assert summary["commit"] == "a" * 40 and summary["commits"] == ["a" * 40]
    assert summary["commit_histories"] == [["a" * 40]]


def test_a_resumed_seed_keeps_every_invocations_commit_in_order(tmp_path, tiny_config,
                                                               monkeypatch):
    head = _Head("a" * 40)
    monkeypatch.setattr(train_module, "git_commit", head)
    assert run(tiny_config, RunOptions(out=tmp_path, quiet=True, stop_after=1)) is None
    assert load_checkpoint(tmp_path / "seed_0/last.pt")["commits"] == ["a" * 40]
    head.commit = "b" * 40 + "+dirty"
    run(tiny_config, RunOptions(out=tmp_path, quiet=True, resume=True))
    result = _result(tmp_path)
    assert result["commit_history"] == ["a" * 40, "b" * 40 + "+dirty"]
    assert result["commit"] == "b" * 40 + "+dirty"  # the code that finished and folded it


def test_resuming_under_the_same_commit_lists_it_once(tmp_path, tiny_config, monkeypatch):
    monkeypatch.setattr(train_module, "git_commit", _Head("c" * 40))
    assert run(tiny_config, RunOptions(out=tmp_path, quiet=True, stop_after=1)) is None
    run(tiny_config, RunOptions(out=tmp_path, quiet=True, resume=True))
    assert _result(tmp_path)["commit_history"] == ["c" * 40]


def test_a_checkpoint_from_before_the_history_marks_the_earlier_code_unknown(
        tmp_path, tiny_config, monkeypatch):
    monkeypatch.setattr(train_module, "git_commit", _Head("d" * 40))
    assert run(tiny_config, RunOptions(out=tmp_path, quiet=True, stop_after=1)) is None
    last = tmp_path / "seed_0/last.pt"
    old = load_checkpoint(last)
    del old["commits"]  # as written by the engine before it kept them
    save_checkpoint(last, old)
    run(tiny_config, RunOptions(out=tmp_path, quiet=True, resume=True))
    assert _result(tmp_path)["commit_history"] == [None, "d" * 40]


def test_commit_text_shows_each_commit_of_a_resumed_seed():
    a, b = "a" * 40, "b" * 40
    assert commit_text(a, [a]) == f"`{a[:12]}`"
    assert commit_text(a, None) == f"`{a[:12]}`"  # records from before the history
    assert commit_text(b + "+dirty", [a, b + "+dirty"]) == f"`{a[:12]}` then `{b[:12]}+dirty`"
    assert commit_text(b, [None, b]) == f"? then `{b[:12]}`"
    assert commit_text(None, None) == "-"
