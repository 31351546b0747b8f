"""The training engine: configuration, presets, the training loop, checkpoints, metrics, DDP."""

from mpbn.engine.distributed import (
    convert_sync_norms,
    sync_batch_norm,
    sync_normalize_with_batch_stats,
)

__all__ = ["convert_sync_norms", "sync_batch_norm", "sync_normalize_with_batch_stats"]
