"""Datasets, device-side augmentation and spike encoders.

Public API: :func:`create_loaders`, :func:`list_datasets`, :class:`DatasetInfo`,
:func:`poisson_encode`, :func:`direct_encode`, :class:`DeviceLoader`.
"""

from mpbn.functional.encoding import direct_encode, poisson_encode

from .info import DatasetInfo
from .loaders import DeviceLoader
from .registry import create_loaders, list_datasets

__all__ = [
    "DatasetInfo",
    "DeviceLoader",
    "create_loaders",
    "direct_encode",
    "list_datasets",
    "poisson_encode",
]
