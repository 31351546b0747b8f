"""Pure math: neuron steps, surrogate spike functions, norm statistics, threshold folding."""

from mpbn.functional.encoding import direct_encode, poisson_encode
from mpbn.functional.fold import fold_bn_into_weights, fold_membrane_threshold
from mpbn.functional.neuron import RESETS, LIFParams, lif_step, run_over_time
from mpbn.functional.norm import (
    normalize_with_batch_stats,
    normalize_with_running_stats,
    update_running_stats,
)
from mpbn.functional.surrogate import DEFAULT_ALPHA, SURROGATES, spike, surrogate_grad

__all__ = [
    "DEFAULT_ALPHA",
    "RESETS",
    "SURROGATES",
    "LIFParams",
    "direct_encode",
    "fold_bn_into_weights",
    "fold_membrane_threshold",
    "lif_step",
    "normalize_with_batch_stats",
    "normalize_with_running_stats",
    "poisson_encode",
    "run_over_time",
    "spike",
    "surrogate_grad",
    "update_running_stats",
]
