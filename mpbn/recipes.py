"""Each paper's neuron settings: the one table that ``models/`` and ``engine/presets.py`` both
read, so a library user (``mpbn.models.create("vgg9")``) and a CLI user (``mpbn train --preset
bntt-vgg9-cifar10-t25``) get the same neuron. ``tests/models/test_recipes.py`` checks that they
do for every preset.

Pure data; imports nothing from mpbn, so every layer of the package may read it.

The BNTT leak
-------------
BNTT's text does not give the leak ``lambda`` (Sec. 3.1, Eq. 4: "a leak factor with value less
than 1"). The authors' public code (github.com/Intelligent-Computing-Lab-Yale/
BNTT-Batch-Normalization-Through-Time, commit bdf5250) has two values:

- ``train.py`` line 32: ``--leak_mem`` default ``0.99``, passed to the model (lines 127/129);
  the README's VGG11 / CIFAR-100 command also passes ``--leak_mem 0.99``;
- ``model.py`` lines 37 and 158: the VGG9 and VGG11 classes default to ``leak_mem=0.95``, and
  the README's VGG9 / CIFAR-10 command passes ``--leak_mem 0.95``.

We follow the training script, :data:`BNTT_NEURON` ``decay = 0.99``: it is what the authors'
code trains with unless told otherwise (the model-class default is always overridden by
``train.py``), a near-integrating neuron suits BNTT's long Poisson trains (T = 25-50), and it is
the leak every BNTT preset and the results in ``docs/RESULTS.md`` already used. The other
value is a documented option: :data:`BNTT_NEURON_MODEL_CLASS` (the model classes' default and
the README's VGG9 / CIFAR-10 command), i.e. ``mpbn.models.create("vgg9", decay=0.95)`` or
``mpbn train --preset ... --set decay=0.95``.

The authors' script differs from the paper in its optimizer too: ``train.py`` line 31 defaults
to lr 0.1 (the README commands pass the paper's 0.3), line 138 hard-codes weight decay 1e-4 (the
paper says 5e-4, Sec. 4.1), and line 139 builds a StepLR that is never stepped (the x0.1 steps
at 50/70/90% of the paper come from ``utills.py`` line 5). The presets follow the paper there
(:mod:`mpbn.engine.presets`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["MPBN_NEURON", "BNTT_NEURON", "BNTT_NEURON_MODEL_CLASS", "NEURON_FIELDS"]

#: The neuron keys a recipe sets; the training config has a field for each.
NEURON_FIELDS = ("decay", "v_threshold", "reset", "surrogate", "alpha")

#: LIF settings of MPBN Sec. 5: V_th = 0.5, tau_decay = 0.25, hard reset, the rectangle (STE)
#: surrogate of Eq. 12. These are also the defaults of :class:`mpbn.LIF`.
MPBN_NEURON: dict[str, Any] = {"decay": 0.25, "v_threshold": 0.5, "reset": "hard",
                               "surrogate": "rectangle", "alpha": None, "detach_reset": False}

#: LIF settings of BNTT (Sec. 3.1, 4.1 and the authors' code): leak 0.99 (the authors'
#: training script; see the module docstring), threshold 1, soft reset, linear surrogate with
#: damping 0.3.
BNTT_NEURON: dict[str, Any] = {"decay": 0.99, "v_threshold": 1.0, "reset": "soft",
                               "surrogate": "linear", "alpha": 0.3}

#: BNTT with the leak 0.95 of the authors' model classes (``model.py`` lines 37, 158) and of
#: their README's VGG9 / CIFAR-10 command: ``create("vgg9", neuron=BNTT_NEURON_MODEL_CLASS)``.
BNTT_NEURON_MODEL_CLASS: dict[str, Any] = {**BNTT_NEURON, "decay": 0.95}
