"""Export folded models to NIR (Neuromorphic Intermediate Representation) and read them back.

``to_nir(mpbn.fold(model), dt=...)`` builds a ``nir.NIRGraph``; ``simulate_nir(graph, x_seq)``
steps a (re-read) graph for checking. Needs the optional ``nir`` package (``mpbn[export]``).
See :mod:`mpbn.export.nir_graph` for how the discrete LIF maps onto NIR's continuous nodes.
"""

from mpbn.export.nir_graph import NIRExportError, read_nir, simulate_nir, to_nir, write_nir

__all__ = ["NIRExportError", "read_nir", "simulate_nir", "to_nir", "write_nir"]
