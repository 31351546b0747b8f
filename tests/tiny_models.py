"""Tiny but valid sizes for every registered model, so model tests run in seconds on a CPU.

Imported by tests as ``from tiny_models import tiny_model`` (``tests`` is on pytest's
``pythonpath``; not collected: the name does not start with ``test_``).
"""

from __future__ import annotations

from torch import nn

from mpbn.models import create

SMALL: dict[str, dict] = {
    "resnet19": dict(input_size=8, width=16),
    "resnet20": dict(input_size=16, width=8),
    "resnet20_narrow": dict(input_size=8),
    "resnet18": dict(input_size=32, width=8),
    "resnet34": dict(input_size=32, width=8),
    "vgg16": dict(input_size=32, width=8),
    "vgg9": dict(input_size=8, width=8),
    "vgg11": dict(input_size=16, width=8),
    "vggsnn": dict(input_size=16, width=8),
    "small_cnn": dict(),
    "fc_smnist": dict(),
    "fastnet": dict(input_size=8, widths=(8, 8, 16), extra=(1, 0)),
}


def tiny_model(name: str, timesteps: int, **kwargs: object) -> nn.Module:
    """``mpbn.models.create(name)`` at its :data:`SMALL` size, 5 classes; kwargs override."""
    return create(name, **{"timesteps": timesteps, "num_classes": 5, **SMALL[name], **kwargs})
