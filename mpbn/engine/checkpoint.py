"""Checkpoints that are safe to load and safe to write.

Safe to load: only tensors, numbers, strings, lists and dicts go in (the config as a JSON
string, RNG states as tensors and lists), and loading uses ``torch.load(weights_only=True)``,
so a checkpoint can never execute code. Safe to write: a temporary file in the same folder is
renamed over the old one with ``os.replace``, which is atomic, so a kill mid-save leaves the
previous checkpoint intact. Verified on load: torch writes a CRC-32 per zip entry but does not
check it, so a flipped bit in a weight used to load silently. Every checkpoint therefore
carries a ``"digest"`` entry (see :func:`payload_digest`): a BLAKE2b digest of each tensor
(dtype, shape and bytes, keyed by its path such as ``model/head.weight``) and one of all
non-tensor entries (keys, numbers, strings, the config JSON). :func:`load_checkpoint`
recomputes it and raises :class:`CheckpointError` on any difference, naming the first entry
that differs. The cost is one pass over the tensor bytes on save and on load.

Checkpoints written before the digest (``format_version`` 1) have none; they load as before,
unverified and without a warning, so existing run directories keep working. A file that
claims ``format_version`` 2 or later but lacks the digest is refused as corrupt (otherwise a
flipped bit in the word ``digest`` would disable the check).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "capture_rng_state",
           "restore_rng_state", "payload_digest", "FORMAT_VERSION", "atomic_write",
           "atomic_write_text", "remove_stale_temporaries"]

#: 1: no digest (still loaded, unverified); 2: the ``"digest"`` entry is required.
FORMAT_VERSION = 2
DIGEST_KEY = "digest"
_DIGEST_ALGORITHM = "blake2b-128"
_METADATA = "<non-tensor entries>"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or does not fit; the message names the file."""


