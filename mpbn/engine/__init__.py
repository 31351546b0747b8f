"""The training engine: configuration, presets, the training loop, checkpoints, metrics, DDP.

``run(get_preset("mpbn-resnet19-cifar10-t2"))`` trains a paper experiment; ``run(TrainConfig())``
is the demo. See docs/TRAINING.md.

    config.py      TrainConfig (model/neuron, data, optim, run), --set paths, old flat configs
    presets.py     the papers' experiments as named overrides
    train.py       run -> train_seed (set-up, epochs, fold) -> train_one_epoch
    evaluation.py  evaluate: loss, accuracy (a fraction), spike rate
    loading.py     build_model (config -> model), load_model (checkpoint/deploy -> model)
    optim.py       weight-decay groups, optimizer, per-step learning-rate schedule
    rundir.py      run-directory layout, --force/--resume checks, summary
    checkpoint.py  safe, atomic checkpoint files;  deploy.py  folded safetensors export
    distributed.py torchrun set-up;  metrics.py  metrics.jsonl, spike rates, mean/std
    compiling.py   compile_model: torch.compile with the Inductor options measured per model
"""

from mpbn.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mpbn.engine.compiling import compile_model
from mpbn.engine.config import ConfigError, TrainConfig, apply_overrides, parse_set
from mpbn.engine.deploy import export_folded, load_folded
from mpbn.engine.distributed import (
    convert_sync_norms,
    setup_distributed,
    sync_batch_norm,
    sync_normalize_with_batch_stats,
)
from mpbn.engine.evaluation import evaluate
from mpbn.engine.loading import load_model
from mpbn.engine.presets import PRESETS, get_preset, list_presets
from mpbn.engine.rundir import SeedResult
from mpbn.engine.train import (
    RunOptions,
    TrainingDiverged,
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
    "compile_model",
    "convert_sync_norms",
    "evaluate",
    "export_folded",
    "get_preset",
    "list_presets",
    "load_checkpoint",
    "load_folded",
    "load_model",
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
