"""The run directory: its layout, creation (``--force``), resume checks and the summary.

Layout (other tools, :mod:`mpbn.analysis` among them, rely on it)::

    RUN_DIR/config.json             the resolved TrainConfig (nested; older runs: flat)
    RUN_DIR/summary.json            per-seed accuracies, mean, std, code commit
    RUN_DIR/seed_<s>/metrics.jsonl  one line per epoch
    RUN_DIR/seed_<s>/last.pt        after every epoch (for --resume), and mid-epoch every
                                    run.checkpoint_every steps (a mid_epoch entry)
    RUN_DIR/seed_<s>/best.pt        best test accuracy so far
    RUN_DIR/seed_<s>/result.json    the seed's final numbers (marks it finished)
    RUN_DIR/previous-<timestamp>/   what a ``--force`` run found there (the files above)

A run written before the config was nested (flat ``config.json`` and checkpoint configs)
resumes as it is: :func:`~mpbn.engine.config.config_diff` reads both layouts.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from mpbn.engine.checkpoint import atomic_write_text, remove_stale_temporaries
from mpbn.engine.config import ConfigError, TrainConfig, config_diff
from mpbn.engine.distributed import DistInfo
from mpbn.engine.metrics import allocator, git_commit, mean_std

__all__ = ["SeedResult", "runtime_record", "default_run_dir", "prepare_run_dir", "check_resumable",
           "seed_dir", "finished_result", "write_result", "summarize", "write_summary",
           "remove_if_untrained", "set_aside_previous"]


@dataclass
class SeedResult:
    """The numbers one seed contributes to the summary (``seed_<s>/result.json``)."""

    seed: int
    final_test_acc: float
    best_test_acc: float
    folded_test_acc: float | None
    spike_mismatch: int | None
    train_time: float
    epochs: int
    spike_mismatch_rate: float | None = None
    #: With ``data.holdout``: the held-out accuracy after the last epoch and at its best
    #: epoch; ``best_test_acc`` is then None (the test set is evaluated once, at the end).
    final_val_acc: float | None = None
    best_val_acc: float | None = None
    #: Test accuracy with flip test-time augmentation (``run.tta_flip``), else None.
    test_acc_flip: float | None = None
    #: The code of the invocation that finished this seed (trained its last epochs, evaluated
    #: and folded it): ``git_commit`` when that process started; None where unknown.
    commit: str | None = None
    #: How the seed's last session ran, the settings that move ``train_time`` but not the
    #: recipe (:func:`runtime_record`); None in records written before it existed.
    runtime: dict[str, Any] | None = None
    #: The code of every invocation that trained this seed, in order, once per change (a seed
    #: resumed across work periods can span several; ``commit`` is the last); an entry is
    #: None where not known (a checkpoint written before they were kept). None in records
    #: written before it existed.
    commit_history: list[str | None] | None = None
    #: The fold's spike mismatch recounted in float64 on the same batch, when the float32
    #: count (``spike_mismatch``) is not 0: 0 says the float32 mismatches are rounding at the
    #: threshold, not a folding error. None where not recounted (a float32 count of 0, no
    #: fold, or records written before it existed).
    spike_mismatch_float64: int | None = None


def runtime_record(cfg: TrainConfig, dist: DistInfo) -> dict[str, Any]:
    """The settings a seed ran under that are not part of its recipe but move its
    ``train_time`` (and, for ``compile``, the float order of its arithmetic): device, processes,
    CPU threads, ``run.compile``, ``run.grad_checkpointing``, the CPU allocator and the torch
    version. A seed resumed under other settings records those of its last session."""
    return {"device": str(dist.device), "processes": dist.world_size,
            "threads": torch.get_num_threads(), "compile": cfg.run.compile,
            "grad_checkpointing": cfg.run.grad_checkpointing, "allocator": allocator(),
            "torch": torch.__version__}


def default_run_dir(cfg: TrainConfig) -> Path:
    return Path("runs") / f"{cfg.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def seed_dir(run_dir: Path, seed: int) -> Path:
    return run_dir / f"seed_{seed}"


def check_resumable(saved: dict[str, Any], cfg: TrainConfig, where: Path) -> None:
    """Refuse to continue ``where`` (a run dir or checkpoint) when the experiment changed.

    Only :data:`~mpbn.engine.config.RUNTIME_FIELDS` (device, workers, more seeds...) may
    differ; ``saved`` may be nested or flat (older runs).
    """
    diff = config_diff(saved, cfg.to_dict())
    if diff:
        raise ConfigError(f"cannot resume {where} with a changed config ({'; '.join(diff)}); "
                          "start a new run with a new --out, or drop the changed options")


def prepare_run_dir(cfg: TrainConfig, out: str | Path | None, *, force: bool, resume: bool,
                    dist: DistInfo) -> Path:
    """Create the run directory and write ``config.json``; refuse to clobber anything.

    Under ``force`` nothing is written or removed here: the previous run's files stay as
    they are until the new run has passed set-up (data and model built), when the caller
    moves them aside with :func:`set_aside_previous`, which also writes ``config.json``. A
    set-up failure (say, a wrong data root) thus leaves the user's results untouched.
    """
    run_dir = Path(out) if out is not None else default_run_dir(cfg)
    config_path = run_dir / "config.json"
    if resume:
        if not config_path.exists():
            raise ConfigError(f"cannot resume: {config_path} does not exist (is {run_dir} a "
                              "run directory written by `mpbn train`?)")
        check_resumable(read_json(config_path, "the run's config"), cfg, run_dir)
        if dist.is_primary:  # runtime fields (e.g. more seeds) may have changed
            # Temporary files of writes a kill interrupted (config, summary, checkpoints).
            for folder in [run_dir, *sorted(p for p in run_dir.glob("seed_*") if p.is_dir())]:
                remove_stale_temporaries(folder)
            try:
                atomic_write_text(config_path, cfg.to_json() + "\n")
            except OSError as error:
                raise unwritable(run_dir, error) from None
        return run_dir
    occupied = run_dir.exists() and any(run_dir.iterdir())
    if dist.enabled:
        # Every rank looks before rank 0 writes, so all ranks take the same decision.
        torch.distributed.barrier()
    if occupied and not force:
        raise ConfigError(f"output folder {run_dir} exists and is not empty; use --force to "
                          "overwrite, --resume to continue it, or another --out")
    if dist.is_primary:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            if not force:
                atomic_write_text(config_path, cfg.to_json() + "\n")
        except OSError as error:
            raise unwritable(run_dir, error) from None
    return run_dir


def unwritable(run_dir: Path, error: OSError) -> ConfigError:
    """The one-line error for an output folder that cannot be created or written."""
    where = error.filename if error.filename is not None else run_dir
    return ConfigError(f"cannot write the output folder {run_dir}: {error.strerror or error} "
                       f"({where}); choose another --out")


def set_aside_previous(cfg: TrainConfig, run_dir: Path, dist: DistInfo) -> Path | None:
    """Under ``--force``, once set-up has passed: move the old run out of the way.

    ``config.json``, ``summary.json`` and every ``seed_*`` folder (metrics, results,
    checkpoints) are renamed, never deleted, into ``run_dir/previous-<timestamp>/``; then the
    new ``config.json`` is written. Every rank calls this; the primary one moves.

    Returns:
        The folder the old files are now in, or None when there were none.
    """
    moved_to: Path | None = None
    if dist.is_primary:
        # Half-written temporaries of a killed earlier run (its very first config.json, say)
        # are no one's results: removed, not moved.
        remove_stale_temporaries(run_dir)
        old = [p for p in (run_dir / "config.json", run_dir / "summary.json") if p.exists()]
        old += sorted(p for p in run_dir.glob("seed_*") if p.is_dir())
        if old:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            moved_to = run_dir / f"previous-{stamp}"
            for n in range(1, 1000):
                if not moved_to.exists():
                    break
                moved_to = run_dir / f"previous-{stamp}-{n}"
            moved_to.mkdir()
            for path in old:
                os.replace(path, moved_to / path.name)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.json", cfg.to_json() + "\n")
    if dist.enabled:
        torch.distributed.barrier()  # no rank writes into a seed folder before it moved
    return moved_to


def read_json(path: Path, what: str) -> Any:
    """The JSON in ``path``, or a one-line :class:`ConfigError` naming the file and the fix."""
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path} ({what}) is not valid JSON ({error}); it was changed or cut "
                          "short outside mpbn: restore it, or start a new run with another "
                          "--out") from None


def finished_result(folder: Path) -> SeedResult | None:
    """The result of a seed that finished before (its ``result.json``), else None."""
    path = folder / "result.json"
    if not path.exists():
        return None
    saved = read_json(path, "a finished seed's result")
    try:
        return SeedResult(**saved)
    except TypeError:
        raise ConfigError(f"{path} (a finished seed's result) has unknown or missing fields; "
                          "delete it to redo that seed's final evaluation on --resume") from None


def write_result(folder: Path, result: SeedResult) -> None:
    atomic_write_text(folder / "result.json", json.dumps(asdict(result), indent=2))


def summarize(cfg: TrainConfig, results: list[SeedResult], *,
              commit: str | None = None) -> dict[str, Any]:
    """airbench-style summary: per-seed accuracies, their mean and std, the code commit
    (``commit``: that of the process writing it, as read when it started; by default now)."""
    final = [r.final_test_acc for r in results]
    mean, std = mean_std(final)
    folded = [r.folded_test_acc for r in results]
    return {
        "name": cfg.name, "config": cfg.to_dict(), "seeds": [r.seed for r in results],
        "final_test_acc": final, "best_test_acc": [r.best_test_acc for r in results],
        "mean": mean, "std": std, "commit": commit if commit is not None else git_commit(),
        "folded_test_acc": folded, "spike_mismatch": [r.spike_mismatch for r in results],
        "spike_mismatch_rate": [r.spike_mismatch_rate for r in results],
        "spike_mismatch_float64": [r.spike_mismatch_float64 for r in results],
        "train_time": [r.train_time for r in results],
        "final_val_acc": [r.final_val_acc for r in results],
        "best_val_acc": [r.best_val_acc for r in results],
        "test_acc_flip": [r.test_acc_flip for r in results],
        "commits": [r.commit for r in results],
        "commit_histories": [r.commit_history for r in results],
        "runtimes": [r.runtime for r in results],
    }


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")


def remove_if_untrained(run_dir: Path) -> None:
    """Remove what a run that failed before its first checkpoint wrote (so no --force)."""
    if any(run_dir.glob("seed_*/*.pt")):
        return
    (run_dir / "config.json").unlink(missing_ok=True)
    for path in sorted(run_dir.glob("seed_*/metrics.jsonl")):
        path.unlink()
    for folder in [*run_dir.glob("seed_*"), run_dir]:
        with contextlib.suppress(OSError):
            folder.rmdir()
