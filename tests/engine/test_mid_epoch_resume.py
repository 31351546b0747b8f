"""``run.checkpoint_every``: a run killed after a mid-epoch checkpoint and resumed reaches the
state of an uninterrupted run, bit for bit (CPU)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from mpbn.engine import train as train_module
from mpbn.engine.checkpoint import load_checkpoint
from mpbn.engine.config import ConfigError, TrainConfig, apply_overrides
from mpbn.engine.train import RunOptions, run

#: Fields that measure time, not what was computed.
TIMING = {"epoch_time", "images_per_s", "train_time", "commit"}


def _assert_same(a, b, where=""):
    """Every tensor ``torch.equal``, every other leaf ``==``; timing fields skipped."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            if key not in TIMING:
                _assert_same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    else:
        assert a == b, where


def _lines(seed_dir):
    path = seed_dir / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _killed_after_checkpoint(monkeypatch, global_step):
    """``save_checkpoint`` that dies right after writing the mid-epoch one at ``global_step``."""
    real_save = train_module.save_checkpoint

    def save_then_die(path, payload):
        real_save(path, payload)
        if payload.get("mid_epoch") is not None and payload["global_step"] == global_step:
            raise KeyboardInterrupt(f"killed after the checkpoint of step {global_step}")

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_die)


_REFERENCES: dict[str, tuple] = {}


def _reference(cfg, encoding, tmp_path_factory):
    """The uninterrupted run, without mid-epoch checkpoints: (summary, seed folder)."""
    if encoding not in _REFERENCES:
        out = tmp_path_factory.mktemp(f"reference-{encoding}")
        plain = apply_overrides(cfg, dict(checkpoint_every=0))
        _REFERENCES[encoding] = (run(plain, RunOptions(out=out, quiet=True)), out / "seed_0")
    return _REFERENCES[encoding]


# tiny_config: 4 steps per epoch, 2 epochs. Mid-epoch checkpoints at global steps 1-3 and 5-7
# (4 and 8 end an epoch); 5 is the first step after the epoch boundary.
@pytest.mark.parametrize("encoding, every, kill_at", [
    ("direct", 1, 1), ("direct", 1, 3), ("direct", 1, 5), ("direct", 2, 6),
    ("poisson", 3, 3), ("poisson", 1, 5),
])
def test_a_run_killed_mid_epoch_resumes_to_the_uninterrupted_state(
        tmp_path, tmp_path_factory, tiny_config, monkeypatch, encoding, every, kill_at):
    cfg = apply_overrides(tiny_config, dict(encoding=encoding, checkpoint_every=every))
    reference, reference_dir = _reference(cfg, encoding, tmp_path_factory)
    seed_dir = tmp_path / "seed_0"
    _killed_after_checkpoint(monkeypatch, kill_at)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, RunOptions(out=tmp_path, quiet=True))
    monkeypatch.undo()

    # The kill left a mid-epoch last.pt that no epoch-end reader mistakes for one.
    last = load_checkpoint(seed_dir / "last.pt")
    done = (kill_at - 1) // 4  # epochs finished before the kill
    mid = last["mid_epoch"]
    assert (last["epoch"], last["global_step"]) == (done, kill_at)
    assert (mid["epoch"], mid["steps"], mid["steps_per_epoch"]) == (done + 1, kill_at - 4 * done,
                                                                    4)
    assert mid["ranks"][0]["loader"]["batches"] == mid["steps"]
    assert last["train_time"] >= mid["epoch_time"] > 0
    assert [x["epoch"] for x in _lines(seed_dir)] == list(range(1, done + 1))
    assert (seed_dir / "best.pt").exists() == (done > 0)
    if done:
        assert "mid_epoch" not in load_checkpoint(seed_dir / "best.pt")

    summary = run(cfg, RunOptions(out=tmp_path, quiet=True, resume=True))
    for name in ("last.pt", "best.pt"):
        a, b = load_checkpoint(reference_dir / name), load_checkpoint(seed_dir / name)
        assert "mid_epoch" not in b
        a["config"]["run"].pop("checkpoint_every")
        b["config"]["run"].pop("checkpoint_every")
        _assert_same(a, b, name)
    _assert_same(_lines(reference_dir), _lines(seed_dir), "metrics.jsonl")
    _assert_same(json.loads((reference_dir / "result.json").read_text()),
                 json.loads((seed_dir / "result.json").read_text()), "result.json")
    assert summary["final_test_acc"] == reference["final_test_acc"]
    assert summary["train_time"][0] == pytest.approx(
        sum(x["epoch_time"] for x in _lines(seed_dir)))


