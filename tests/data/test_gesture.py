"""AEDAT 3.1 and DVS128 Gesture, on files these tests write in the release's layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mpbn.data import create_loaders, create_splits
from mpbn.data.events import read_aedat2, read_aedat31
from mpbn.data.events_datasets import (
    DVS128_GESTURE_CLASSES,
    list_dvs128_gesture,
    read_gesture_labels,
)

from .writers import (
    AEDAT31_HEADER,
    aedat31_packet,
    write_aedat31,
    write_dvs128_gesture,
)


def _fields(events):
    return [v.tolist() for v in (events.x, events.y, events.polarity, events.timestamp)]


def test_aedat31_packets_overflow_validity_and_other_types(tmp_path):
    path = tmp_path / "rec.aedat"
    write_aedat31(path, [
        # eventType 35 is b"#" as the first byte after the header: not a header line.
        aedat31_packet([9], [9], [1], [1], event_type=35),
        aedat31_packet([0, 127, 5], [0, 3, 127], [1, 0, 1], [10, 20, 2**31 - 1]),
        aedat31_packet([1], [1], [1], [25], event_type=0),  # special event: skipped
        # overflow 2: timestamps (2 << 31) + t; the middle event is marked invalid.
        aedat31_packet([7, 8, 9], [1, 2, 3], [0, 1, 1], [4, 5, 6], overflow=2, valid=[1, 0, 1]),
        # capacity past eventNumber: the zeroed tail is not read as events.
        aedat31_packet([100], [50], [0], [7], overflow=2, capacity=4),
        aedat31_packet([], [], [], []),  # an empty polarity packet
    ])
    big = 2 << 31
    assert _fields(read_aedat31(path)) == [
        [0, 127, 5, 7, 9, 100],
        [0, 3, 127, 1, 3, 50],
        [1, 0, 1, 0, 1, 0],
        [10, 20, 2**31 - 1, big + 4, big + 6, big + 7],
    ]


def test_aedat31_header_lines_are_skipped_up_to_end_header(tmp_path):
    path = tmp_path / "rec.aedat"
    header = AEDAT31_HEADER + b"#-Source 0: DVS128\r\n# a comment with #!END in it\r\n"
    write_aedat31(path, [aedat31_packet([3], [4], [1], [5])], header=header)
    assert _fields(read_aedat31(path)) == [[3], [4], [1], [5]]


def _truncated(tmp_path):
    packet = aedat31_packet([1, 2], [1, 2], [1, 1], [1, 2])
    return AEDAT31_HEADER + b"#!END-HEADER\r\n" + packet[:-3]


@pytest.mark.parametrize("content, message", [
    (AEDAT31_HEADER + aedat31_packet([1], [1], [1], [1]), "no '#!END-HEADER' line"),
    (b"#!AER-DAT3.0\r\n#!END-HEADER\r\n", "version 3.0 is not supported .expected 3.1."),
    (b"#!AER-DAT2.0\r\n# jAER\r\n" + b"\0" * 8, "AEDAT 2.0 file .*read it with read_aedat2"),
    (b"\x01\x00\x08\x00" * 8, "not an AEDAT file"),
    ("truncated", "needs 16 bytes, 13 are left .truncated AEDAT 3.1 file"),
    (AEDAT31_HEADER + b"#!END-HEADER\r\n" + b"\0" * 10, "less than a 28-byte packet header"),
    (AEDAT31_HEADER + b"#!END-HEADER\r\n", "no polarity events"),
    (AEDAT31_HEADER + b"#!END-HEADER\r\n" + aedat31_packet([1], [1], [1], [1], valid=[0]),
     "no valid polarity events"),
    (AEDAT31_HEADER + b"#!END-HEADER\r\n" + aedat31_packet([1], [1], [1], [1], event_size=12),
     "has 12-byte events .expected 8."),
    (AEDAT31_HEADER + b"#!END-HEADER\r\n"
     + aedat31_packet([1, 2], [1, 2], [1, 1], [1, 2], capacity=1), "malformed .* packet header"),
])
def test_bad_aedat31_is_one_line_error_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.aedat"
    if content == "truncated":
        content = _truncated(tmp_path)
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as error:
        read_aedat31(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_aedat2_reader_points_a_31_file_to_read_aedat31(tmp_path):
    path = tmp_path / "rec.aedat"
    write_aedat31(path, [aedat31_packet([1], [1], [1], [1])])
    with pytest.raises(ValueError, match="version 3.1 is not supported .*read_aedat31"):
        read_aedat2(path)


def test_label_rows_are_zero_based_and_checked(tmp_path):
    path = tmp_path / "user01_led_labels.csv"
    path.write_text("class\tstartTime_usec\tendTime_usec\r\n1\t80\t85\r\n11\t90\t99\r\n\r\n")
    assert read_gesture_labels(path) == [(0, 80, 85), (10, 90, 99)]
    for body, message in (("12,1,2", "class 12 outside 1..11"), ("3,5,5", "not after"),
                          ("3,x,9", r"labels.csv:2: expected 'class,startTime_usec")):
        path.write_text(f"class,startTime_usec,endTime_usec\n{body}\n")
        with pytest.raises(ValueError, match=message):
            read_gesture_labels(path)
    with pytest.raises(FileNotFoundError, match="label file .* is missing"):
        read_gesture_labels(tmp_path / "other_labels.csv")


def test_official_split_follows_the_trials_files(tmp_path):
    written = write_dvs128_gesture(tmp_path, classes=(2, 5, 11))
    train, test = list_dvs128_gesture(tmp_path)
    assert [(s.path.name, s.label, s.window) for s in train[:4]] == [
        ("user01_fluorescent.aedat", 1, (1000, 1800)),
        ("user01_fluorescent.aedat", 4, (2000, 2800)),
        ("user01_fluorescent.aedat", 10, (3000, 3800)),
        ("user02_led.aedat", 1, (1000, 1800)),
    ]
    assert len(train) == 6 and {s.path.name for s in test} == {"user24_lab.aedat"}
    assert len(test) == len(written["user24_lab"]) == 3
    # the folder itself may be the root, too
    assert list_dvs128_gesture(tmp_path / "DvsGesture") == (train, test)


def test_split_file_errors(tmp_path):
    write_dvs128_gesture(tmp_path, classes=(1,))
    folder = tmp_path / "DvsGesture"
    (folder / "trials_to_test.txt").write_text("user01_fluorescent.aedat\n")
    with pytest.raises(ValueError, match="user01_fluorescent.aedat is listed in both"):
        list_dvs128_gesture(tmp_path)
    (folder / "trials_to_test.txt").write_text("user29_natural.aedat\n")
    with pytest.raises(FileNotFoundError, match="user29_natural.aedat: listed in trials_to_test"):
        list_dvs128_gesture(tmp_path)
    (folder / "user02_led_labels.csv").unlink()
    (folder / "trials_to_test.txt").write_text("user24_lab.aedat\n")
    with pytest.raises(FileNotFoundError, match="user02_led_labels.csv: label file"):
        list_dvs128_gesture(tmp_path)
    (tmp_path / "packed").mkdir()
    (tmp_path / "packed" / "DvsGesture.tar.gz").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="tar xzf DvsGesture.tar.gz"):
        create_loaders("dvs128-gesture", tmp_path / "packed")


def _hand_made_recording(tmp_path):
    """One training and one test recording; the test gesture's frames are computed by hand."""
    folder = tmp_path / "DvsGesture"
    write_dvs128_gesture(tmp_path, train=("user01_fluorescent",), test=(), classes=(1, 2))
    # Class 4 in [100, 200): events at t=50 and t=200 lie outside it. Two packets, so the
    # window crosses a packet boundary.
    write_aedat31(folder / "user24_lab.aedat", [
        aedat31_packet([1, 5, 5], [1, 6, 6], [1, 1, 1], [50, 100, 120]),
        aedat31_packet([7, 127, 9], [0, 127, 9], [0, 1, 1], [150, 199, 200]),
    ])
    (folder / "user24_lab_labels.csv").write_text("class,startTime_usec,endTime_usec\n4,100,200\n")
    (folder / "trials_to_test.txt").write_text("user24_lab.aedat\n")
    # T=2 over the window's 4 events: two per frame. Channel 0 OFF, 1 ON; [t, c, y, x].
    expected = np.zeros((2, 2, 128, 128), dtype=np.float32)
    expected[0, 1, 6, 5] = 2
    expected[1, 0, 0, 7] = 1
    expected[1, 1, 127, 127] = 1
    return expected


