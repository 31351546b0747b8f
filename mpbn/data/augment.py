"""Batched, device-side augmentation: every op transforms a whole batch with tensor ops.

No per-image Python runs in the training loop; per-sample randomness is drawn as tensors
from a ``torch.Generator`` so an epoch is reproducible from its seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentSpec:
    """Training augmentation of a static image set.

    Attributes:
        crop_padding: Zero padding of the random crop in pixels (0 disables the crop).
        flip: Whether to flip horizontally with probability 0.5.
        cutout: Side of the square Cutout hole in pixels (0 disables Cutout).
        autoaugment: Whether to apply the batched AutoAugment-style policy.
    """

    crop_padding: int = 4
    flip: bool = True
    cutout: int = 16
    autoaugment: bool = False


def crop_with_offsets(x: torch.Tensor, padding: int, offsets: torch.Tensor) -> torch.Tensor:
    """Crop each sample from its zero-padded version at a given offset.

    Args:
        x: Batch ``[B, C, H, W]`` (any dtype).
        padding: Zero padding added on every side.
        offsets: Int64 ``[B, 2]`` top-left ``(dy, dx)`` in the padded image, each in
            ``[0, 2 * padding]``.

    Returns:
        Batch of the same shape; offset ``(padding, padding)`` is the identity.
    """
    batch, _, height, width = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    rows = offsets[:, 0, None] + torch.arange(height, device=x.device)  # [B, H]
    cols = offsets[:, 1, None] + torch.arange(width, device=x.device)  # [B, W]
    index_b = torch.arange(batch, device=x.device)[:, None, None]
    # Advanced indexing with a slice in the middle puts the channel axis last: [B, H, W, C].
    out = padded.permute(0, 2, 3, 1)[index_b, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def crop_flip(
    x: torch.Tensor,
    padding: int,
    offsets: torch.Tensor,
    flip: torch.Tensor,
    *,
    prepadded: bool = False,
) -> torch.Tensor:
    """Crop and then flip in one gather: equals ``flip_where(crop_with_offsets(...), flip)``.

    One pass over the batch instead of three (pad, crop, flip), which matters on CPU where the
    pipeline is memory bound.

    Args:
        x: Batch ``[B, C, H, W]`` (any dtype).
        padding: Zero padding of the crop (may be 0).
        offsets: Int64 ``[B, 2]`` top-left ``(dy, dx)`` in the padded image.
        flip: Bool ``[B]``, flip the crop horizontally where set.
        prepadded: ``x`` already carries the zero padding (the loader pads the dataset once);
            the output is then ``2 * padding`` smaller than ``x`` in each spatial dimension.

    Returns:
        Contiguous batch of the unpadded shape.
    """
    if prepadded:
        padded = x
        x = x[..., padding : x.shape[-2] - padding, padding : x.shape[-1] - padding]
    else:
        padded = F.pad(x, (padding, padding, padding, padding)) if padding else x
    batch, channels, height, width = x.shape
    padded_width = width + 2 * padding
    cols = torch.arange(width, device=x.device)
    cols = torch.where(flip[:, None], width - 1 - cols, cols) + offsets[:, 1, None]  # [B, W]
    rows = torch.arange(height, device=x.device)[None, :] + offsets[:, 0, None]  # [B, H]
    index = (rows[:, :, None] * padded_width + cols[:, None, :]).view(batch, 1, -1)
    out = padded.flatten(2).gather(2, index.expand(batch, channels, -1))
    return out.view(batch, channels, height, width)


def random_crop_flip(
    x: torch.Tensor,
    padding: int,
    flip: bool,
    generator: torch.Generator,
    *,
    prepadded: bool = False,
) -> torch.Tensor:
    """Random crop after zero padding and/or horizontal flip with probability 0.5."""
    if padding <= 0 and not flip:
        return x
    batch = x.shape[0]
    offsets = torch.randint(0, 2 * padding + 1, (batch, 2), generator=generator, device=x.device)
    if flip:
        mask = torch.rand(batch, generator=generator, device=x.device) < 0.5
    else:
        mask = torch.zeros(batch, dtype=torch.bool, device=x.device)
    return crop_flip(x, padding, offsets, mask, prepadded=prepadded)


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Random crop of the input size after zero padding (torchvision ``RandomCrop(padding=p)``)."""
    if padding <= 0:
        return x
    offsets = torch.randint(
        0, 2 * padding + 1, (x.shape[0], 2), generator=generator, device=x.device
    )
    return crop_with_offsets(x, padding, offsets)


