from pathlib import Path

import numpy as np
import pytest
import torch

from mpbn.data import create_loaders, events_datasets
from mpbn.data.events import Events, events_to_frames, read_aedat2, read_nmnist, resize_frames
from mpbn.data.events_datasets import CIFAR10_DVS_CLASSES, read_cifar10_dvs, split_cifar10_dvs

from .writers import write_aedat, write_bs2


def _random_events(rng, count, sensor=128):
    x = rng.integers(0, sensor, count)
    y = rng.integers(0, sensor, count)
    p = rng.integers(0, 2, count)
    t = np.sort(rng.integers(0, 1_000_000, count))
    return x, y, p, t


def test_aedat_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    x, y, p, t = _random_events(rng, 100)
    write_aedat(tmp_path / "a.aedat", x, y, p, t)
    events = read_aedat2(tmp_path / "a.aedat")
    for got, want in zip(
        (events.x, events.y, events.polarity, events.timestamp), (x, y, p, t), strict=True
    ):
        np.testing.assert_array_equal(got, want)


def test_aedat_drops_special_events(tmp_path):
    path = tmp_path / "s.aedat"
    body = np.array([[0x8000 | 5, 1], [(3 << 8) | (7 << 1) | 1, 2]], dtype=">u4").tobytes()
    path.write_bytes(b"#!AER-DAT2.0\r\n" + body)
    events = read_aedat2(path)
    assert (events.x.tolist(), events.y.tolist(), events.polarity.tolist()) == ([7], [3], [1])


