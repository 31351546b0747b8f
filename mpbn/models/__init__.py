"""The model zoo: spiking ResNets, VGGs and MLPs behind a timm-like registry.

``create(name, num_classes=..., timesteps=..., norm=..., mpbn=...)`` builds a registered model;
``list_models()`` names them; ``register_model`` adds one. ``python -m mpbn.models`` prints the
parameter counts.

``ConvNorm``, ``PerStep`` and ``IntegratingClassifier`` live in :mod:`mpbn.layers.sequence`
and are re-exported here, where they used to be.
"""

from mpbn.layers.sequence import ConvNorm, IntegratingClassifier, PerStep
from mpbn.models import fast, mlp, resnet, vgg  # noqa: F401  (registers the models)
from mpbn.models._registry import create, is_model, list_models, register_model
from mpbn.models.base import ENCODINGS, SpikingNet, count_parameters
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
