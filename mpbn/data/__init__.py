"""Datasets, device-side augmentation and spike encoders.

Public API: :func:`create_loaders`, :func:`create_splits` (with a held-out validation split),
:func:`list_datasets`, :class:`DatasetInfo`; for a dataset of one's own :func:`register`,
:class:`LoaderRequest`, :class:`ArrayDataset`, :func:`in_memory_loaders`, :class:`AugmentSpec`,
:func:`channel_stats` (docs/OWN_MODEL.md);
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
from .arrays import ArrayDataset, channel_stats, in_memory_loaders
from .augment import AugmentSpec
from .info import DatasetInfo
from .loaders import DeviceLoader
from .registry import (
    DataSplits,
    LoaderRequest,
    create_loaders,
    create_splits,
    list_datasets,
    register,
)

__all__ = [
    "ArrayDataset",
    "AugmentSpec",
    "DataSplits",
    "DatasetInfo",
    "DeviceLoader",
    "create_loaders",
    "create_splits",
    "channel_stats",
    "direct_encode",
    "in_memory_loaders",
    "list_datasets",
    "poisson_encode",
    "register",
    "LoaderRequest",
]