def test_mid_epoch_checkpoints_change_nothing_in_the_run(tmp_path, tmp_path_factory,
                                                         tiny_config):
    cfg = apply_overrides(tiny_config, dict(checkpoint_every=1))
    _, reference_dir = _reference(cfg, "direct", tmp_path_factory)
    run(cfg, RunOptions(out=tmp_path, quiet=True))
    a, b = (load_checkpoint(d / "last.pt") for d in (reference_dir, tmp_path / "seed_0"))
    for key in ("model", "optimizer", "rng"):
        _assert_same(a[key], b[key], key)


def test_a_loader_that_cannot_resume_mid_epoch_is_a_one_line_error(tmp_path, tiny_config,
                                                                   monkeypatch):
    class PlainLoader:
        """A loader of one's own: batches, a length and set_epoch, but no state_dict."""

        def __init__(self, inner):
            self.inner = inner

        def __iter__(self):
            return iter(self.inner)

        def __len__(self):
            return len(self.inner)

        def set_epoch(self, epoch):
            self.inner.set_epoch(epoch)

    real_splits = train_module.build_splits

    def plain_splits(*args, **kwargs):
        splits = real_splits(*args, **kwargs)
        return splits._replace(train=PlainLoader(splits.train))

    monkeypatch.setattr(train_module, "build_splits", plain_splits)
    cfg = apply_overrides(tiny_config, dict(checkpoint_every=2))
    with pytest.raises(ConfigError, match=r"^--checkpoint-every needs a training loader that "
                                          r"can resume mid-epoch .* of dataset 'digits' "
                                          r"\(PlainLoader\) cannot[^\n]*$"):
        run(cfg, RunOptions(out=tmp_path / "run", quiet=True))
    assert not (tmp_path / "run").exists()  # nothing left behind
    run(apply_overrides(cfg, dict(checkpoint_every=0)),  # epoch-end checkpoints still work
        RunOptions(out=tmp_path / "run", quiet=True, stop_after=1))
    with pytest.raises(ConfigError, match="run.checkpoint_every must be >= 0"):
        apply_overrides(tiny_config, dict(checkpoint_every=-1))


def test_the_device_loader_continues_an_epoch_from_its_state(tiny_config):
    from mpbn.data.augment import AugmentSpec
    from mpbn.data.loaders import DeviceLoader

    generator = torch.Generator().manual_seed(0)
    data = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8, generator=generator)

    def loader():
        return DeviceLoader(data, torch.arange(40) % 10, batch_size=6, shuffle=True,
                            augment=AugmentSpec(crop_padding=2, cutout=3, autoaugment=True),
                            seed=3)

    whole = loader()
    whole.set_epoch(2)
    expected = list(whole)
    first = loader()
    first.set_epoch(2)
    batches = iter(first)
    for _ in range(3):
        next(batches)
    state = first.state_dict()
    assert (state["epoch"], state["batches"]) == (2, 3)
    second = loader()
    second.load_state_dict(state)
    rest = list(second)
    assert len(rest) == len(expected) - 3
    for (x, y), (ex, ey) in zip(rest, expected[3:], strict=True):
        assert torch.equal(x, ex) and torch.equal(y, ey)
    assert len(list(second)) == len(expected)  # the state applies to one iteration only
    with pytest.raises(ValueError, match="set_epoch"):
        second.load_state_dict(state)
        second.set_epoch(3)
        list(second)


def test_the_cli_flag_and_evals_note_on_a_mid_epoch_checkpoint(tmp_path, monkeypatch, capsys):
    from mpbn.cli import main

    tiny = ["--set", "train_subset=256", "test_subset=64", "timesteps=2", "batch_size=64",
            "--epochs", "2", "--quiet", "--out", str(tmp_path), "--checkpoint-every", "3"]
    _killed_after_checkpoint(monkeypatch, 3)
    assert main(["train", *tiny]) == 130
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "seed_0/last.pt")["config"]["run"]["checkpoint_every"] == 3
    capsys.readouterr()
    assert main(["eval", str(tmp_path)]) == 0
    assert "(mid-epoch: epoch 1 at step 3 of 4, written by --checkpoint-every," in (
        capsys.readouterr().out)
    assert main(["train", "--resume", *tiny]) == 0
    assert [x["epoch"] for x in _lines(tmp_path / "seed_0")] == [1, 2]


