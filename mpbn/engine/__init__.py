"""The training engine: configuration, presets, the training loop, checkpoints, metrics, DDP.

``run(get_preset("mpbn-resnet19-cifar10-t2"))`` trains a paper experiment; ``run(TrainConfig())``
is the demo. See docs/TRAINING.md.
"""

from mpbn.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mpbn.engine.config import ConfigError, TrainConfig, apply_overrides, parse_set
from mpbn.engine.deploy import export_folded, load_folded
from mpbn.engine.distributed import (
    convert_sync_norms,
    setup_distributed,
    sync_batch_norm,
    sync_normalize_with_batch_stats,
)
from mpbn.engine.presets import PRESETS, get_preset, list_presets
from mpbn.engine.train import (
    RunOptions,
    SeedResult,
    TrainingDiverged,
    evaluate,
    load_model_from_checkpoint,
    run,
    train_one_epoch,
    train_seed,
)

__all__ = [
    "PRESETS",
    "CheckpointError",
    "ConfigError",
    "RunOptions",
    "SeedResult",
    "TrainConfig",
    "TrainingDiverged",
    "apply_overrides",
    "convert_sync_norms",
    "evaluate",
    "export_folded",
    "get_preset",
    "list_presets",
    "load_checkpoint",
    "load_folded",
    "load_model_from_checkpoint",
    "parse_set",
    "run",
    "save_checkpoint",
    "setup_distributed",
    "sync_batch_norm",
    "sync_normalize_with_batch_stats",
    "train_one_epoch",
    "train_seed",
]