@pytest.mark.parametrize(
    "content, message",
    [
        (b"#!AER-DAT2.0\r\n" + b"\x00" * 12, "not a multiple of 8"),
        (b"#!AER-DAT2.0\r\n", "no events"),
        (b"#!AER-DAT3.1\r\n" + b"\x00" * 16, "version 3.1"),
        (b"# header without newline", "never ends"),
    ],
)
def test_bad_aedat_is_one_line_error_naming_file(tmp_path, content, message):
    path = tmp_path / "bad.aedat"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as error:
        read_aedat2(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_nmnist_roundtrip_and_errors(tmp_path):
    rng = np.random.default_rng(1)
    x, y, p, t = _random_events(rng, 50, sensor=34)
    t[-1] = (1 << 23) - 1
    write_bs2(tmp_path / "a.bs2", x, y, p, t)
    events = read_nmnist(tmp_path / "a.bs2")
    np.testing.assert_array_equal(events.timestamp, t)
    np.testing.assert_array_equal(events.polarity, p)
    (tmp_path / "b.bs2").write_bytes((tmp_path / "a.bs2").read_bytes()[:-2])
    with pytest.raises(ValueError, match="b.bs2.*multiple of 5"):
        read_nmnist(tmp_path / "b.bs2")
    (tmp_path / "c.bs2").write_bytes(b"")
    with pytest.raises(ValueError, match="no events"):
        read_nmnist(tmp_path / "c.bs2")


def test_frames_count_events_per_frame_polarity_and_pixel(tmp_path):
    # 6 events into 3 frames: two per frame, whatever their timestamps.
    x = [0, 1, 2, 3, 0, 0]
    y = [0, 0, 0, 0, 1, 1]
    p = [1, 0, 1, 1, 0, 0]
    t = [0, 1, 2, 900, 901, 902]
    write_aedat(tmp_path / "f.aedat", x, y, p, t)
    frames = events_to_frames(read_aedat2(tmp_path / "f.aedat"), 3, (2, 4))
    expected = np.zeros((3, 2, 2, 4), dtype=np.float32)
    expected[0, 1, 0, 0] = 1
    expected[0, 0, 0, 1] = 1
    expected[1, 1, 0, 2] = 1
    expected[1, 1, 0, 3] = 1
    expected[2, 0, 1, 0] = 2
    np.testing.assert_array_equal(frames, expected)


def _one_pixel_events(count):
    """``count`` events at pixel (0, 0), polarity 0, event ``i`` at time ``i``."""
    zeros = np.zeros(count, dtype=np.int64)
    return Events(x=zeros, y=zeros, polarity=zeros, timestamp=np.arange(count))


@pytest.mark.parametrize("count, timesteps, per_frame", [
    (7, 3, [2, 2, 3]),      # SpikingJelly: N // T per frame, the remainder in the last
    (11, 4, [2, 2, 2, 5]),  # (an even spread would give 3, 3, 3, 2)
    (2, 3, [0, 0, 2]),      # fewer events than frames: all in the last
    (9, 3, [3, 3, 3]),
])
def test_frames_split_as_spikingjelly_split_by_number(count, timesteps, per_frame):
    frames = events_to_frames(_one_pixel_events(count), timesteps, (1, 1))
    assert frames[:, 0, 0, 0].tolist() == per_frame and frames[:, 1].sum() == 0


def test_cifar10_dvs_frames_are_in_spikingjellys_orientation(tmp_path):
    # Raw AEDAT addresses (x, y, p) -> SpikingJelly's CIFAR10DVS: x' = 127 - y, y' = 127 - x,
    # p' = 1 - p; the frame is [T, 2, y', x'].
    write_aedat(tmp_path / "a.aedat", [10, 3, 127], [20, 100, 0], [1, 0, 1], [0, 5, 9])
    events = read_cifar10_dvs(tmp_path / "a.aedat")
    assert (events.x.tolist(), events.y.tolist(), events.polarity.tolist()) == (
        [107, 27, 127], [117, 124, 0], [0, 1, 0])
    assert events.timestamp.tolist() == [0, 5, 9]
    frames = events_to_frames(events, 1, (128, 128))
    assert frames.sum() == 3
    assert frames[0, 0, 117, 107] == frames[0, 1, 124, 27] == frames[0, 0, 0, 127] == 1


def test_resize_is_area_average():
    frames = np.ones((2, 2, 4, 4), dtype=np.float32)
    frames[0, 0, :2, :2] = 5
    out = resize_frames(frames, (2, 2))
    assert out.shape == (2, 2, 2, 2) and out[0, 0, 0, 0] == 5 and out[1, 1, 1, 1] == 1


def test_cifar10_dvs_splits_are_deterministic_per_class():
    per_class = [[Path(f"{c}_{i}.aedat") for i in range(120)] for c in CIFAR10_DVS_CLASSES]
    train, test = split_cifar10_dvs(per_class, "9to1")
    assert len(train) == 1080 and len(test) == 120
    assert [s.path.name for s in test[:12]] == [f"airplane_{i}.aedat" for i in range(108, 120)]
    train, test = split_cifar10_dvs(per_class, "first100")
    assert len(test) == 1000 and test[0].path.name == "airplane_0.aedat"
    assert {s.label for s in test} == set(range(10))
    with pytest.raises(ValueError, match="valid: 9to1, first100"):
        split_cifar10_dvs(per_class, "random")


def _write_cifar10_dvs(root: Path, per_class: int = 10) -> None:
    rng = np.random.default_rng(2)
    for label, name in enumerate(CIFAR10_DVS_CLASSES):
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            # Label-dependent column so the frames encode the class; numeric sort is checked by
            # the file index 10 following 9.
            count = 40
            x = np.full(count, label * 10 + index % 3)
            _, y, p, t = _random_events(rng, count)
            write_aedat(root / name / f"cifar10_{name}_{index}.aedat", x, y, p, t)


def test_cifar10_dvs_loaders_and_cache(tmp_path):
    root = tmp_path / "dvs"
    _write_cifar10_dvs(root, per_class=11)
    train, test, info = create_loaders("cifar10-dvs", root, batch_size=4, timesteps=5)
    assert info.split == "cifar10-dvs:9to1-per-class"
    assert (info.num_train, info.num_test, info.input_shape) == (90, 20, (2, 48, 48))
    assert info.kind == "sequence" and info.timesteps == 5
    x, y = next(iter(test))
    assert x.shape == (5, 4, 2, 48, 48) and x.dtype == torch.float32
    assert y.tolist() == [0, 0, 1, 1]  # 11 per class: files 9 and 10 are test
    # the cached frames equal the reference pipeline (read -> integrate -> resize)
    source = root / "airplane" / "cifar10_airplane_9.aedat"
    reference = resize_frames(events_to_frames(read_cifar10_dvs(source), 5, (128, 128)),
                              (48, 48))
    torch.testing.assert_close(x[:, 0], torch.from_numpy(reference), atol=2e-2, rtol=1e-3)
    cache_files = sorted((root / ".mpbn_cache").rglob("*"))
    assert not [p for p in cache_files if p.name.endswith(".tmp")]
    stamps = {p: p.stat().st_mtime_ns for p in cache_files if p.is_file()}
    assert len(stamps) == 110
    create_loaders("cifar10-dvs", root, batch_size=4, timesteps=5)
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}
    xt, _ = next(iter(train))
    assert xt.shape == (5, 4, 2, 48, 48)