def capture_rng_state() -> dict[str, Any]:
    """Every RNG a training step may draw from, as weights-only-loadable values."""
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`.

    The states may come from a checkpoint loaded with ``map_location="cuda"``: generators take
    their state as a CPU tensor, so each is moved back first.
    """
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].cpu().numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def _tensor_digest(tensor: torch.Tensor) -> str:
    hasher = hashlib.blake2b(digest_size=16)
    hasher.update(f"{tensor.dtype}|{tuple(tensor.shape)}|".encode())
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    hasher.update(memoryview(flat.view(torch.uint8).numpy()))
    return hasher.hexdigest()


def _key_text(key: Any) -> str:
    return key if isinstance(key, str) else f"[{key!r}]"


def _walk(value: Any, path: str, meta: Any, tensors: dict[str, str]) -> None:
    """Feed ``value``'s structure and non-tensor leaves to ``meta``; digest its tensors.

    Tagged and length-prefixed, so different trees never give the same byte stream; dict
    keys are visited sorted, lists and tuples alike in order.
    """
    def put(tag: bytes, data: bytes = b"") -> None:
        meta.update(tag + struct.pack("<Q", len(data)) + data)

    if isinstance(value, torch.Tensor):
        put(b"T", path.encode())
        tensors[path] = _tensor_digest(value)
    elif isinstance(value, dict):
        put(b"D", str(len(value)).encode())
        for key in sorted(value, key=lambda k: (type(k).__name__, repr(k))):
            _walk(key, f"{path}/<key>", meta, tensors)
            _walk(value[key], f"{path}/{_key_text(key)}" if path else _key_text(key), meta,
                  tensors)
        extra = getattr(value, "_metadata", None)  # state_dict versions, read by load_state_dict
        if isinstance(extra, dict):
            put(b"M")
            _walk(dict(extra), f"{path}/<_metadata>", meta, tensors)
    elif isinstance(value, list | tuple):
        put(b"L", str(len(value)).encode())
        for index, item in enumerate(value):
            _walk(item, f"{path}/[{index}]", meta, tensors)
    elif value is None:
        put(b"N")
    elif isinstance(value, bool):
        put(b"B", b"1" if value else b"0")
    elif isinstance(value, int):
        put(b"I", str(value).encode())
    elif isinstance(value, float):
        put(b"F", struct.pack("<d", value))
    elif isinstance(value, str):
        put(b"S", value.encode("utf-8", "surrogatepass"))
    elif isinstance(value, bytes | bytearray):
        put(b"Y", bytes(value))
    else:  # torch.Size, torch.dtype and the like: their repr is deterministic
        put(b"R", f"{type(value).__qualname__}:{value!r}".encode())


def payload_digest(payload: dict[str, Any]) -> dict[str, Any]:
    """The ``"digest"`` entry of ``payload`` (any existing digest entry is left out).

    Returns:
        ``{"algorithm": "blake2b-128", "tensors": {path: hex}, "metadata": hex}``: one
        digest per tensor (dtype, shape, bytes) and one over every non-tensor entry and the
        tree's shape, all in a canonical order (sorted keys).
    """
    meta = hashlib.blake2b(digest_size=16)
    tensors: dict[str, str] = {}
    _walk({k: v for k, v in payload.items() if k != DIGEST_KEY}, "", meta, tensors)
    return {"algorithm": _DIGEST_ALGORITHM, "tensors": tensors, "metadata": meta.hexdigest()}


def _verify(path: Path, payload: dict[str, Any]) -> None:
    """Raise CheckpointError when ``payload`` differs from the digest saved with it."""
    stored = payload.pop(DIGEST_KEY, None)
    if stored is None:
        if payload.get("format_version", 1) == 1:
            return  # written before digests existed: loads unverified, as it always did
        raise CheckpointError(f"checkpoint {path} is corrupt: it has no digest entry although "
                              f"its format_version is {payload.get('format_version')!r}")
    if (not isinstance(stored, dict) or stored.get("algorithm") != _DIGEST_ALGORITHM
            or not isinstance(stored.get("tensors"), dict)):
        raise CheckpointError(f"checkpoint {path} is corrupt: its digest entry is unreadable")
    actual = payload_digest(payload)
    if actual == stored:
        return
    saved_tensors = stored["tensors"]
    differs = [name for name, digest in actual["tensors"].items()
               if saved_tensors.get(name) != digest]
    differs += [name for name in saved_tensors if name not in actual["tensors"]]
    what = f"tensor {differs[0]}" if differs else "the non-tensor entries (config, counters)"
    raise CheckpointError(f"checkpoint {path} is corrupt: {what} does not match the digest "
                          "saved with it")


def unwrapped_name(name: str) -> str:
    """A parameter/buffer name of the plain model, without the prefixes the engine's wrappers
    add (``torch.compile(DistributedDataParallel(model))``: ``_orig_mod.module.``)."""
    return name.removeprefix("_orig_mod.").removeprefix("module.")


def chmod_like_open(path: str | os.PathLike) -> None:
    """Give a written file the mode a plain ``open()`` would (0666 minus the umask), whatever
    the writer used (a temporary file from ``mkstemp`` is 0600, and safetensors writes 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (temporary file, fsync, ``os.replace``).

    A ``"format_version"`` and a ``"digest"`` entry (:func:`payload_digest`) are added; the
    config is stored as a JSON string.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format_version": FORMAT_VERSION, **payload}
    if "config" in payload and not isinstance(payload["config"], str):
        payload["config"] = json.dumps(payload["config"], sort_keys=True)
    payload[DIGEST_KEY] = payload_digest(payload)
    return atomic_write(path, lambda handle: torch.save(payload, handle))


def atomic_write(path: str | os.PathLike, write: Any) -> Path:
    """Call ``write(binary_handle)`` on a temporary file next to ``path`` (named
    ``.{name}.*.tmp``), fsync it and rename it over ``path`` with ``os.replace``: a kill at
    any instant leaves either the previous file or the new one, never a partial file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        chmod_like_open(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write` of UTF-8 text (``config.json``, ``result.json``, ``summary.json``)."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda handle: handle.write(data))


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the ``.{name}.*.tmp`` files that :func:`atomic_write` left in ``folder`` when
    a process was killed mid-write (call only when no writer is running). Returns them."""
    removed = []
    for tmp in sorted(Path(folder).glob(".*.tmp")):
        if tmp.is_file() and not tmp.is_symlink():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu"
                    ) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, never executing code.

    The digest is verified before anything is returned; files without one (written before
    ``format_version`` 2) load unverified and silently.

    Returns:
        The payload (without its ``"digest"`` entry), with ``"config"`` decoded into a dict.

    Raises:
        CheckpointError: Missing, truncated, corrupt (digest mismatch) or foreign file (one
            line naming it).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for truncated/corrupt archives
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated and cannot be loaded ({reason[:160]})"
        ) from None
    if isinstance(payload, dict):  # first, so a flipped bit in a key name reads as corrupt
        _verify(path, payload)
    if not isinstance(payload, dict) or "model" not in payload or "config" not in payload:
        raise CheckpointError(
            f"checkpoint {path} is not an mpbn training checkpoint (no model/config entries)"
        )
    try:
        payload["config"] = json.loads(payload["config"])
    except (TypeError, json.JSONDecodeError):
        raise CheckpointError(f"checkpoint {path} has an unreadable config entry") from None
    return payload
