"""Folded deploy models: write them as safetensors + JSON; :func:`load_folded` rebuilds them.

The JSON holds the training config, the dataset shapes and the preprocessing a consumer needs
to feed the model (:func:`preprocessing`: pixel scale, per-channel mean/std, encoding, ``T``,
dataset and class names); rebuilding (:func:`mpbn.engine.loading.load_model` on the folder)
creates the model from the config, folds it (which fixes the module tree) and loads the folded
tensors. Neither file can execute code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mpbn.engine.checkpoint import chmod_like_open
from mpbn.engine.config import TrainConfig

__all__ = ["data_info_record", "export_folded", "load_folded", "preprocessing"]


def data_info_record(info: Any) -> dict[str, Any]:
    """What checkpoints keep of a :class:`~mpbn.data.info.DatasetInfo`: the shapes that rebuild
    the model, and the preprocessing :func:`export_folded` writes next to the weights."""
    def floats(values: Any) -> list[float] | None:
        return None if values is None else [float(v) for v in values]

    names = getattr(info, "class_names", None)
    scale = getattr(info, "scale", None)
    return {"num_classes": int(info.num_classes),
            "input_shape": [int(s) for s in info.input_shape],
            "name": info.name, "kind": info.kind,
            "timesteps": None if info.timesteps is None else int(info.timesteps),
            "scale": None if scale is None else float(scale),
            "mean": floats(info.mean), "std": floats(info.std),
            "class_names": None if names is None else [str(n) for n in names]}


def preprocessing(cfg: TrainConfig, data_info: dict[str, Any]) -> dict[str, Any]:
    """How raw samples become the model's input, for consumers of a deploy folder.

    ``x = (raw * pixel_scale - mean[c]) / std[c]`` per channel (``mean``/``std`` ``None``: no
    normalization), then ``encoding``: ``"direct"`` repeats the image ``timesteps`` times,
    ``"poisson"`` draws Bernoulli spikes with that probability each step, ``"sequence"``
    means the input already is ``[T, B, ...]`` (event frames, pixel sequences). Fields a
    checkpoint written before they were recorded lacks are ``None``.
    """
    kind = data_info.get("kind")
    return {"dataset": data_info.get("name", cfg.data.name),
            "input_shape": list(data_info["input_shape"]),
            "kind": kind,
            "pixel_scale": data_info.get("scale"),
            "mean": data_info.get("mean"), "std": data_info.get("std"),
            "encoding": "sequence" if kind == "sequence" else cfg.model.encoding,
            "timesteps": int(cfg.model.timesteps),
            "class_names": data_info.get("class_names")}


def export_folded(folded: nn.Module, cfg: TrainConfig, data_info: dict[str, Any],
                  out_dir: str | Path, extra: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write ``out_dir/model.safetensors`` and ``out_dir/model.json`` (mode 0666 minus umask).

    ``model.json`` holds ``format``, ``config``, ``data_info`` (as the checkpoint stored it),
    ``preprocessing`` (:func:`preprocessing`) and ``extra``.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in folded.state_dict().items()}
    weights, meta = out / "model.safetensors", out / "model.json"
    save_file(state, str(weights))
    meta.write_text(json.dumps({"format": "mpbn-folded-v1", "config": cfg.to_dict(),
                                "data_info": data_info,
                                "preprocessing": preprocessing(cfg, data_info),
                                **(extra or {})}, indent=2) + "\n")
    for path in (weights, meta):
        chmod_like_open(path)
    return weights, meta


def load_folded(out_dir: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model written by :func:`export_folded` (eval mode): ``load_model(out_dir)``."""
    from mpbn.engine.loading import load_model

    return load_model(out_dir, device).model
