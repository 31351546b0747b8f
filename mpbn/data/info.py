"""Description of a loaded dataset, shared by every loader in :mod:`mpbn.data`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a training loop need to know about a dataset.

    Attributes:
        name: Registry name, e.g. ``"cifar10"``.
        num_classes: Number of target classes.
        input_shape: Shape of ONE time step of ONE sample, e.g. ``(3, 32, 32)``, ``(2, 48, 48)``
            or ``(1,)`` for Sequential MNIST.
        mean: Per-channel mean used for normalization, or ``None`` when inputs are not normalized.
        std: Per-channel standard deviation used for normalization, or ``None``.
        kind: ``"static"`` (loaders yield ``[B, C, H, W]``) or ``"sequence"`` (``[T, B, ...]``).
        timesteps: ``None`` for static data, the number of time steps ``T`` for sequences.
        split: Name of the train/test split, e.g. ``"cifar10-dvs:9to1-per-class"``.
        num_train: Number of training samples (after ``holdout`` and ``train_subset``).
        num_test: Number of test samples (after ``test_subset``).
        scale: Factor the raw samples are multiplied by before normalization (``1/255`` for
            uint8 images, ``1.0`` for event counts), or ``None`` where not recorded.
        class_names: Name of each class in label order, or ``None`` where the dataset has none.
        num_holdout: Training samples held out for validation (:func:`mpbn.data.create_splits`),
            or ``None``.
    """

    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    kind: str
    timesteps: int | None
    split: str
    num_train: int
    num_test: int
    scale: float | None = None
    class_names: tuple[str, ...] | None = None
    num_holdout: int | None = None
