"""Every preset starts: its model builds, its data pipeline loads, one step trains, one eval runs.

Parametrized over :func:`mpbn.engine.presets.list_presets`, so a new preset is covered without
editing this file. Each dataset is written once per session in its real on-disk format (CIFAR
pickles, MNIST IDX, CIFAR10-DVS AEDAT 2.0, DVS128 Gesture AEDAT 3.1 with its label and trials
files, ImageNet/Tiny-ImageNet JPEG folders) and read by the dataset's own builder through the
engine's :func:`~mpbn.engine.train.build_loaders`, so the input shape, class count, encoding and
sequence kind are the dataset modules' own, not a copy.

Shrunk, and why that still proves the preset starts:

- ``batch_size``/``eval_batch_size`` 2, ``train_subset``/``test_subset`` 2: one optimizer step
  and one evaluation batch; the code path is that of a full epoch.
- ``timesteps`` at most 2 (4 and more in the paper presets): the time loop is the same for any T,
  and BNTT's per-step statistics are sized from the (overridden) T.  Sequential MNIST stays at
  784, the only length its loader accepts; its ``fc_smnist`` gets ``hidden`` (16, 16) instead.
- ``model_kwargs.width`` 8 for ResNets and VGGs (the stages keep their ratios): the module tree,
  and so every layer type, shortcut and norm, is the preset's.
- The folder datasets (ImageNet, Tiny-ImageNet) have as many classes as folders written (3):
  the class count only sizes the classifier.
- ``autoaugment`` stays as the preset sets it; ``num_workers`` 0.

The preset's model is also built at its full width and T (construction only, no forward).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mpbn.engine.config import apply_overrides
from mpbn.engine.distributed import DistInfo
from mpbn.engine.evaluation import evaluate
from mpbn.engine.loading import build_model
from mpbn.engine.presets import get_preset, list_presets
from mpbn.engine.train import build_loaders, build_optimizer, build_scheduler, train_one_epoch
from tests.data.writers import (
    write_aedat,
    write_cifar_folder,
    write_dvs128_gesture,
    write_mnist,
)

pytestmark = pytest.mark.filterwarnings("ignore:checksum mismatch")

WIDTH_MODELS = ("resnet", "vgg")
MAX_TIMESTEPS = 2


def _jpeg(path: Path, color: tuple[int, int, int], size: tuple[int, int]) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, "JPEG", quality=90)


def _write_dataset(name: str, root: Path) -> None:
    rng = np.random.default_rng(0)
    if name in ("cifar10", "cifar100"):
        folder = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
        write_cifar_folder(root / folder, variant=name, per_file=4)
    elif name == "smnist":
        write_mnist(root, n_train=4, n_test=4)
    elif name == "cifar10-dvs":
        from mpbn.data.events_datasets import CIFAR10_DVS_CLASSES

        for cls in CIFAR10_DVS_CLASSES:
            (root / cls).mkdir(parents=True)
            for index in range(10):  # 9 train + 1 test per class with the 9to1 split
                x, y = rng.integers(0, 128, 30), rng.integers(0, 128, 30)
                p, t = rng.integers(0, 2, 30), np.sort(rng.integers(0, 100_000, 30))
                write_aedat(root / cls / f"cifar10_{cls}_{index}.aedat", x, y, p, t)
    elif name == "dvs128-gesture":
        write_dvs128_gesture(root)  # 2 training and 1 test recording, 11 gestures each
    elif name == "imagenet":
        for split in ("train", "val"):
            for i, wnid in enumerate(("n01", "n02", "n03")):
                _jpeg(root / split / wnid / f"{wnid}_0.JPEG", (80 * i, 40, 200), (260, 240))
    elif name == "tiny-imagenet":
        wnids = ("n01", "n02", "n03")
        (root / "wnids.txt").write_text("\n".join(wnids))
        lines = []
        for i, wnid in enumerate(wnids):
            _jpeg(root / "train" / wnid / "images" / f"{wnid}_0.JPEG", (80 * i, 9, 9), (64, 64))
            _jpeg(root / "val" / "images" / f"val_{wnid}.JPEG", (80 * i, 9, 9), (64, 64))
            lines.append(f"val_{wnid}.JPEG\t{wnid}\t0\t0\t10\t10")
        (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    else:
        raise AssertionError(f"no synthetic files for dataset {name!r}: add a writer here")


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: these tensors are tiny, and on a shared 2-core machine a second
    thread made each step about 10x slower (measured 2.3 s vs 0.2 s per ResNet20 step)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def dataset_root(tmp_path_factory):
    """``dataset_root(name)``: a folder with tiny files of that dataset, written once."""
    roots: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in roots:
            roots[name] = tmp_path_factory.mktemp(name)
            _write_dataset(name, roots[name])
        return roots[name]

    return get


def _tiny(name: str, root: Path):
    cfg = get_preset(name)
    overrides = dict(batch_size=2, eval_batch_size=2, train_subset=2, test_subset=2,
                     data_root=str(root), num_workers=0, epochs=1, log_interval=1)
    if cfg.data.name != "smnist":
        overrides["timesteps"] = min(cfg.model.timesteps, MAX_TIMESTEPS)
    if cfg.model.name.startswith(WIDTH_MODELS):
        overrides["model_kwargs"] = {**cfg.model.kwargs, "width": 8}
    elif cfg.model.name == "fc_smnist":
        overrides["model_kwargs"] = {**cfg.model.kwargs, "hidden": (16, 16)}
    return apply_overrides(cfg, overrides)


@pytest.mark.parametrize("name", list_presets())
def test_preset_trains_one_step_and_evaluates(name, dataset_root):
    cfg = get_preset(name)
    cfg = _tiny(name, dataset_root(cfg.data.name))
    dist = DistInfo()
    torch.manual_seed(0)
    train_loader, test_loader, info = build_loaders(cfg, seed=0, dist=dist)
    x, _ = next(iter(train_loader))
    if info.kind == "sequence":  # event frames [T, B, C, H, W], pixels [784, B, 1]
        assert x.shape[0] == info.timesteps and x.shape[1] == 2
    assert tuple(x.shape[-len(info.input_shape):]) == tuple(info.input_shape)
    full = build_model(get_preset(name), info)  # construction only: the preset's own sizes
    assert sum(p.numel() for p in full.parameters()) > 0
    model = build_model(cfg, info)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer, len(train_loader))
    before = [p.detach().clone() for p in model.parameters()]
    stats = train_one_epoch(model, train_loader, optimizer, scheduler, cfg, dist, epoch=1,
                            global_step=0, show_progress=False)
    assert stats["global_step"] == 1 and np.isfinite(stats["train_loss"])
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    metrics = evaluate(model, test_loader, cfg, dist)
    assert np.isfinite(metrics["test_loss"]) and 0.0 <= metrics["test_acc"] <= 1.0
