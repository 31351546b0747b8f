"""The one set of defaults of ``mpbn analyze`` and ``mpbn report`` (docs/ANALYSIS.md, "Defaults").

Every command-line default, every ``analyze_*`` keyword default and every
:class:`mpbn.analysis.report.ReportOptions` field reads its value here, so a page made by
``mpbn report`` and the same analysis made by ``mpbn analyze`` use the same sample, the same
landscape grid and the same perturbation strengths.
"""

from __future__ import annotations

__all__ = ["N_SAMPLES", "BATCH_SIZE", "SEED", "CHECKPOINT", "DEVICE", "LANDSCAPE_POINTS",
           "ALPHA_RANGE", "GAMMA_THRESHOLD", "EXIT_THRESHOLDS", "SIGMAS", "EPSILONS",
           "E_AC_PJ", "E_MAC_PJ"]

#: Test images every model-based analysis evaluates on (a fixed, class-stratified sample).
N_SAMPLES = 256
#: Images per forward pass (bounds memory; the numbers do not depend on it).
BATCH_SIZE = 128
#: Seed of the sample, the landscape direction, the noise and of Poisson encoders.
SEED = 0
#: Which checkpoint of a run folder is analysed: ``last`` (``last.pt``) or ``best``.
CHECKPOINT = "last"
DEVICE = "cpu"
#: Points of the 1D loss landscape on ``ALPHA_RANGE`` (odd, so ``alpha = 0`` is on the grid).
LANDSCAPE_POINTS = 21
ALPHA_RANGE = (-1.0, 1.0)
#: BNTT's exit threshold on the channel-averaged gamma (BNTT Sec. 3.4 uses 0.1).
GAMMA_THRESHOLD = 0.1
#: Gamma thresholds of the early-exit sweep (BNTT Fig. 7).
EXIT_THRESHOLDS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
#: Gaussian noise std and FGSM epsilons, in pixel units of images in [0, 1] (BNTT Fig. 8).
SIGMAS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
EPSILONS = (0.0, 0.01, 0.02, 0.05, 0.1)
#: 45 nm CMOS energy per 32-bit accumulate and multiply-accumulate, in picojoules
#: (Horowitz 2014, as BNTT Supp. E).
E_AC_PJ = 0.9
E_MAC_PJ = 4.6
