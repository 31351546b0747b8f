"""Folded deploy models: write them as safetensors + JSON, and rebuild them.

The JSON holds the training config and the dataset shapes; rebuilding creates the model from
the config, folds it (which fixes the module tree) and loads the folded tensors. Neither file
can execute code.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from mpbn.engine.config import TrainConfig
from mpbn.layers.neuron import LIF

__all__ = ["export_folded", "load_folded"]

_LIF_TENSORS = ("v_threshold", "threshold_sign", "reset_amount")


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
    """Rebuild a model written by :func:`export_folded` (eval mode)."""
    from safetensors.torch import load_file

    from mpbn.engine.train import build_model
    from mpbn.layers.fold import fold

    out = Path(out_dir)
    meta = json.loads((out / "model.json").read_text())
    cfg = TrainConfig.from_dict(meta["config"])
    info = SimpleNamespace(num_classes=meta["data_info"]["num_classes"],
                           input_shape=tuple(meta["data_info"]["input_shape"]))
    model = fold(build_model(cfg, info))
    state = load_file(str(out / "model.safetensors"), device=str(device))
    # Folded thresholds are per-channel/per-element tensors, and threshold_sign exists only
    # where some MPBN scale was negative: give each LIF the tensors the file has.
    modules = dict(model.named_modules())
    for key, value in state.items():
        prefix, _, name = key.rpartition(".")
        module = modules.get(prefix)
        if isinstance(module, LIF) and name in _LIF_TENSORS and name not in module._buffers:
            if hasattr(module, name):
                delattr(module, name)
            module.register_buffer(name, value.clone())
    model.load_state_dict(state)
    return model.to(device).eval()
