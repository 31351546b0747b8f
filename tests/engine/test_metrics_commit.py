"""``git_commit``: the commit recorded with every seed, ``+dirty`` only for code changes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from mpbn.engine.metrics import git_commit

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    for relative in ("pkg/code.py", "docs/results/run/reference_epochs.jsonl", "README.md",
                     "pkg/notes.md"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text("first\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    return tmp_path


def test_a_clean_tree_gives_the_bare_commit(repo: Path) -> None:
    assert git_commit(repo / "pkg") == _git(repo, "rev-parse", "HEAD")


@pytest.mark.parametrize("changed", ["docs/results/run/reference_epochs.jsonl", "README.md",
                                     "pkg/notes.md"])
def test_records_and_documentation_do_not_make_it_dirty(repo: Path, changed: str) -> None:
    """A chain appends to docs/.../reference_epochs.jsonl before the next run starts."""
    (repo / changed).write_text("second\n")
    (repo / "untracked.py").write_text("x = 1\n")  # untracked files never counted
    assert git_commit(repo / "pkg") == _git(repo, "rev-parse", "HEAD")


@pytest.mark.parametrize("where", ["pkg", "docs", "."])
def test_a_code_change_is_dirty_from_any_directory(repo: Path, where: str) -> None:
    (repo / "pkg/code.py").write_text("second\n")
    (repo / "docs/results/run/reference_epochs.jsonl").write_text("second\n")
    assert git_commit(repo / where) == _git(repo, "rev-parse", "HEAD") + "+dirty"


def test_outside_git_it_is_unknown(tmp_path: Path) -> None:
    assert git_commit(tmp_path) is None