def flip_where(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Flip horizontally the samples of ``x`` where the boolean ``mask [B]`` is set."""
    return torch.where(mask.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Horizontal flip of each sample with probability 0.5."""
    mask = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return flip_where(x, mask)


def cutout_with_centers(x: torch.Tensor, size: int, centers: torch.Tensor) -> torch.Tensor:
    """Zero a ``size x size`` square per sample, clipped at the border (DeVries & Taylor, 2017).

    Args:
        x: Float batch ``[B, C, H, W]``, usually already normalized (zero = the mean colour).
        size: Side of the hole.
        centers: Int64 ``[B, 2]`` hole centres ``(cy, cx)``.

    Returns:
        A new batch with the holes set to zero.
    """
    height, width = x.shape[-2:]
    top = (centers[:, 0] - size // 2)[:, None]
    left = (centers[:, 1] - size // 2)[:, None]
    rows = torch.arange(height, device=x.device)[None, :]
    cols = torch.arange(width, device=x.device)[None, :]
    in_rows = (rows >= top) & (rows < top + size)  # [B, H]
    in_cols = (cols >= left) & (cols < left + size)  # [B, W]
    hole = in_rows[:, :, None] & in_cols[:, None, :]
    return x.masked_fill(hole[:, None], 0.0)


def normalize_(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """In-place :func:`normalize` (one fused multiply-add pass) for freshly made batches."""
    shape = (1, -1, 1, 1)
    inv_std = torch.tensor([1.0 / s for s in std], device=x.device, dtype=x.dtype).view(shape)
    shift = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)], device=x.device,
                         dtype=x.dtype).view(shape)  # fmt: skip
    return x.mul_(inv_std).add_(shift)


def random_cutout(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Cutout with a uniformly drawn centre anywhere in the image, as in the reference code."""
    if size <= 0:
        return x
    height, width = x.shape[-2:]
    centers = torch.stack(
        [
            torch.randint(0, height, (x.shape[0],), generator=generator, device=x.device),
            torch.randint(0, width, (x.shape[0],), generator=generator, device=x.device),
        ],
        dim=1,
    )
    return cutout_with_centers(x, size, centers)


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """Per-channel ``(x - mean) / std`` on a float batch ``[B, C, H, W]``."""
    shape = (1, -1, 1, 1)
    mean_t = torch.tensor(mean, device=x.device, dtype=x.dtype).view(shape)
    std_t = torch.tensor(std, device=x.device, dtype=x.dtype).view(shape)
    return (x - mean_t) / std_t


# --- AutoAugment-style policy -------------------------------------------------------------------
# A reduced CIFAR-10 AutoAugment policy (Cubuk et al., 2019) restricted to ops that have an exact
# batched tensor form. Sub-policies using Equalize or Sharpness are left out, so this is
# "AutoAugment-style", not the paper's policy. Each entry: (op, probability, magnitude in 0..9).
CIFAR10_POLICY: tuple[tuple[tuple[str, float, int], tuple[str, float, int]], ...] = (
    (("invert", 0.1, 7), ("contrast", 0.2, 6)),
    (("rotate", 0.7, 2), ("translate_x", 0.3, 9)),
    (("shear_y", 0.5, 8), ("translate_y", 0.7, 9)),
    (("auto_contrast", 0.5, 8), ("brightness", 0.9, 2)),
    (("color", 0.4, 3), ("brightness", 0.6, 7)),
    (("translate_y", 0.9, 9), ("translate_y", 0.7, 9)),
    (("auto_contrast", 0.9, 2), ("solarize", 0.8, 3)),
    (("translate_y", 0.7, 9), ("auto_contrast", 0.9, 1)),
    (("solarize", 0.4, 5), ("auto_contrast", 0.9, 3)),
    (("translate_y", 0.2, 7), ("color", 0.9, 6)),
    (("color", 0.7, 0), ("translate_x", 0.5, 8)),
    (("shear_x", 0.2, 9), ("invert", 0.6, 9)),
    (("color", 0.9, 1), ("rotate", 0.7, 2)),
    (("contrast", 0.8, 1), ("brightness", 0.5, 3)),
    (("color", 0.4, 9), ("auto_contrast", 0.6, 1)),
    (("posterize", 0.4, 6), ("auto_contrast", 0.8, 3)),
    (("color", 0.9, 7), ("brightness", 0.5, 6)),
    (("brightness", 0.9, 6), ("color", 0.2, 8)),
    (("solarize", 0.5, 2), ("invert", 0.0, 3)),
    (("shear_x", 0.9, 4), ("invert", 0.9, 3)),
)


def _magnitude(op: str, level: int) -> float:
    """Map a 0..9 level to an op parameter with AutoAugment's ranges."""
    frac = level / 9.0
    ranges = {
        "shear_x": 0.3,
        "shear_y": 0.3,
        "translate_x": 0.45,
        "translate_y": 0.45,
        "rotate": 30.0,
        "color": 0.9,
        "contrast": 0.9,
        "brightness": 0.9,
    }
    if op in ranges:
        return ranges[op] * frac
    if op == "solarize":
        return 1.0 - frac  # threshold in [0, 1]
    if op == "posterize":
        return float(8 - int(round(4 * frac)))  # bits kept
    return 0.0


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _apply_op(x: torch.Tensor, op: str, value: torch.Tensor) -> torch.Tensor:
    """Apply ``op`` to a float batch in ``[0, 1]`` with per-sample signed magnitude ``value``."""
    batch = x.shape[0]
    if op in ("shear_x", "shear_y", "translate_x", "translate_y", "rotate"):
        theta = torch.zeros(batch, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0] = 1.0
        theta[:, 1, 1] = 1.0
        if op == "shear_x":
            theta[:, 0, 1] = value
        elif op == "shear_y":
            theta[:, 1, 0] = value
        elif op == "translate_x":
            theta[:, 0, 2] = 2.0 * value  # grid units span 2 per image width
        elif op == "translate_y":
            theta[:, 1, 2] = 2.0 * value
        else:
            angle = value * math.pi / 180.0
            theta[:, 0, 0] = torch.cos(angle)
            theta[:, 0, 1] = -torch.sin(angle)
            theta[:, 1, 0] = torch.sin(angle)
            theta[:, 1, 1] = torch.cos(angle)
        return _affine(x, theta)
    view = value.view(-1, 1, 1, 1)
    if op == "brightness":
        return (x * (1.0 + view)).clamp(0, 1)
    if op == "color":
        grey = x.mean(dim=1, keepdim=True)
        return (grey + (x - grey) * (1.0 + view)).clamp(0, 1)
    if op == "contrast":
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (mean + (x - mean) * (1.0 + view)).clamp(0, 1)
    if op == "invert":
        return 1.0 - x
    if op == "solarize":
        return torch.where(x >= view.abs(), 1.0 - x, x)
    if op == "posterize":
        levels = torch.pow(2.0, view.abs())
        return torch.floor(x * (levels - 1e-3)) / (levels - 1)
    if op == "auto_contrast":
        low = x.amin(dim=(2, 3), keepdim=True)
        high = x.amax(dim=(2, 3), keepdim=True)
        scale = torch.where(high > low, 1.0 / (high - low).clamp_min(1e-6), torch.ones_like(high))
        return torch.where(high > low, (x - low) * scale, x)
    raise ValueError(f"unknown augmentation op {op!r}")


def auto_augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Apply one random sub-policy of :data:`CIFAR10_POLICY` per sample.

    Every op runs on the whole batch once and is kept only where a per-sample mask says so,
    which costs a few full-batch ops but keeps the loop free of per-image Python.

    Args:
        x: Float batch ``[B, C, H, W]`` with values in ``[0, 1]``.
        generator: Source of all randomness.

    Returns:
        Augmented batch in ``[0, 1]``.
    """
    batch = x.shape[0]
    x = x.clone()  # ops write through boolean masks; never touch the caller's tensor
    choice = torch.randint(0, len(CIFAR10_POLICY), (batch,), generator=generator, device=x.device)
    for slot in range(2):
        draw = torch.rand(batch, generator=generator, device=x.device)
        sign = torch.where(
            torch.rand(batch, generator=generator, device=x.device) < 0.5, -1.0, 1.0
        ).to(x.dtype)
        for index, sub_policy in enumerate(CIFAR10_POLICY):
            op, prob, level = sub_policy[slot]
            mask = (choice == index) & (draw < prob)
            if not bool(mask.any()):
                continue
            value = sign[mask] * _magnitude(op, level)
            x[mask] = _apply_op(x[mask], op, value)
    return x
