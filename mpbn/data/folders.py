"""ImageNet and Tiny-ImageNet from image folders, decoded with PIL in DataLoader workers.

Workers return uint8 tensors; conversion to float and normalization happen on the device for
the whole batch. Every sample's random crop and flip come from a seed derived from
``(seed, epoch, rank, position)``, so an epoch is identical whichever worker decodes it, and
an epoch resumed mid-way (``run.checkpoint_every``) continues it exactly.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .augment import normalize
from .download import check_root, require_regular_file
from .info import DatasetInfo
from .registry import LoaderRequest, register
from .sampling import derive_seed, epoch_indices, make_generator, take_samples

try:
    from PIL import Image, UnidentifiedImageError
except ImportError:  # pragma: no cover - depends on the environment
    Image = None

#: Far above any ImageNet or Tiny-ImageNet image (8192 x 8192): a header declaring more is
#: refused before the pixels are decoded (a few bytes could otherwise ask for gigabytes).
MAX_IMAGE_PIXELS = 1 << 26

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TINY_MEAN = (0.4802, 0.4481, 0.3975)
TINY_STD = (0.2302, 0.2265, 0.2262)


@dataclass(frozen=True)
class FolderTransform:
    """PIL pipeline of one split.

    Attributes:
        size: Output side.
        train: RandomResizedCrop + flip when ``True``; resize + centre crop otherwise.
        resize: Shorter side before the centre crop (evaluation).
        scale: Area range of RandomResizedCrop.
        ratio: Aspect-ratio range of RandomResizedCrop.
    """

    size: int
    train: bool
    resize: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __call__(self, image, rng: random.Random) -> torch.Tensor:
        image = image.convert("RGB")
        if self.train:
            box = random_resized_crop_box(image.size, self.scale, self.ratio, rng)
            image = image.resize((self.size, self.size), Image.BILINEAR, box=box)
            if rng.random() < 0.5:
                image = image.transpose(Image.FLIP_LEFT_RIGHT)
        else:
            image = center_crop(resize_shorter(image, self.resize), self.size)
        array = np.asarray(image, dtype=np.uint8)
        return torch.from_numpy(array.copy()).permute(2, 0, 1)


def random_resized_crop_box(
    image_size: tuple[int, int],
    scale: tuple[float, float],
    ratio: tuple[float, float],
    rng: random.Random,
) -> tuple[int, int, int, int]:
    """Crop box ``(left, top, right, bottom)`` drawn like torchvision's RandomResizedCrop."""
    width, height = image_size
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        crop_w = int(round(math.sqrt(target * aspect)))
        crop_h = int(round(math.sqrt(target / aspect)))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = rng.randint(0, height - crop_h)
            left = rng.randint(0, width - crop_w)
            return left, top, left + crop_w, top + crop_h
    # Fallback: the largest centred crop within the ratio range.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        crop_w, crop_h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        crop_w, crop_h = int(round(height * ratio[1])), height
    else:
        crop_w, crop_h = width, height
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return left, top, left + crop_w, top + crop_h


def resize_shorter(image, size: int):
    """Resize so the shorter side is ``size``, keeping the aspect ratio."""
    width, height = image.size
    if min(width, height) == size:
        return image
    if width <= height:
        new = (size, max(1, int(round(height * size / width))))
    else:
        new = (max(1, int(round(width * size / height))), size)
    return image.resize(new, Image.BILINEAR)


def center_crop(image, size: int):
    """Central ``size x size`` crop."""
    width, height = image.size
    left, top = int(round((width - size) / 2)), int(round((height - size) / 2))
    return image.crop((left, top, left + size, top + size))


class ImageFolderDataset(Dataset):
    """Decodes ``(path, label)`` samples; indexed by ``(index, sample_seed)`` pairs."""

    def __init__(self, samples: list[tuple[Path, int]], transform: FolderTransform) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, sample_seed = item
        path, label = self.samples[index]
        try:
            require_regular_file(path, "an image file")  # a FIFO would block the worker
            with Image.open(path) as image:
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    raise ValueError(f"declares {image.width}x{image.height} pixels, more than "
                                     f"{MAX_IMAGE_PIXELS:,}")
                tensor = self.transform(image, random.Random(sample_seed))
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError,
                ValueError) as error:
            raise ValueError(f"{path}: not a decodable image ({error})") from None
        return tensor, label


