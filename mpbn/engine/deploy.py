"""Folded deploy models: write them as safetensors + JSON; :func:`load_folded` rebuilds them.

The JSON holds the training config and the dataset shapes; rebuilding
(:func:`mpbn.engine.loading.load_model` on the folder) creates the model from the config,
folds it (which fixes the module tree) and loads the folded tensors. Neither file can
execute code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mpbn.engine.config import TrainConfig

__all__ = ["export_folded", "load_folded"]


def export_folded(folded: nn.Module, cfg: TrainConfig, data_info: dict[str, Any],
                  out_dir: str | Path, extra: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write ``out_dir/model.safetensors`` and ``out_dir/model.json``."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in folded.state_dict().items()}
    weights, meta = out / "model.safetensors", out / "model.json"
    save_file(state, str(weights))
    meta.write_text(json.dumps({"format": "mpbn-folded-v1", "config": cfg.to_dict(),
                                "data_info": data_info, **(extra or {})}, indent=2) + "\n")
    return weights, meta


def load_folded(out_dir: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model written by :func:`export_folded` (eval mode): ``load_model(out_dir)``."""
    from mpbn.engine.loading import load_model

    return load_model(out_dir, device).model
