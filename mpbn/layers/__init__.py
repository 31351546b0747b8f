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
from mpbn.layers.recording import SpikeRecord, record_spikes
from mpbn.layers.sequence import ConvNorm, DirectEncoding, IntegratingClassifier, PerStep
from mpbn.layers.sync import convert_sync_norms, revert_sync_norms

__all__ = [
    "LIF",
    "MEMBRANE_NORMS",
    "NORMS",
    "BatchNormThroughTime",
    "ConvNorm",
    "DirectEncoding",
    "FoldWarning",
    "IntegratingClassifier",
    "MembraneBN",
    "PerStep",
    "SeqBatchNorm",
    "SeqLayerNorm",
    "SeqNorm",
    "SpikeMismatch",
    "SpikeRecord",
    "TemporalEffectiveBN",
    "ThresholdDependentBN",
    "convert_sync_norms",
    "create_neuron",
    "create_norm",
    "fold",
    "record_spikes",
    "revert_sync_norms",
    "spike_mismatch",
]
