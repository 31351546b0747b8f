"""Export folded models to NIR (Neuromorphic Intermediate Representation) and read them back.

``to_nir(mpbn.fold(model), target="nir"|"snntorch"|"norse")`` builds a ``nir.NIRGraph`` (the
targets: :mod:`mpbn.export.targets`); ``simulate_nir(graph, x_seq)`` steps a (re-read) graph for
checking; ``from_nir(graph)`` builds an mpbn model from one (:mod:`mpbn.export.nir_import`).
Needs the optional ``nir`` package (``mpbn[export]``).
See :mod:`mpbn.export.nir_graph` for how the discrete LIF maps onto NIR's continuous nodes.
"""

from mpbn.export.nir_graph import (
    TARGETS,
    NIRExportError,
    read_nir,
    simulate_nir,
    to_nir,
    write_nir,
)
from mpbn.export.nir_import import from_nir

__all__ = ["NIRExportError", "TARGETS", "from_nir", "read_nir", "simulate_nir", "to_nir",
           "write_nir"]
