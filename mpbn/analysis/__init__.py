"""Analyses of trained SNNs: the figures of the MPBN and BNTT papers, as functions and commands.

Each ``analyze_*`` function writes PNG/SVG plots and the numbers (JSON/CSV) to an output folder
and returns the numbers; ``mpbn analyze ...`` and ``mpbn report`` wrap them
(:mod:`mpbn.analysis.cli`). Plotting needs matplotlib (``pip install mpbn[analysis]``).
"""

from mpbn.analysis.compare import compare_runs, seed_values, student_t_ppf, welch_ci
from mpbn.analysis.curves import aggregate_curve, analyze_curves
from mpbn.analysis.energy import E_AC_PJ, E_MAC_PJ, analyze_energy, energy_table
from mpbn.analysis.fold_report import analyze_fold, folded_thresholds
from mpbn.analysis.gamma import (
    analyze_early_exit,
    analyze_gamma,
    early_exit_curve,
    exit_step,
    gamma_table,
)
from mpbn.analysis.io import Run, load_run, load_test_sample, model_from_checkpoint
from mpbn.analysis.landscape import (
    analyze_landscape,
    filter_normalized_direction,
    loss_landscape_1d,
)
from mpbn.analysis.robustness import InputSpace, analyze_robustness, fgsm, gaussian_noise
from mpbn.analysis.spikes import Activity, analyze_spikes, measure_activity, synaptic_ops

__all__ = [
    "E_AC_PJ",
    "E_MAC_PJ",
    "Activity",
    "InputSpace",
    "Run",
    "aggregate_curve",
    "analyze_curves",
    "analyze_early_exit",
    "analyze_energy",
    "analyze_fold",
    "analyze_gamma",
    "analyze_landscape",
    "analyze_robustness",
    "analyze_spikes",
    "compare_runs",
    "early_exit_curve",
    "energy_table",
    "exit_step",
    "fgsm",
    "filter_normalized_direction",
    "folded_thresholds",
    "gamma_table",
    "gaussian_noise",
    "load_run",
    "load_test_sample",
    "loss_landscape_1d",
    "measure_activity",
    "model_from_checkpoint",
    "seed_values",
    "student_t_ppf",
    "synaptic_ops",
    "welch_ci",
]
