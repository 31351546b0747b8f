"""The bundled demo set: scikit-learn's 1,797 real 8x8 handwritten digits (no download)."""

from __future__ import annotations

import numpy as np

from .cifar import ArrayDataset

# The split never depends on the user's seed, so accuracies of different seeds share a test set.
SPLIT_SEED = 0
TEST_FRACTION = 0.2


def load_digits_split() -> tuple[ArrayDataset, ArrayDataset]:
    """Load the digits as uint8 ``[N, 1, 8, 8]`` with a fixed stratified 80/20 split.

    Returns:
        ``(train, test)``; pixel values 0..16 are rescaled to 0..255.

    Raises:
        ImportError: One line when scikit-learn is missing.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError(
            "the 'digits' demo set needs scikit-learn: pip install 'scikit-learn>=1.3'"
        ) from None
    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    test_mask = _stratified_test_mask(labels, TEST_FRACTION, SPLIT_SEED)
    return (
        ArrayDataset(images[~test_mask], labels[~test_mask]),
        ArrayDataset(images[test_mask], labels[test_mask]),
    )


def _stratified_test_mask(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Mark ``round(fraction * class_count)`` seeded samples of every class as test."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        mask[rng.permutation(members)[: int(round(fraction * len(members)))]] = True
    return mask
