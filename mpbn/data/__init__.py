"""Datasets, device-side augmentation and spike encoders.

Public API: :func:`create_loaders`, :func:`create_splits` (with a held-out validation split),
:func:`list_datasets`, :class:`DatasetInfo`,
:func:`poisson_encode`, :func:`direct_encode`, :class:`DeviceLoader`.

Layout: ``registry.py`` maps names to builders and holds :func:`create_loaders`; each dataset
module registers its own builders with ``@register(name)`` and is imported here, the one place
that does so; ``arrays.py`` (in-memory splits -> loaders), ``sampling.py`` (seeded orders and
stratified draws), ``download.py`` (files on disk) are the shared helpers. The encoders live in
:mod:`mpbn.functional.encoding` and are re-exported here.
"""

from mpbn.functional.encoding import direct_encode, poisson_encode

# Imported for their @register side effect: each module adds its datasets to the registry.
from . import cifar, digits, events_datasets, folders, mnist  # noqa: F401
from .info import DatasetInfo
from .loaders import DeviceLoader
from .registry import DataSplits, create_loaders, create_splits, list_datasets

__all__ = [
    "DataSplits",
    "DatasetInfo",
    "DeviceLoader",
    "create_loaders",
    "create_splits",
    "direct_encode",
    "list_datasets",
    "poisson_encode",
]
