"""What a run reports: spike rates, per-epoch metric lines, TensorBoard, per-seed summaries."""

from __future__ import annotations

import json
import math
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from mpbn.engine.checkpoint import atomic_write_text
from mpbn.layers.recording import SpikeRecord, record_spikes

__all__ = ["SpikeRateMeter", "MetricsWriter", "mean_std", "git_commit", "allocator"]


class SpikeRateMeter:
    """Mean firing rate of all LIF layers (:func:`mpbn.layers.record_spikes`, ``keep="total"``).

    The rate is total spikes over total neuron-steps of every LIF output seen while
    :meth:`measure` is active (so larger layers weigh more, as in an energy estimate).
    Counts stay on the device; :attr:`rate` syncs once.
    """

    def __init__(self) -> None:
        self.record = SpikeRecord(keep="total")

    @property
    def spikes(self) -> Tensor | None:
        """Total spikes so far (0-dim, on the device), ``None`` before any LIF call."""
        return self.record.total_spikes

    @property
    def total(self) -> int:
        """Neuron-steps summed into :attr:`spikes`."""
        return self.record.neuron_steps

    @contextmanager
    def measure(self, model: nn.Module) -> Iterator[SpikeRateMeter]:
        with record_spikes(model, keep="total", into=self.record):
            yield self

    @property
    def rate(self) -> float:
        return self.record.rate


class MetricsWriter:
    """Appends one JSON line per epoch to ``metrics.jsonl``; mirrors scalars to TensorBoard.

    TensorBoard is used only when ``torch.utils.tensorboard`` imports (it needs the
    ``tensorboard`` package, not a dependency of mpbn).
    """

    def __init__(self, run_dir: Path, *, enabled: bool = True) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.enabled = enabled
        self.tensorboard = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tensorboard = SummaryWriter(str(run_dir / "tensorboard"))
            except Exception:  # tensorboard not installed: metrics.jsonl is enough
                self.tensorboard = None

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            for key, value in record.items():
                if key != "epoch" and isinstance(value, int | float):
                    self.tensorboard.add_scalar(key, value, record["epoch"])
            self.tensorboard.flush()

    def truncate_after(self, epoch: int) -> None:
        """Keep one line per epoch up to ``epoch`` (a resumed run rewrites the later ones).

        A kill can leave a line of an epoch whose checkpoint was never written, or half a
        line; both are dropped, as is any repeated epoch (the last copy is kept, in epoch
        order). The file is replaced atomically, so a kill during the rewrite keeps the old.
        """
        if not self.enabled or not self.path.exists():
            return
        kept: dict[int, str] = {}
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # half a line, written when the process was killed
            if isinstance(record, dict) and 0 < int(record.get("epoch", 0)) <= epoch:
                kept[int(record["epoch"])] = line
        atomic_write_text(self.path, "".join(kept[e] + "\n" for e in sorted(kept)))

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value): the papers' ``mean ± std``."""
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)


#: Tracked paths whose changes cannot change a run: documentation and the records that runs
#: and scripts/reproduce_fast.sh write into docs/ while a run goes (git pathspecs, from the
#: repository root). Without them every run of a chain that keeps its records would read dirty.
NOT_CODE = (":(top,exclude)docs", ":(top,exclude,glob)**/*.md")


def git_commit(path: str | os.PathLike | None = None) -> str | None:
    """The commit of the code that ran, if in git: ``+dirty`` when a tracked file other than
    documentation or records (:data:`NOT_CODE`) differs from it."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ":(top)", *NOT_CODE],
                               cwd=where, capture_output=True, text=True, timeout=10).stdout
        return commit + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def allocator() -> str:
    """The CPU malloc in use (jemalloc/tcmalloc/mimalloc via ``LD_PRELOAD``) and its settings.

    It moves large-tensor CPU timings by 2-9x (docs/PERFORMANCE.md, "Large tensors and the
    allocator"), so benchmark tables and every seed's ``result.json`` name it.
    """
    preload = os.environ.get("LD_PRELOAD", "")
    for name in ("jemalloc", "tcmalloc", "mimalloc"):
        if name in preload:
            conf = os.environ.get("MALLOC_CONF", "")
            return f"{name} (LD_PRELOAD={preload}" + (f", MALLOC_CONF={conf})" if conf else ")")
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return "glibc malloc" + (f" (GLIBC_TUNABLES={tunables})" if tunables else "")