def _two_process_worker(rank, ports, out, every, kill_at):
    """The reference run, the killed run and its resume, one after another (one start-up)."""
    torch.set_num_threads(1)
    for mode, port in zip(("reference", "kill", "resume"), ports, strict=True):
        os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        cfg = apply_overrides(TrainConfig(), dict(
            epochs=2, train_subset=256, test_subset=128, batch_size=64, eval_batch_size=128,
            timesteps=2, log_interval=2, fold=False, encoding="poisson", device="cpu",
            checkpoint_every=0 if mode == "reference" else every))

        def die(event, global_step=0, mode=mode, **_):  # every rank
            if event == "step" and mode == "kill" and global_step == kill_at:
                raise KeyboardInterrupt("killed")

        folder = f"{out}/reference" if mode == "reference" else f"{out}/run"
        try:
            run(cfg, RunOptions(out=folder, quiet=True, resume=mode == "resume", hooks=[die]))
        except KeyboardInterrupt:
            torch.save(load_checkpoint(f"{folder}/seed_0/last.pt"), f"{out}/killed.pt") \
                if rank == 0 else None


@pytest.mark.skipif(not os.environ.get("MPBN_DDP_TESTS"),
                    reason="two gloo processes, ~40 s on 2 busy cores: set MPBN_DDP_TESTS=1")
@pytest.mark.parametrize("every, kill_at", [(1, 3), (0, 6)], ids=["mid-epoch", "epoch-end"])
def test_two_processes_resume_with_each_ranks_state(tmp_path, every, kill_at):
    """Each rank continues with its own encoder noise, augmentation and sums: from a mid-epoch
    checkpoint (after step 2 of 4) or from the end of epoch 1 (``rank_rng``)."""
    import socket

    import torch.multiprocessing as mp

    sockets = [socket.socket() for _ in range(3)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    mp.spawn(_two_process_worker, args=(ports, str(tmp_path), every, kill_at), nprocs=2,
             join=True)
    killed = torch.load(tmp_path / "killed.pt", weights_only=True)
    if every:
        mid = killed["mid_epoch"]
        assert (mid["epoch"], mid["steps"], len(mid["ranks"])) == (1, 2, 2)
        rngs = [r["rng"] for r in mid["ranks"]]
    else:
        assert (killed["epoch"], killed.get("mid_epoch")) == (1, None)
        rngs = killed["rank_rng"]
        _assert_same(rngs[0], killed["rng"])
    assert not torch.equal(rngs[0]["torch"], rngs[1]["torch"])
    a, b = (load_checkpoint(tmp_path / f"{d}/seed_0/last.pt") for d in ("reference", "run"))
    for key in ("model", "optimizer"):
        _assert_same(a[key], b[key], key)
    _assert_same(_lines(tmp_path / "reference/seed_0"), _lines(tmp_path / "run/seed_0"))


def test_an_image_folder_run_killed_mid_epoch_resumes_to_the_uninterrupted_state(
        tmp_path, tiny_config, monkeypatch):
    """The image-folder loader (ImageNet, Tiny-ImageNet) continues an epoch mid-way too: a
    sample's crop and flip follow from its position, which the resumed epoch skips to."""
    from tests.data.writers import write_tiny_imagenet

    write_tiny_imagenet(tmp_path / "data")  # 15 training images: 4 steps of 4 per epoch
    cfg = apply_overrides(tiny_config, {
        "data.name": "tiny-imagenet", "data.root": str(tmp_path / "data"),
        "data.train_subset": None, "data.test_subset": None, "data.batch_size": 4,
        "data.eval_batch_size": 4, "data.num_workers": 0, "run.checkpoint_every": 1})
    reference = run(apply_overrides(cfg, {"run.checkpoint_every": 0}),
                    RunOptions(out=tmp_path / "reference", quiet=True))
    _killed_after_checkpoint(monkeypatch, 6)  # step 2 of epoch 2
    with pytest.raises(KeyboardInterrupt):
        run(cfg, RunOptions(out=tmp_path / "killed", quiet=True))
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "killed/seed_0/last.pt")["mid_epoch"]["ranks"][0][
        "loader"] == {"epoch": 2, "batches": 2}
    summary = run(cfg, RunOptions(out=tmp_path / "killed", quiet=True, resume=True))
    a = load_checkpoint(tmp_path / "reference/seed_0/last.pt")
    b = load_checkpoint(tmp_path / "killed/seed_0/last.pt")
    a["config"]["run"].pop("checkpoint_every")
    b["config"]["run"].pop("checkpoint_every")
    _assert_same(a, b, "last.pt")
    _assert_same(_lines(tmp_path / "reference/seed_0"), _lines(tmp_path / "killed/seed_0"),
                 "metrics.jsonl")
    assert summary["final_test_acc"] == reference["final_test_acc"]
