"""Golden outputs recorded before the architecture redesign (issue 19), to keep it bit-identical.

``python tests/golden/golden_cases.py`` re-records ``tests/golden/golden.pt`` (only when a change
of behaviour is intended, and then say so in the commit). ``tests/test_golden.py`` recomputes
every case and compares it with the recording.

Three kinds of case, all on CPU with fixed seeds:

- ``neuron/...``: every reset x surrogate x membrane norm x train/eval x backend of one
  :class:`mpbn.LIF` in float64: spikes, input gradient, MPBN parameter gradients, running
  statistics after the call.
- ``model/...``: a handful of zoo models (every norm, both MPBN granularities, Poisson, the
  Sequential-MNIST MLP) in float64: logits, every parameter's gradient, the buffers after one
  training forward, and the folded model's logits in evaluation.
- ``train/...``: presets trained for two short epochs through :func:`mpbn.engine.train.run`
  on the bundled digits (float32): per-epoch train/test loss and accuracy, folded accuracy and
  spike mismatch, and the final weights' sums.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

GOLDEN = Path(__file__).with_name("golden.pt")

SURROGATES = ("rectangle", "tanh", "linear", "sigmoid", "atan")


def neuron_cases() -> list[tuple[str, dict]]:
    cases = []
    for reset in ("hard", "soft"):
        for surrogate in SURROGATES:
            for norm in (None, "channel", "element"):
                for training in (True, False):
                    for backend in ("reference", "auto"):
                        name = (f"neuron/{reset}/{surrogate}/{norm or 'none'}/"
                                f"{'train' if training else 'eval'}/{backend}")
                        cases.append((name, dict(reset=reset, surrogate=surrogate, norm=norm,
                                                 training=training, backend=backend)))
    return cases


def run_neuron_case(reset: str, surrogate: str, norm: str | None, training: bool,
                    backend: str) -> dict[str, torch.Tensor]:
    import mpbn

    gen = torch.Generator().manual_seed(1234)
    steps, batch, c, h, w = 4, 5, 2, 2, 2
    kwargs = dict(reset=reset, surrogate=surrogate, backend=backend)
    if norm == "channel":
        kwargs.update(membrane_norm="channel", num_features=c)
    elif norm == "element":
        kwargs.update(membrane_norm="element", feature_shape=(c, h, w))
    lif = mpbn.LIF(**kwargs).double()
    if lif.membrane_norm is not None:
        with torch.no_grad():
            mbn = lif.membrane_norm
            mbn.weight.copy_(torch.rand(mbn.weight.shape, generator=gen, dtype=torch.float64)
                             * 1.5 + 0.25)
            mbn.bias.copy_(torch.randn(mbn.bias.shape, generator=gen, dtype=torch.float64) * 0.3)
            mbn.running_mean.copy_(torch.randn(mbn.weight.shape, generator=gen,
                                               dtype=torch.float64) * 0.2)
            mbn.running_var.copy_(torch.rand(mbn.weight.shape, generator=gen,
                                             dtype=torch.float64) + 0.5)
    lif.train(training)
    x = (torch.randn(steps, batch, c, h, w, generator=gen, dtype=torch.float64) * 0.8
         + 0.3).requires_grad_()
    spikes = lif(x)
    weights = torch.randn(spikes.shape, generator=gen, dtype=torch.float64)
    (spikes * weights).sum().backward()
    out = {"spikes": spikes.detach(), "grad_x": x.grad}
    if lif.membrane_norm is not None:
        mbn = lif.membrane_norm
        out.update(grad_weight=mbn.weight.grad, grad_bias=mbn.bias.grad,
                   running_mean=mbn.running_mean.clone(), running_var=mbn.running_var.clone())
    return out


MODEL_CASES: dict[str, dict] = {
    "small_cnn-channel": dict(model="small_cnn", timesteps=3, mpbn="channel"),
    "small_cnn-element-soft": dict(model="small_cnn", timesteps=2, mpbn="element",
                                   reset="soft", surrogate="tanh"),
    "resnet20_narrow-tdbn-element": dict(model="resnet20_narrow", timesteps=2, mpbn="element",
                                         norm="tdbn", input_size=8),
    "resnet19-bn-channel": dict(model="resnet19", timesteps=2, mpbn="channel", input_size=8,
                                width=16),
    "vgg9-bntt-poisson": dict(model="vgg9", timesteps=4, input_size=8, width=8),
    "vgg9-tebn-channel": dict(model="vgg9", timesteps=3, norm="tebn", mpbn="channel",
                              input_size=8, width=8, encoding="direct"),
    "vgg11-ln": dict(model="vgg11", timesteps=2, norm="ln", input_size=16, width=8),
    "fc_smnist-bntt": dict(model="fc_smnist", timesteps=16),
    # The BNTT models' leak changed from 0.95 to 0.99 in the redesign (one value for the
    # library and the CLI, mpbn.recipes); with decay=0.95 they still equal the old recording.
    "vgg9-bntt-poisson-leak095": dict(model="vgg9", timesteps=4, input_size=8, width=8,
                                      decay=0.95),
    "vgg11-ln-leak095": dict(model="vgg11", timesteps=2, norm="ln", input_size=16, width=8,
                             decay=0.95),
    "fc_smnist-bntt-leak095": dict(model="fc_smnist", timesteps=16, decay=0.95),
}


def run_model_case(model: str, **kwargs) -> dict[str, torch.Tensor]:
    import mpbn

    torch.manual_seed(0)
    net = mpbn.models.create(model, num_classes=5, **kwargs).double()
    shape = net.input_shape
    gen = torch.Generator().manual_seed(7)
    x = torch.rand(4, *shape, generator=gen, dtype=torch.float64)
    if model == "fc_smnist":
        x = torch.rand(4, 16, generator=gen, dtype=torch.float64)
    torch.manual_seed(1)  # Poisson encoding draws from the global generator
    net.train()
    logits = net(x)
    target = torch.arange(4) % 5
    torch.nn.functional.cross_entropy(logits, target).backward()
    out = {"logits": logits.detach()}
    for name, param in net.named_parameters():
        if param.grad is not None:
            out[f"grad/{name}"] = param.grad.clone()
    for name, buf in net.named_buffers():
        out[f"buffer/{name}"] = buf.clone()
    net.eval()
    torch.manual_seed(2)
    with torch.no_grad():
        out["eval_logits"] = net(x)
        try:
            folded = mpbn.fold(net)
        except Exception as error:  # noqa: BLE001 - a refusal is recorded, not hidden
            out["fold_error"] = torch.tensor([ord(ch) for ch in type(error).__name__])
        else:
            torch.manual_seed(2)
            out["folded_logits"] = folded(x)
    return out


TRAIN_CASES: dict[str, tuple[str | None, dict]] = {
    "default": (None, {}),
    "mpbn-resnet20-cifar10-t1": ("mpbn-resnet20-cifar10-t1",
                                 dict(model_kwargs={"width": 8}, autoaugment=False)),
    "cifar10-r20narrow-t2-mpbn-element": ("cifar10-r20narrow-t2-mpbn-element", {}),
    "bntt-vs-bn-poisson-bntt": ("bntt-vs-bn-poisson-bntt", dict(timesteps=4)),
    "bntt-table5-vgg9-cifar10-ln": ("bntt-table5-vgg9-cifar10-ln",
                                    dict(timesteps=3, model_kwargs={"width": 8})),
}
TRAIN_COMMON = dict(dataset="digits", train_subset=96, test_subset=64, epochs=2, batch_size=32,
                    seeds=1, device="cpu", eval_batch_size=64, data_root=None)


def run_train_case(preset: str | None, overrides: dict) -> dict[str, torch.Tensor]:
    from mpbn.engine.config import apply_overrides
    from mpbn.engine.presets import get_preset
    from mpbn.engine.train import RunOptions, run

    cfg = apply_overrides(get_preset(preset), {**TRAIN_COMMON, **overrides})
    with tempfile.TemporaryDirectory() as tmp:
        summary = run(cfg, RunOptions(out=Path(tmp) / "run", quiet=True))
        seed_dir = Path(tmp) / "run" / "seed_0"
        lines = [json.loads(x) for x in (seed_dir / "metrics.jsonl").read_text().splitlines()]
        state = torch.load(seed_dir / "last.pt", weights_only=True)["model"]
    out = {key: torch.tensor([line[key] for line in lines], dtype=torch.float64)
           for key in ("train_loss", "train_acc", "test_loss", "test_acc", "spike_rate")}
    out["folded_test_acc"] = torch.tensor(summary["folded_test_acc"], dtype=torch.float64)
    out["spike_mismatch"] = torch.tensor(summary["spike_mismatch"], dtype=torch.float64)
    out["weight_sums"] = torch.stack([v.double().sum() for k, v in sorted(state.items())
                                      if v.is_floating_point()])
    return out


def digest(tensor: torch.Tensor) -> torch.Tensor:
    """A small tensor as is; a large one as (sum, sum of squares, a fixed random projection).

    Any change of a value moves the projection, so the recording stays small without
    losing the power to fail.
    """
    if tensor.numel() <= 64:
        return tensor
    flat = tensor.detach().double().flatten()
    probe = torch.randn(flat.numel(), generator=torch.Generator().manual_seed(99),
                        dtype=torch.float64)
    return torch.stack([flat.sum(), (flat * flat).sum(), (flat * probe).sum()])


def _digested(fn):
    def run() -> dict[str, torch.Tensor]:
        return {key: digest(value) for key, value in fn().items()}

    return run


def all_cases() -> dict[str, object]:
    """Name -> zero-argument function computing that case's tensors."""
    cases: dict[str, object] = {}
    for name, kwargs in neuron_cases():
        cases[name] = lambda kw=kwargs: run_neuron_case(**kw)
    for name, kwargs in MODEL_CASES.items():
        cases[f"model/{name}"] = lambda kw=kwargs: run_model_case(**kw)
    for name, (preset, overrides) in TRAIN_CASES.items():
        cases[f"train/{name}"] = lambda p=preset, o=overrides: run_train_case(p, o)
    return {name: _digested(fn) for name, fn in cases.items()}


def record(path: Path = GOLDEN) -> None:
    golden = {}
    for name, fn in all_cases().items():
        print(name, flush=True)
        golden[name] = fn()
    torch.save(golden, path)
    print(f"wrote {path} ({path.stat().st_size} bytes, {len(golden)} cases)")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    record()
