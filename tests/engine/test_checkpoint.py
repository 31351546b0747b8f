"""Verified checkpoints: every content change is detected, old files still load."""

from __future__ import annotations

import json
import random
import struct
import warnings
import zipfile

import pytest
import torch

from mpbn.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

MARKER_FLOAT = 0.8552  # a metadata number whose pickled bytes are easy to find


def _payload() -> dict:
    gen = torch.Generator().manual_seed(0)
    return {
        "model": {"conv.weight": torch.randn(8, 3, 3, 3, generator=gen),
                  "bn.running_var": torch.rand(8, generator=gen) + 0.5,
                  "bn.num_batches_tracked": torch.tensor(17),
                  "head.weight": torch.randn(10, 8, generator=gen).to(torch.bfloat16)},
        "optimizer": {"state": {0: {"momentum_buffer": torch.randn(8, 3, 3, 3, generator=gen)}},
                      "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "params": [0]}]},
        "epoch": 3, "best_acc": MARKER_FLOAT, "model_name": "resnet19",
        "config": {"optim": {"lr": 0.1}, "data": {"name": "cifar10-marker"}},
    }


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return (isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape
                and torch.equal(a.view(torch.uint8) if a.dim() else a, b.view(torch.uint8)
                                if b.dim() else b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return (isinstance(b, list | tuple) and len(a) == len(b)
                and all(_same(x, y) for x, y in zip(a, b, strict=True)))
    return type(a) is type(b) and a == b


def _tensor_byte_ranges(path) -> list[tuple[int, int]]:
    """(start, end) of every tensor storage in torch's (uncompressed) zip archive."""
    raw = path.read_bytes()
    ranges = []
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if "/data/" in info.filename and info.compress_type == zipfile.ZIP_STORED:
                name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:
                                                               info.header_offset + 30])
                start = info.header_offset + 30 + name_len + extra_len
                ranges.append((start, start + info.file_size))
    return ranges


def _flip(raw: bytes, bit: int) -> bytes:
    out = bytearray(raw)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def _load_flipped(tmp_path, raw: bytes, bit: int):
    """The loaded payload, or the CheckpointError message, for ``raw`` with ``bit`` flipped."""
    path = tmp_path / "flipped.pt"
    path.write_bytes(_flip(raw, bit))
    try:
        return load_checkpoint(path), None
    except CheckpointError as error:
        return None, str(error)


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, _payload())
    return path


def test_an_untouched_checkpoint_loads_unchanged(saved):
    loaded = load_checkpoint(saved)
    expected = _payload()
    assert "digest" not in loaded and loaded.pop("format_version") == 2
    assert _same(loaded, expected)


def test_every_single_bit_flip_in_tensor_data_is_detected(saved, tmp_path):
    raw = saved.read_bytes()
    ranges = _tensor_byte_ranges(saved)
    assert len(ranges) == 5  # 4 model tensors + 1 optimizer buffer
    rng = random.Random(0)
    bits = [rng.randrange(start * 8, end * 8) for _ in range(40) for start, end in ranges]
    silent_without_digest = 0
    for bit in bits:
        loaded, error = _load_flipped(tmp_path, raw, bit)
        assert loaded is None, f"bit {bit} flipped in tensor data loaded silently"
        assert error.count("\n") == 0 and f"{tmp_path / 'flipped.pt'} is corrupt" in error
        assert "tensor " in error  # names the tensor: model/conv.weight, optimizer/...
        torch_alone = torch.load(tmp_path / "flipped.pt", weights_only=True)
        silent_without_digest += torch_alone["epoch"] == 3
    # What the digest guards against: torch itself accepts these files (its CRC goes unread).
    assert silent_without_digest > len(bits) // 2


@pytest.mark.parametrize("needle", [
    pytest.param(b'"cifar10-marker"', id="config-json"),
    pytest.param(b"G" + struct.pack(">d", MARKER_FLOAT), id="float"),
    pytest.param(b"resnet19", id="string"),
])
def test_every_bit_flip_in_a_metadata_value_is_detected(saved, tmp_path, needle):
    raw = saved.read_bytes()
    assert raw.count(needle) == 1
    start = raw.index(needle) + (1 if needle.startswith(b"G") else 0)
    end = raw.index(needle) + len(needle)
    reference = load_checkpoint(saved)
    for bit in range(start * 8, end * 8):  # every bit of the value
        loaded, error = _load_flipped(tmp_path, raw, bit)
        if loaded is not None:  # only acceptable when the content did not change
            assert _same(loaded, reference), f"bit {bit} changed a metadata value silently"
        else:
            assert error.count("\n") == 0 and "flipped.pt is corrupt" in error


def test_random_flips_anywhere_never_change_content_silently(saved, tmp_path):
    raw = saved.read_bytes()
    reference = load_checkpoint(saved)
    rng = random.Random(1)
    for bit in rng.sample(range(len(raw) * 8), 300):
        loaded, error = _load_flipped(tmp_path, raw, bit)
        if loaded is not None:  # zip headers, CRCs, padding: content must be identical
            assert _same(loaded, reference), f"bit {bit} changed the content silently"
        else:
            assert error.count("\n") == 0 and "flipped.pt is corrupt" in error


def test_a_resaved_payload_with_the_old_digest_is_refused(saved, tmp_path):
    payload = torch.load(saved, weights_only=True)
    payload["config"] = json.dumps({"optim": {"lr": 0.2}})
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match="corrupt: the non-tensor entries"):
        load_checkpoint(tmp_path / "edited.pt")
    payload = torch.load(saved, weights_only=True)
    payload["model"]["conv.weight"][0, 0, 0, 0] += 1
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match="corrupt: tensor model/conv.weight does not"):
        load_checkpoint(tmp_path / "edited.pt")
    del payload["digest"]  # a v2 file without its digest: refused, not silently unverified
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match="no digest entry"):
        load_checkpoint(tmp_path / "edited.pt")


def test_an_old_checkpoint_without_digest_loads_silently(tmp_path, capsys):
    old = {"format_version": 1, **_payload()}
    old["config"] = json.dumps(old["config"], sort_keys=True)
    torch.save(old, tmp_path / "old.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_checkpoint(tmp_path / "old.pt")
    assert capsys.readouterr() == ("", "")
    assert loaded["config"] == _payload()["config"] and loaded["format_version"] == 1
    assert _same(loaded["model"], _payload()["model"])


def test_a_checkpoint_gets_the_mode_open_would_give(tmp_path):
    """mkstemp makes 0600 files; a checkpoint is as readable as any file the user writes."""
    import os

    old = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "last.pt", {"model": {"w": torch.ones(2)}})
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o644
