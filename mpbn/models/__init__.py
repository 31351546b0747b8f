"""The model zoo: spiking ResNets, VGGs and MLPs behind a timm-like registry.

``create(name, num_classes=..., timesteps=..., norm=..., mpbn=...)`` builds a registered model;
``list_models()`` names them; ``register_model`` adds one. ``python -m mpbn.models`` prints the
parameter counts.
"""

from mpbn.models import mlp, resnet, vgg  # noqa: F401  (registers the models)
from mpbn.models._layers import (
    ENCODINGS,
    ConvNorm,
    IntegratingClassifier,
    PerStep,
    SpikingNet,
    count_parameters,
)
from mpbn.models._registry import create, is_model, list_models, register_model
from mpbn.models.mlp import SpikingMLP
from mpbn.models.resnet import BasicBlock, SpikingResNet
from mpbn.models.vgg import SpikingVGG

__all__ = [
    "ENCODINGS",
    "BasicBlock",
    "ConvNorm",
    "IntegratingClassifier",
    "PerStep",
    "SpikingMLP",
    "SpikingNet",
    "SpikingResNet",
    "SpikingVGG",
    "count_parameters",
    "create",
    "is_model",
    "list_models",
    "register_model",
]
