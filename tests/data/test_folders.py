import random

import pytest
import torch
from PIL import Image

from mpbn.data import create_loaders
from mpbn.data.folders import IMAGENET_MEAN, IMAGENET_STD, random_resized_crop_box

from .writers import write_tiny_imagenet


def _jpeg(path, color, size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, "JPEG", quality=95)


COLORS = {"n01": (250, 10, 10), "n02": (10, 250, 10), "n03": (10, 10, 250)}


def _imagenet(root):
    for split, count in (("train", 4), ("val", 2)):
        for wnid, color in COLORS.items():
            for i in range(count):
                _jpeg(root / split / wnid / f"{wnid}_{i}.JPEG", color, size=(300, 260))


def test_imagenet_folders(tmp_path):
    _imagenet(tmp_path)
    train, test, info = create_loaders("imagenet", tmp_path, batch_size=4, num_workers=0)
    assert (info.num_classes, info.num_train, info.num_test) == (3, 12, 6)
    assert info.input_shape == (3, 224, 224)
    x, y = next(iter(test))
    assert x.shape == (4, 3, 224, 224) and x.dtype == torch.float32
    assert y.tolist() == [0, 0, 1, 1]
    # A flat red image stays red after resize/crop; check the normalized value.
    expected = (250 / 255 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    assert abs(x[0, 0].mean().item() - expected) < 0.05
    xt, yt = next(iter(train))
    assert xt.shape == (4, 3, 224, 224) and yt.dtype == torch.int64


def test_folder_epochs_are_reproducible_across_worker_counts(tmp_path):
    _imagenet(tmp_path)
    runs = []
    for workers in (0, 2):
        train, _, _ = create_loaders(
            "imagenet", tmp_path, batch_size=6, num_workers=workers, seed=4
        )
        train.set_epoch(1)
        runs.append([(x, y) for x, y in train])
    for (xa, ya), (xb, yb) in zip(*runs, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_tiny_imagenet_layout(tmp_path):
    root = tmp_path
    (root / "wnids.txt").write_text("\n".join(COLORS))
    lines = []
    for wnid, color in COLORS.items():
        for i in range(3):
            _jpeg(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", color, size=(64, 64))
        name = f"val_{wnid}.JPEG"
        _jpeg(root / "val" / "images" / name, color, size=(64, 64))
        lines.append(f"{name}\t{wnid}\t0\t0\t10\t10")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    train, test, info = create_loaders("tiny-imagenet", root, batch_size=3, num_workers=0)
    assert (info.num_classes, info.num_train, info.num_test) == (3, 9, 3)
    x, y = next(iter(test))
    assert x.shape == (3, 3, 64, 64) and y.tolist() == [0, 1, 2]
    assert next(iter(train))[0].shape == (3, 3, 64, 64)


def test_bad_image_is_named(tmp_path):
    _imagenet(tmp_path)
    (tmp_path / "val" / "n01" / "n01_0.JPEG").write_bytes(b"not a jpeg")
    _, test, _ = create_loaders("imagenet", tmp_path, batch_size=2, num_workers=0)
    with pytest.raises(ValueError, match="n01_0.JPEG: not a decodable image"):
        next(iter(test))


def test_missing_layout_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="train: expected one folder per class"):
        create_loaders("imagenet", tmp_path)


def test_random_resized_crop_box_is_inside_and_in_ratio():
    rng = random.Random(0)
    for _ in range(200):
        left, top, right, bottom = random_resized_crop_box((50, 40), (0.08, 1), (3 / 4, 4 / 3), rng)
        assert 0 <= left < right <= 50 and 0 <= top < bottom <= 40
    # Too narrow for any crop in the ratio range: the centred 10x13 fallback.
    assert random_resized_crop_box((10, 100), (1, 1), (3 / 4, 4 / 3), rng) == (0, 43, 10, 56)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_corrupt_image_names_its_file_also_from_a_worker(tmp_path, workers):
    _imagenet(tmp_path)
    bad = sorted((tmp_path / "val").rglob("*.JPEG"))[0]
    bad.write_bytes(b"\xff\xd8\xff not a jpeg")
    _, test, _ = create_loaders("imagenet", tmp_path, batch_size=2, num_workers=workers)
    with pytest.raises(ValueError) as error:
        for _ in test:
            pass
    first_line = str(error.value).splitlines()[0]
    assert first_line.startswith(f"{bad}: not a decodable image"), first_line
    assert "DataLoader worker" not in str(error.value)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_folder_epoch_resumed_mid_way_continues_it_exactly(tmp_path, workers):
    write_tiny_imagenet(tmp_path)  # 15 random-pixel images: 4 batches of 4, the last of 3

    def loader():
        return create_loaders("tiny-imagenet", tmp_path, batch_size=4, num_workers=workers,
                              seed=3)[0]

    whole = loader()
    whole.set_epoch(2)
    assert whole.state_dict() == {"epoch": 2, "batches": 0}
    reference = list(whole)
    assert len(reference) == len(whole) == 4
    assert whole.state_dict() == {"epoch": 2, "batches": 4}

    first = loader()
    first.set_epoch(2)
    for _ in zip(range(2), first, strict=False):
        pass
    state = first.state_dict()
    assert state == {"epoch": 2, "batches": 2}

    resumed = loader()  # as after a restart: a new loader, the state from the checkpoint
    resumed.set_epoch(2)
    resumed.load_state_dict(state)
    assert len(resumed) == 4  # the epoch's length, not what is left of it
    rest = list(resumed)
    assert len(rest) == 2
    for (x, y), (x_ref, y_ref) in zip(rest, reference[2:], strict=True):
        assert torch.equal(x, x_ref) and torch.equal(y, y_ref)
    assert resumed.state_dict() == {"epoch": 2, "batches": 4}
    assert [y.tolist() for _, y in resumed] == [y.tolist() for _, y in reference]  # then whole

    with pytest.raises(ValueError, match="cannot resume at batch 5: the epoch has 4"):
        resumed.load_state_dict({"epoch": 2, "batches": 5})
    resumed.load_state_dict(state)
    resumed.set_epoch(3)
    with pytest.raises(ValueError, match=r"the loaded state is of epoch 2, but set_epoch\(3\)"):
        next(iter(resumed))
    assert len(list(resumed)) == 4  # the failed iteration used the state up: epoch 3, whole
