"""Each paper's neuron and training settings: the one table that ``models/`` and
``engine/presets.py`` both read, so a library user and a CLI user get the same neuron.

Pure data; imports nothing from mpbn, so every layer of the package may read it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MPBN_NEURON", "BNTT_NEURON"]

#: LIF settings of MPBN Sec. 5: V_th = 0.5, tau_decay = 0.25, hard reset, the rectangle (STE)
#: surrogate of Eq. 12. These are also the defaults of :class:`mpbn.LIF`.
MPBN_NEURON: dict[str, Any] = {"decay": 0.25, "v_threshold": 0.5, "reset": "hard",
                               "surrogate": "rectangle", "alpha": None, "detach_reset": False}

#: LIF settings of BNTT (Sec. 3.1, 4.1 and the authors' code): leak 0.95, threshold 1, soft
#: reset, linear surrogate with damping 0.3.
BNTT_NEURON: dict[str, Any] = {"decay": 0.95, "v_threshold": 1.0, "reset": "soft",
                               "surrogate": "linear", "alpha": 0.3}
