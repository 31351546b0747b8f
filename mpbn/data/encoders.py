"""Re-export of the spike encoders, which live in :mod:`mpbn.functional.encoding`.

Kept so that ``from mpbn.data.encoders import poisson_encode`` keeps working; new code imports
from :mod:`mpbn.functional` (encoders are pure tensor functions, not data loading).
"""

from mpbn.functional.encoding import direct_encode, poisson_encode

__all__ = ["direct_encode", "poisson_encode"]