def test_frames_equal_a_hand_computation_at_128_and_64(tmp_path):
    expected = _hand_made_recording(tmp_path)
    _, test, info = create_loaders("dvs128-gesture", tmp_path, batch_size=2, timesteps=2,
                                   split="official-128", num_workers=0)
    x, y = next(iter(test))
    assert y.tolist() == [3] and x.shape == (2, 1, 2, 128, 128)
    torch.testing.assert_close(x[:, 0], torch.from_numpy(expected), rtol=0, atol=0)
    assert info.split == "dvs128-gesture:official-trials, 128x128 frames"
    # 64x64 (the default): each pixel is the mean of a 2x2 block of sensor pixels.
    _, test, info = create_loaders("dvs128-gesture", tmp_path, batch_size=2, timesteps=2,
                                   num_workers=0)
    x, _ = next(iter(test))
    pooled = expected.reshape(2, 2, 64, 2, 64, 2).mean(axis=(3, 5))
    assert pooled[0, 1, 3, 2] == 0.5 and pooled[1, 0, 0, 3] == 0.25
    torch.testing.assert_close(x[:, 0], torch.from_numpy(pooled), rtol=0, atol=0)
    assert info.input_shape == (2, 64, 64) and info.split.endswith("64x64 frames")


def test_loaders_labels_holdout_and_cache(tmp_path):
    write_dvs128_gesture(tmp_path, train=("user01_fluorescent", "user02_led", "user03_lab"))
    train, test, info = create_loaders("dvs128-gesture", tmp_path, batch_size=4, timesteps=3,
                                       num_workers=2)
    assert (info.num_train, info.num_test, info.num_classes) == (33, 11, 11)
    assert info.class_names == DVS128_GESTURE_CLASSES and info.kind == "sequence"
    x, y = next(iter(test))
    assert x.shape == (3, 4, 2, 64, 64) and y.tolist() == [0, 1, 2, 3]
    # Gesture c's events lie in sensor columns 10c..10c+2 (pooled 5c..5c+1); the events between
    # gestures (column 127) belong to none.
    columns = x.sum(dim=(0, 2, 3))
    for sample, label in enumerate(y.tolist()):
        assert set(columns[sample].nonzero().flatten().tolist()) <= {5 * (label + 1),
                                                                     5 * (label + 1) + 1}
        assert columns[sample].sum() == pytest.approx(24 / 4)  # 24 events, area mean of 2x2
    xt, yt = next(iter(train))
    assert xt.shape == (3, 4, 2, 64, 64) and set(yt.tolist()) <= set(range(11))
    cache = [p for p in (tmp_path / ".mpbn_cache").rglob("*.npy")]
    assert len(cache) == 44 and not list((tmp_path / ".mpbn_cache").rglob("*.tmp"))
    splits = create_splits("dvs128-gesture", tmp_path, holdout=11, batch_size=4, timesteps=3)
    assert (splits.info.num_train, splits.info.num_holdout) == (22, 11)
    assert "11 training samples held out" in splits.info.split


def test_unknown_split_and_coordinates_past_the_sensor(tmp_path):
    write_dvs128_gesture(tmp_path, classes=(1,))
    with pytest.raises(ValueError, match="valid: official-64, official-128, official-48"):
        create_loaders("dvs128-gesture", tmp_path, split="9to1")
    folder = tmp_path / "DvsGesture"
    write_aedat31(folder / "user24_lab.aedat", [aedat31_packet([130], [2], [1], [1500])])
    with pytest.raises(ValueError, match=r"user24_lab.aedat: event coordinates up to \(130, 2\)"):
        create_loaders("dvs128-gesture", tmp_path, timesteps=2, num_workers=0)
