"""Augmented CIFAR-shaped images per second: DeviceLoader vs a per-image PIL pipeline.

Both pipelines do the same work (4-px zero-pad random crop, horizontal flip, per-channel
normalization, one 16x16 Cutout hole) on the same synthetic uint8 data, measured side by side in
one run. Usage:

    python benchmarks/bench_data.py [--device cuda] [--images 50000] [--pil-images 5000]
"""

from __future__ import annotations

import argparse
import platform
import random
import time

import numpy as np
import torch
from _host import allocator
from PIL import Image, ImageOps

from mpbn.data import DeviceLoader
from mpbn.data.augment import AugmentSpec

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_device_loader(data: torch.Tensor, batch_size: int, device: torch.device) -> float:
    """Seconds for one augmented epoch of ``data`` through :class:`DeviceLoader`."""
    loader = DeviceLoader(
        data, torch.zeros(len(data), dtype=torch.int64), batch_size=batch_size, device=device,
        shuffle=True, augment=AugmentSpec(crop_padding=4, flip=True, cutout=16), mean=MEAN,
        std=STD,
    )  # fmt: skip
    loader.set_epoch(0)
    for index, _ in enumerate(loader):  # warm-up: allocator and kernels
        if index == 3:
            break
    _sync(device)
    start = time.perf_counter()
    count = 0
    for images, _ in loader:
        count += images.shape[0]  # touch the batch so nothing is optimized away
    _sync(device)
    assert count == len(data)
    return time.perf_counter() - start


def _pil_augment(array: np.ndarray, rng: random.Random) -> torch.Tensor:
    """The classic per-image pipeline: PIL crop/flip, then numpy normalize and Cutout."""
    image = ImageOps.expand(Image.fromarray(array), border=4, fill=0)
    left, top = rng.randint(0, 8), rng.randint(0, 8)
    image = image.crop((left, top, left + 32, top + 32))
    if rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    pixels = (pixels - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    cy, cx = rng.randrange(32), rng.randrange(32)
    pixels[max(cy - 8, 0) : cy + 8, max(cx - 8, 0) : cx + 8] = 0.0
    return torch.from_numpy(pixels.transpose(2, 0, 1).copy())


def bench_pil(data_hwc: np.ndarray, batch_size: int, device: torch.device) -> float:
    """Seconds to augment ``data_hwc`` image by image and move the batches to ``device``."""
    rng = random.Random(0)
    order = np.random.default_rng(0).permutation(len(data_hwc))
    _sync(device)
    start = time.perf_counter()
    for first in range(0, len(order), batch_size):
        batch = [_pil_augment(data_hwc[i], rng) for i in order[first : first + batch_size]]
        torch.stack(batch).to(device)
    _sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=50_000, help="DeviceLoader epoch size")
    parser.add_argument("--pil-images", type=int, default=5_000, help="PIL images timed")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    device = torch.device(args.device)
    data = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(0))  # fmt: skip
    data_hwc = data[: args.pil_images].permute(0, 2, 3, 1).contiguous().numpy()

    device_s = bench_device_loader(data, args.batch_size, device)
    pil_s = bench_pil(data_hwc, args.batch_size, device)
    device_rate = args.images / device_s
    pil_rate = args.pil_images / pil_s

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(f"device: {device} ({name or platform.machine()}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads")  # fmt: skip
    print(f"allocator: {allocator()}")
    print(f"{'pipeline':<28}{'images':>10}{'seconds':>10}{'images/s':>14}{'ratio':>8}")
    print(f"{'per-image PIL (baseline)':<28}{args.pil_images:>10}{pil_s:>10.2f}"
          f"{pil_rate:>14,.0f}{1.0:>8.1f}")  # fmt: skip
    print(f"{'DeviceLoader (batched)':<28}{args.images:>10}{device_s:>10.2f}"
          f"{device_rate:>14,.0f}{device_rate / pil_rate:>8.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
