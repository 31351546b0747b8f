"""Distributed set-up: torchrun detection, the process group, the device of each rank.

Synchronized norms are not engine code: their math is :mod:`mpbn.functional.sync_norm` and
their layers :mod:`mpbn.layers.sync`; the names are re-exported here for older imports.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from mpbn.functional.sync_norm import (
    all_reduce_max,
    all_reduce_sum,
    sync_batch_norm,
    sync_normalize_with_batch_stats,
)
from mpbn.layers.sync import convert_sync_norms, revert_sync_norms

__all__ = [
    "DistInfo",
    "pick_device",
    "setup_distributed",
    "cleanup_distributed",
    "sync_batch_norm",
    "sync_normalize_with_batch_stats",
    "convert_sync_norms",
    "revert_sync_norms",
    "all_reduce_max",
    "all_reduce_sum",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_primary(self) -> bool:
        """Rank 0 logs, writes files and shows progress bars; the others stay silent."""
        return self.rank == 0


def pick_device(requested: str, local_rank: int = 0) -> torch.device:
    """The device a ``--device`` value names (``auto``, ``cpu``, ``cuda``, ``cuda:N``); plain
    ``cuda`` is this process's GPU, ``local_rank``. A one-line ValueError for anything else."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(requested)
    except RuntimeError:  # torch's message is a traceback-sized list of backend names
        raise ValueError(f"unknown device {requested!r}; use auto, cpu, cuda or cuda:N "
                         "(N: the GPU index)") from None
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but CUDA is not available; use --device cpu")
        if requested == "cuda":
            return torch.device("cuda", local_rank)
    return torch.device(requested)


def setup_distributed(device: str = "auto") -> DistInfo:
    """Read torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` and join the process group.

    A plain ``python -m mpbn train`` (no such variables) is a world of one and starts no group.
    The backend is nccl for CUDA and gloo otherwise.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    if dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def cleanup_distributed(synchronize: bool = True) -> None:
    """Leave the process group if this process joined one.

    Args:
        synchronize: Wait for every rank first (on a clean exit). Without it gloo can abort
            ("terminate called without an active exception") when one rank tears its
            connections down while another still uses them; after an error, a rank must not
            wait for peers that may never arrive.
    """
    if dist.is_initialized():
        if synchronize:
            dist.barrier()
        dist.destroy_process_group()
