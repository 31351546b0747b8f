"""One checkpoint -> model loader and one evaluate, used by the CLI, the analyses and deploy."""

from __future__ import annotations

import torch

from mpbn.engine.config import TrainConfig, apply_overrides
from mpbn.engine.deploy import export_folded, load_folded
from mpbn.engine.evaluation import evaluate
from mpbn.engine.loading import DataShape, build_model, load_model
from mpbn.layers import LIF
from mpbn.layers.fold import fold

SHAPE = DataShape(num_classes=10, input_shape=(1, 8, 8))


def _trained_like(seed: int = 0) -> tuple[torch.nn.Module, TrainConfig]:
    cfg = apply_overrides(TrainConfig(), {"timesteps": 2})
    torch.manual_seed(seed)
    model = build_model(cfg, SHAPE)
    with torch.no_grad():  # MPBN scales of both signs and non-trivial statistics
        for m in model.modules():
            if isinstance(m, LIF) and m.membrane_norm is not None:
                norm = m.membrane_norm
                norm.weight.copy_(torch.randn_like(norm.weight))
                norm.running_mean.copy_(torch.randn_like(norm.running_mean) * 0.1)
    return model.eval(), cfg


def test_a_folded_model_with_negative_scales_rebuilds_from_its_files(tmp_path):
    model, cfg = _trained_like()
    folded = fold(model)
    signs = [n for n, m in folded.named_modules()
             if isinstance(m, LIF) and isinstance(m.threshold_sign, torch.Tensor)]
    assert signs  # the case a fresh fold template does not have
    export_folded(folded, cfg, SHAPE._asdict(), tmp_path)
    deployed = load_folded(tmp_path)
    loaded = load_model(tmp_path)
    assert loaded.config == cfg
    for name in signs:
        lif = deployed.get_submodule(name)
        assert "threshold_sign" in dict(lif.named_buffers())
    x = torch.rand(6, 1, 8, 8)
    torch.testing.assert_close(deployed(x), folded(x))
    torch.testing.assert_close(loaded.model(x), folded(x))


def test_the_analysis_evaluate_is_the_engine_evaluate_in_fractions():
    from mpbn.analysis._common import evaluate as evaluate_sample

    model, _ = _trained_like()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(20, 1, 8, 8, generator=g), torch.randint(0, 10, (20,), generator=g)
    chunks = [(x[i:i + 8], y[i:i + 8]) for i in range(0, 20, 8)]
    engine = evaluate(model, chunks, seed=0, measure_spikes=False)
    sample = evaluate_sample(model, x, y, batch_size=8, seed=0)
    assert sample == {"loss": engine["test_loss"], "acc": engine["test_acc"]}
    logits = model(x)
    assert engine["test_acc"] == (logits.argmax(1) == y).float().mean().item()
    assert 0.0 <= engine["test_acc"] <= 1.0


def test_load_model_reads_checkpoints_of_wrapped_models(tmp_path):
    from mpbn.engine.checkpoint import save_checkpoint

    model, cfg = _trained_like()
    state = {f"module.{k}": v for k, v in model.state_dict().items()}  # DDP's prefix
    save_checkpoint(tmp_path / "last.pt", {"model": state, "config": cfg.to_dict(),
                                           "data_info": SHAPE._asdict(), "epoch": 1})
    loaded, config, _ = load_model(tmp_path / "last.pt")
    assert config == cfg
    x = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(loaded(x), model(x))