def test_a_source_replaced_by_one_of_the_same_size_is_recomputed(tmp_path):
    import os

    root = tmp_path / "dvs"
    _write_cifar10_dvs(root, per_class=11)
    _, test, _ = create_loaders("cifar10-dvs", root, batch_size=2, timesteps=5)
    before, _ = next(iter(test))
    source = root / "airplane" / "cifar10_airplane_9.aedat"
    size, stamp = source.stat().st_size, source.stat().st_mtime_ns
    rng = np.random.default_rng(7)
    _, y, p, t = _random_events(rng, 40)
    write_aedat(source, np.full(40, 77), y, p, t)  # other columns, the same byte count
    assert source.stat().st_size == size
    os.utime(source, ns=(stamp + 10**9, stamp + 10**9))
    _, test, _ = create_loaders("cifar10-dvs", root, batch_size=2, timesteps=5)
    after, _ = next(iter(test))
    reference = resize_frames(events_to_frames(read_cifar10_dvs(source), 5, (128, 128)),
                              (48, 48))
    torch.testing.assert_close(after[:, 0], torch.from_numpy(reference), atol=2e-2, rtol=1e-3)
    assert not torch.equal(after[:, 0], before[:, 0])


def test_cache_build_failure_leaves_no_partial_file(tmp_path, monkeypatch):
    root = tmp_path / "dvs"
    _write_cifar10_dvs(root, per_class=2)

    def failing_save(handle, array):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(events_datasets.np, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        create_loaders("cifar10-dvs", root, timesteps=2, num_workers=0)
    assert [p for p in (root / ".mpbn_cache").rglob("*") if p.is_file()] == []


def test_cifar10_dvs_missing_class_folder(tmp_path):
    (tmp_path / "airplane").mkdir()
    with pytest.raises(FileNotFoundError, match="airplane: expected CIFAR10-DVS"):
        create_loaders("cifar10-dvs", tmp_path)


def test_nmnist_official_layout(tmp_path):
    rng = np.random.default_rng(3)
    for split, count in (("Train", 3), ("Test", 2)):
        for digit in range(10):
            folder = tmp_path / split / str(digit)
            folder.mkdir(parents=True)
            for index in range(count):
                write_bs2(folder / f"{index:05d}.bin", *_random_events(rng, 30, sensor=34))
    train, test, info = create_loaders("nmnist", tmp_path, batch_size=5, timesteps=3)
    assert (info.num_train, info.num_test, info.input_shape) == (30, 20, (2, 34, 34))
    x, y = next(iter(test))
    assert x.shape == (3, 5, 2, 34, 34) and y.tolist() == [0, 0, 1, 1, 2]
    assert x[:, 0].sum() == 30  # integer counts, no resize