class _SeededSampler(Sampler):
    """Yields ``(index, sample_seed)`` for one rank's shard of one epoch."""

    def __init__(self, loader: FolderLoader) -> None:
        self.loader = loader

    def __len__(self) -> int:
        return max(len(self.loader.indices()) - self.loader.first_sample, 0)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        base = derive_seed(self.loader.seed, self.loader.epoch, self.loader.rank, "folder")
        first = self.loader.first_sample
        for position, index in enumerate(self.loader.indices().tolist()[first:], first):
            # A sample's seed is its position in the epoch, so a resumed epoch skips the
            # samples before ``first`` and augments the rest as the uninterrupted one did.
            yield index, (base + position) & ((1 << 63) - 1)


class FolderLoader:
    """Iterable of ``(float32 [B, 3, S, S], int64 [B])`` on ``device`` with ``set_epoch``."""

    def __init__(
        self,
        dataset: ImageFolderDataset,
        *,
        batch_size: int,
        device: torch.device,
        shuffle: bool,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        num_workers: int,
        seed: int,
        rank: int,
        world_size: int,
    ) -> None:
        self.dataset = dataset
        self.device = device
        self.shuffle = shuffle
        self.mean, self.std = mean, std
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.batch_size = batch_size
        self.epoch = 0
        self.first_sample = 0  # of the iteration in progress (non-zero when resumed)
        self._batches = 0  # batches the iteration in progress has yielded, resumed ones included
        self._resume_from: dict[str, int] | None = None
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=_SeededSampler(self),
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
            drop_last=False,
            # Each iteration draws its workers' base seed from this generator; without one it
            # would draw from the global RNG, so a resumed epoch (one more iteration than the
            # uninterrupted run made) would shift the model's random stream (Poisson noise).
            generator=make_generator(derive_seed(seed, rank, "folder-workers")),
        )

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration replays."""
        self.epoch = int(epoch)
        self._batches = 0

    def indices(self) -> torch.Tensor:
        """Dataset indices this rank visits in the current epoch."""
        return epoch_indices(
            len(self.dataset), shuffle=self.shuffle, seed=self.seed, epoch=self.epoch,
            rank=self.rank, world_size=self.world_size, pad=self.shuffle,
        )  # fmt: skip

    def __len__(self) -> int:
        """Batches of a whole epoch (also while a resumed one yields only its rest)."""
        return -(-len(self.indices()) // self.batch_size)

    def state_dict(self) -> dict[str, int]:
        """Where the iteration in progress stands, for :meth:`load_state_dict`:
        ``{"epoch", "batches"}`` (every sample's augmentation follows from its position, so
        there is no generator state to keep)."""
        return {"epoch": self.epoch, "batches": self._batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Make the next iteration continue ``state``'s epoch after its ``batches``."""
        batches = int(state["batches"])
        self.set_epoch(int(state["epoch"]))
        if not 0 <= batches <= len(self):
            raise ValueError(f"cannot resume at batch {batches}: the epoch has {len(self)}")
        self._resume_from = {"epoch": self.epoch, "batches": batches}

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        resume, self._resume_from = self._resume_from, None
        start = 0
        if resume is not None:
            if resume["epoch"] != self.epoch:
                raise ValueError(f"the loaded state is of epoch {resume['epoch']}, but "
                                 f"set_epoch({self.epoch}) came after it")
            start = resume["batches"]
        # Read by the sampler when the DataLoader draws its first index, so it stays set for
        # the whole iteration.
        self.first_sample, self._batches = start * self.batch_size, start
        batches = iter(self.loader)
        while True:
            try:
                images, labels = next(batches)
            except StopIteration:
                return
            except ValueError as error:
                raise ValueError(_worker_message(error)) from None
            images = images.to(self.device, non_blocking=True).float().div_(255.0)
            self._batches += 1  # before the yield: the consumer may save state now
            yield normalize(images, self.mean, self.std), labels.to(self.device)


def _worker_message(error: BaseException) -> str:
    """The decoder's own one-line message (it names the file) out of a DataLoader worker's
    "Caught ValueError in DataLoader worker process 1. Original Traceback ..." wrapper."""
    text = str(error)
    if "DataLoader worker" not in text:
        return text
    last = [line for line in text.splitlines() if line.strip()][-1]
    return last.split(": ", 1)[1] if last.startswith("ValueError: ") else last


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _class_folders(folder: Path, expected: str) -> list[Path]:
    classes = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if not classes:
        raise FileNotFoundError(f"{folder}: expected {expected}")
    return classes


