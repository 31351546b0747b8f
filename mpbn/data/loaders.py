"""``DeviceLoader``: an in-memory dataset that lives on the training device.

The whole set is one tensor (uint8 images or compact event frames) on ``device``; batches are
gathered and augmented there with tensor ops, so a CIFAR epoch costs a few kernel launches per
batch instead of 50,000 PIL calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from .augment import AugmentSpec, auto_augment, normalize_, random_crop_flip, random_cutout
from .sampling import derive_seed, epoch_indices, make_generator

LAYOUTS = ("image", "frames", "pixels")


class DeviceLoader:
    """Batches of an in-memory dataset, gathered, augmented and normalized on ``device``.

    Layouts:
        ``"image"``: data ``[N, C, H, W]`` -> yields ``[B, C, H, W]``.
        ``"frames"``: data ``[N, T, C, H, W]`` -> yields time-first ``[T, B, C, H, W]``; one crop
        and flip per sample is shared by all its time steps.
        ``"pixels"``: data ``[N, C, H, W]`` -> yields ``[H * W, B, C]``, one pixel per step in
        raster order (Sequential MNIST).

    Args:
        data: Samples, uint8 or floating point; moved to ``device`` once.
        targets: Integer labels ``[N]``.
        batch_size: Samples per batch on this rank.
        device: Where data lives and batches are produced.
        shuffle: Draw a new seeded order every epoch (training).
        augment: Augmentation to apply, or ``None`` (evaluation).
        mean: Per-channel mean for normalization after scaling, or ``None``.
        std: Per-channel std for normalization, or ``None``.
        scale: Factor applied after the cast to float32 (``1/255`` for uint8 images).
        layout: One of :data:`LAYOUTS`.
        seed: Base seed of the order and augmentation streams.
        rank: Rank of this process.
        world_size: Number of processes; each rank gets a disjoint shard of the epoch order.
        drop_last: Drop the last incomplete batch.
        pad_shards: Pad the order so all ranks get equal counts (training) instead of exact,
            possibly unequal shards (evaluation).

    Mid-epoch resume: :meth:`state_dict` during an iteration says where it stands (epoch,
    batches yielded, the augmentation generator's state after them); after
    :meth:`load_state_dict` the next iteration continues from there, yielding exactly the
    batches the interrupted one would have yielded next.
    """

    def __init__(
        self,
        data: torch.Tensor,
        targets: torch.Tensor,
        *,
        batch_size: int,
        device: torch.device | str = "cpu",
        shuffle: bool = False,
        augment: AugmentSpec | None = None,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        scale: float = 1.0 / 255.0,
        layout: str = "image",
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        pad_shards: bool | None = None,
    ) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if len(data) != len(targets):
            raise ValueError(f"data has {len(data)} samples but targets has {len(targets)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither")
        self.device = torch.device(device)
        self.data = data.to(self.device)
        self._pad = augment.crop_padding if augment is not None else 0
        if self._pad:
            # Pad the dataset once so each batch is a gather plus one crop gather, with no
            # per-batch padding pass.
            self.data = F.pad(self.data, (self._pad,) * 4)
        self.targets = torch.as_tensor(targets, dtype=torch.int64).to(self.device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.mean = mean
        self.std = std
        self.scale = scale
        self.layout = layout
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.pad_shards = shuffle if pad_shards is None else pad_shards
        self.epoch = 0
        self._generator: torch.Generator | None = None  # of the iteration in progress
        self._batches = 0  # batches that iteration has yielded
        self._resume_from: dict[str, Any] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration replays."""
        self.epoch = int(epoch)
        self._generator, self._batches = None, 0

    @property
    def num_samples(self) -> int:
        """Samples this rank visits per epoch."""
        return len(self._indices())

    def __len__(self) -> int:
        count = self.num_samples
        return count // self.batch_size if self.drop_last else -(-count // self.batch_size)

    def _indices(self) -> torch.Tensor:
        return epoch_indices(
            len(self.data),
            shuffle=self.shuffle,
            seed=self.seed,
            epoch=self.epoch,
            rank=self.rank,
            world_size=self.world_size,
            pad=self.pad_shards,
        )

    def state_dict(self) -> dict[str, Any]:
        """Where the iteration in progress stands, for :meth:`load_state_dict`.

        Returns:
            ``{"epoch", "batches", "generator"}``: the epoch, the batches yielded so far and
            the augmentation generator's state after them (a CPU uint8 tensor). Before any
            batch of the current epoch: that epoch at batch 0.
        """
        if self._generator is None:
            return {"epoch": self.epoch, "batches": 0,
                    "generator": self._fresh_generator().get_state()}
        return {"epoch": self.epoch, "batches": self._batches,
                "generator": self._generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Make the next iteration continue ``state``'s epoch after its ``batches``."""
        batches = int(state["batches"])
        self.set_epoch(int(state["epoch"]))
        if not 0 <= batches <= len(self):
            raise ValueError(f"cannot resume at batch {batches}: the epoch has {len(self)}")
        self._resume_from = {"epoch": self.epoch, "batches": batches,
                             "generator": state["generator"].cpu()}

    def _fresh_generator(self) -> torch.Generator:
        return make_generator(derive_seed(self.seed, self.epoch, self.rank, "augment"),
                              self.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        indices = self._indices().to(self.device)
        generator, start = self._fresh_generator(), 0
        resume, self._resume_from = self._resume_from, None
        if resume is not None:
            if resume["epoch"] != self.epoch:
                raise ValueError(f"the loaded state is of epoch {resume['epoch']}, but "
                                 f"set_epoch({self.epoch}) came after it")
            generator.set_state(resume["generator"])
            start = resume["batches"]
        self._generator, self._batches = generator, start
        for batch in range(start, len(self)):
            index = indices[batch * self.batch_size : (batch + 1) * self.batch_size]
            x = self._transform(self.data[index], generator)
            self._batches = batch + 1  # before the yield: the consumer may save state now
            yield x, self.targets[index]

    def _transform(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment, scale and normalize one gathered batch, then lay it out."""
        frames_shape = None
        if self.layout == "frames":
            height, width = x.shape[-2] - 2 * self._pad, x.shape[-1] - 2 * self._pad
            frames_shape = (*x.shape[:-2], height, width)
            # Fold time into channels so every step of a sample gets the same crop and flip.
            x = x.reshape(x.shape[0], -1, *x.shape[-2:])
        spec = self.augment
        if spec is not None:
            x = random_crop_flip(x, self._pad, spec.flip, generator, prepadded=self._pad > 0)
        x = x.to(torch.float32)
        if self.mean is None or (spec is not None and spec.autoaugment):
            x = x.mul_(self.scale) if self.scale != 1.0 else x
            scale = 1.0
        else:
            scale = self.scale  # folded into the normalization pass
        if spec is not None and spec.autoaugment:
            x = auto_augment(x, generator)
        if frames_shape is not None:
            x = x.reshape(frames_shape)
        if self.mean is not None:
            x = self._normalize(x, scale)
        if spec is not None and spec.cutout > 0:
            x = self._cutout(x, spec.cutout, generator, frames_shape)
        return self._layout(x)

    def _normalize(self, x: torch.Tensor, scale: float) -> torch.Tensor:
        # (scale * x - mean) / std == x * (scale / std) - mean / std: one fused pass.
        std = tuple(s / scale for s in self.std)
        mean = tuple(m / scale for m in self.mean)
        if x.dim() == 5:
            return normalize_(x.flatten(0, 1), mean, std).view(x.shape)
        return normalize_(x, mean, std)

    @staticmethod
    def _cutout(x, size, generator, frames_shape):
        if frames_shape is None:
            return random_cutout(x, size, generator)
        folded = random_cutout(x.reshape(x.shape[0], -1, *x.shape[-2:]), size, generator)
        return folded.reshape(frames_shape)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout == "frames":
            return x.transpose(0, 1).contiguous()
        if self.layout == "pixels":
            # [B, C, H, W] -> [H*W, B, C]: one pixel per time step in raster order.
            return x.flatten(2).permute(2, 0, 1).contiguous()
        return x
