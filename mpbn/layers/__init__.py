"""nn.Modules over the functional core, and name -> class factories."""

from mpbn.layers.fold import FoldWarning, SpikeMismatch, fold, spike_mismatch
from mpbn.layers.neuron import LIF, MEMBRANE_NORMS, MembraneBN, create_neuron
from mpbn.layers.norm import (
    NORMS,
    BatchNormThroughTime,
    SeqBatchNorm,
    SeqLayerNorm,
    SeqNorm,
    TemporalEffectiveBN,
    ThresholdDependentBN,
    create_norm,
)

__all__ = [
    "LIF",
    "MEMBRANE_NORMS",
    "NORMS",
    "BatchNormThroughTime",
    "FoldWarning",
    "MembraneBN",
    "SeqBatchNorm",
    "SeqLayerNorm",
    "SeqNorm",
    "SpikeMismatch",
    "TemporalEffectiveBN",
    "ThresholdDependentBN",
    "create_neuron",
    "create_norm",
    "fold",
    "spike_mismatch",
]
