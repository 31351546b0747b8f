"""mpbn: spiking neural networks with Membrane Potential Batch Normalization, BNTT and friends.

The curated public API; submodules hold the rest (``mpbn.functional``, ``mpbn.layers``,
``mpbn.models``, ``mpbn.data``, ``mpbn.engine``, ``mpbn.analysis``).
"""

from mpbn import data, models
from mpbn.layers import (
    LIF,
    BatchNormThroughTime,
    MembraneBN,
    SeqBatchNorm,
    SeqLayerNorm,
    TemporalEffectiveBN,
    ThresholdDependentBN,
    create_neuron,
    create_norm,
    fold,
    spike_mismatch,
)
from mpbn.version import __version__

__all__ = [
    "__version__",
    "data",
    "models",
    "LIF",
    "BatchNormThroughTime",
    "MembraneBN",
    "SeqBatchNorm",
    "SeqLayerNorm",
    "TemporalEffectiveBN",
    "ThresholdDependentBN",
    "create_neuron",
    "create_norm",
    "fold",
    "spike_mismatch",
]