def list_imagenet(root: Path) -> tuple[list, list, list[str]]:
    """Samples of ``root/train/CLASS/*.JPEG`` and ``root/val/CLASS/*.JPEG``."""
    classes = _class_folders(root / "train", "one folder per class (train/CLASS/*.JPEG)")
    names = [c.name for c in classes]
    index = {name: i for i, name in enumerate(names)}
    train = [(p, i) for i, c in enumerate(classes) for p in sorted(c.iterdir()) if _is_image(p)]
    val_classes = _class_folders(
        root / "val", "val/CLASS/*.JPEG (sort the flat validation images into class folders)"
    )
    val = []
    for folder in val_classes:
        if folder.name not in index:
            raise ValueError(f"{folder}: class {folder.name} has no training folder")
        val += [(p, index[folder.name]) for p in sorted(folder.iterdir()) if _is_image(p)]
    return train, val, names


def list_tiny_imagenet(root: Path) -> tuple[list, list, list[str]]:
    """Samples of Tiny-ImageNet's ``train/CLASS/images`` and ``val/images`` +
    ``val/val_annotations.txt``."""
    wnids = root / "wnids.txt"
    if wnids.is_file():
        names = [line.strip() for line in wnids.read_text().splitlines() if line.strip()]
    else:
        names = [c.name for c in _class_folders(root / "train", "train/CLASS/images/*.JPEG")]
    index = {name: i for i, name in enumerate(names)}
    train = []
    for name in names:
        folder = root / "train" / name / "images"
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: expected Tiny-ImageNet train/CLASS/images/")
        train += [(p, index[name]) for p in sorted(folder.iterdir()) if _is_image(p)]
    annotations = root / "val" / "val_annotations.txt"
    if not annotations.is_file():
        raise FileNotFoundError(f"{annotations}: expected Tiny-ImageNet validation annotations")
    val = []
    for number, line in enumerate(annotations.read_text().splitlines()):
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise ValueError(f"{annotations}:{number + 1}: expected 'file<TAB>wnid...' "
                             "with a known wnid")  # fmt: skip
        val.append((root / "val" / "images" / fields[0], index[fields[1]]))
    return train, val, names


def _folder_loaders(request, train, val, names, *, size, resize, mean, std, split):
    if Image is None:
        raise ImportError(f"{request.name} needs Pillow: pip install pillow")
    if request.autoaugment:
        raise NotImplementedError("autoaugment is implemented for in-memory sets only")
    if not train or not val:
        raise FileNotFoundError(f"{request.root}: found no images (.JPEG/.jpg/.png)")
    train = take_samples(train, [label for _, label in train], request.train_subset, request.seed)
    val = take_samples(val, [label for _, label in val], request.test_subset, request.seed)
    train_transform = FolderTransform(size=size, train=request.augment, resize=resize)
    common = dict(
        device=request.device,
        mean=mean,
        std=std,
        num_workers=request.num_workers,
        seed=request.seed,
        rank=request.rank,
        world_size=request.world_size,
    )
    train_loader = FolderLoader(
        ImageFolderDataset(train, train_transform), batch_size=request.batch_size,
        shuffle=True, **common,
    )  # fmt: skip
    test_loader = FolderLoader(
        ImageFolderDataset(val, FolderTransform(size=size, train=False, resize=resize)),
        batch_size=request.eval_batch_size, shuffle=False, **common,
    )  # fmt: skip
    info = DatasetInfo(
        name=request.name, num_classes=len(names), input_shape=(3, size, size), mean=mean,
        std=std, kind="static", timesteps=None, split=split, num_train=len(train),
        num_test=len(val), scale=1 / 255, class_names=tuple(names),
    )  # fmt: skip
    return train_loader, test_loader, info


@register("imagenet", holdout=False)
def _build_imagenet(request: LoaderRequest):
    check_root(request.root, "train/CLASS/*.JPEG and val/CLASS/*.JPEG")
    train, val, names = list_imagenet(request.root)
    return _folder_loaders(
        request, train, val, names, size=224, resize=256, mean=IMAGENET_MEAN,
        std=IMAGENET_STD, split="imagenet:train/val",
    )  # fmt: skip


@register("tiny-imagenet", holdout=False)
def _build_tiny_imagenet(request: LoaderRequest):
    check_root(request.root, "train/CLASS/images/*.JPEG and val/val_annotations.txt")
    train, val, names = list_tiny_imagenet(request.root)
    return _folder_loaders(
        request, train, val, names, size=64, resize=64, mean=TINY_MEAN, std=TINY_STD,
        split="tiny-imagenet:train/val",
    )  # fmt: skip
