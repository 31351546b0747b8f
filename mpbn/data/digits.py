"""The bundled demo set: scikit-learn's 1,797 real 8x8 handwritten digits (no download)."""

from __future__ import annotations

import numpy as np

from .arrays import ArrayDataset, channel_stats, in_memory_loaders
from .augment import AugmentSpec
from .registry import LoaderRequest, register
from .sampling import stratified_split_mask

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
    test_mask = stratified_split_mask(labels, TEST_FRACTION, SPLIT_SEED)
    return (
        ArrayDataset(images[~test_mask], labels[~test_mask]),
        ArrayDataset(images[test_mask], labels[test_mask]),
    )


#: Class names in label order (the label is the digit).
DIGIT_CLASSES = tuple(str(d) for d in range(10))


@register("digits")
def _build_digits(request: LoaderRequest):
    train, test = load_digits_split()
    # Statistics of the fixed training split; 8x8 digits get a 1-px crop and no flip (a mirrored
    # 2 is not a 2) and no Cutout (a 16-px hole would erase the digit).
    mean, std = channel_stats(train.images)
    spec = AugmentSpec(crop_padding=1, flip=False, cutout=0, autoaugment=request.autoaugment)
    return in_memory_loaders(
        request,
        train,
        test,
        spec=spec,
        mean=mean,
        std=std,
        layout="image",
        scale=1 / 255,
        num_classes=10,
        input_shape=(1, 8, 8),
        kind="static",
        timesteps=None,
        split="digits:stratified-80/20-seed0",
        class_names=DIGIT_CLASSES,
    )
