"""A restricted unpickler for dataset files: numpy arrays and plain containers only.

``pickle.load`` on a downloaded file executes whatever callables the file names. The CIFAR
python batches only need numpy's array reconstruction, so nothing else is admitted.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np

try:  # numpy >= 2 moved the implementation; old pickles still name numpy.core
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct

#: numpy pickles call ``_reconstruct(ndarray, (0,), b"b")`` and then set the real shape and
#: data from bytes in the file; a larger shape here would make numpy allocate it first.
_MAX_RECONSTRUCT_ELEMENTS = 1


class UnsafePickleError(ValueError):
    """The pickle names a global outside the allow-list, or calls one with what it refuses."""


def _small_reconstruct(subtype: Any, shape: Any, dtype: Any) -> Any:
    size = int(np.prod(shape)) if isinstance(shape, tuple | list) else int(shape)
    if subtype is not np.ndarray or size > _MAX_RECONSTRUCT_ELEMENTS:
        name = getattr(subtype, "__name__", subtype)
        raise UnsafePickleError(f"refusing numpy _reconstruct of {name} with shape {shape}: "
                                "numpy pickles start from an empty array")
    return _reconstruct(subtype, shape, dtype)


def _no_size(kind: type) -> Any:
    """``bytes`` / ``bytearray`` that refuse an integer (a request to allocate that many zeros:
    a few bytes of pickle could otherwise ask for gigabytes)."""

    def build(*args: Any) -> Any:
        if args and isinstance(args[0], int):
            raise UnsafePickleError(f"refusing {kind.__name__}({args[0]}): an allocation by size")
        return kind(*args)

    return build


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _small_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _small_reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # Python 3 protocol-2 pickles encode bytes objects through codecs.encode(str, "latin1").
    ("_codecs", "encode"): __import__("codecs").encode,
    ("builtins", "list"): list,
    ("builtins", "dict"): dict,
    ("builtins", "tuple"): tuple,
    ("builtins", "bytes"): _no_size(bytes),
    ("builtins", "bytearray"): _no_size(bytearray),
    ("builtins", "str"): str,
    ("builtins", "int"): int,
    ("builtins", "float"): float,
    ("__builtin__", "list"): list,
    ("__builtin__", "dict"): dict,
}



class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose ``find_class`` admits only numpy array reconstruction and containers."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load {module}.{name}: only numpy arrays and plain containers "
                "are allowed in dataset pickles"
            ) from None


def load_pickle(data: bytes, source: str) -> Any:
    """Unpickle dataset bytes with :class:`RestrictedUnpickler`.

    Args:
        data: Pickle bytes.
        source: File name for error messages.

    Returns:
        The unpickled object.

    Raises:
        ValueError: One line naming ``source`` when the pickle is unsafe or malformed.
    """
    try:
        # latin1 maps Python 2 str bytes one-to-one, which is what numpy expects for array data.
        return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except UnsafePickleError as error:
        raise ValueError(f"{source}: {error}") from None
    except Exception as error:  # noqa: BLE001 - any decoding failure means a bad file
        raise ValueError(
            f"{source}: not a readable dataset pickle ({type(error).__name__}: {error})"
        ) from None
