"""Model transforms for deployment: fold normalizations away, and check the result.

Like timm's ``freeze_batch_norm_2d``, :func:`fold` returns a new module tree and leaves the
original untouched.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from mpbn.functional.fold import fold_bn_into_weights, fold_membrane_threshold
from mpbn.layers.neuron import LIF
from mpbn.layers.norm import SeqLayerNorm, SeqNorm
from mpbn.layers.recording import record_spikes
from mpbn.layers.sequence import ConvNorm
from mpbn.layers.sync import revert_sync_norms

__all__ = ["fold", "fold_membrane_norms", "fold_norms_into_weights", "FOLD_PASSES",
           "SpikeMismatch", "spike_mismatch", "FoldWarning", "warn_unfolded"]


class FoldWarning(UserWarning):
    """Something in the model could not be folded and stays as it is."""


def _fold_neuron(neuron: LIF) -> LIF:
    norm = neuron.membrane_norm
    assert norm is not None
    v_th = neuron.v_threshold
    if isinstance(v_th, Tensor) and norm.granularity == "channel" and v_th.dim() > 1:
        raise ValueError("cannot fold channel-wise MPBN under a per-element threshold")
    threshold, sign = fold_membrane_threshold(
        v_th, norm.weight, norm.bias, norm.running_mean, norm.running_var, norm.eps
    )
    if neuron.threshold_sign is not None:
        raise ValueError("this neuron is already folded (it has a threshold_sign)")
    return LIF(
        decay=neuron.decay,
        v_threshold=threshold,
        reset=neuron.reset,
        surrogate=neuron.surrogate,
        alpha=neuron.alpha,
        threshold_sign=sign if bool((sign < 0).any()) else None,
        # A soft reset subtracts the original V_th from the un-normalized u_pre (Eq. 2).
        reset_amount=v_th if neuron.reset_amount is None else neuron.reset_amount,
        detach_reset=neuron.detach_reset,
    )


def fold_membrane_norms(model: nn.Module) -> list[str]:
    """Replace, in place, every MPBN neuron of ``model`` by its folded LIF (Eq. 10, 13).

    Returns:
        Names of the neurons that were folded.
    """
    folded = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, LIF) and child.membrane_norm is not None:
                setattr(module, child_name, _fold_neuron(child))
                folded.append(f"{name}.{child_name}" if name else child_name)
    return folded


def fold(module: nn.Module) -> nn.Module:
    """Return a folded, eval-mode copy of ``module`` (a single neuron or a whole model).

    Every MPBN neuron becomes a plain LIF with a per-channel or per-element threshold (MPBN
    Sec. 4.2) using the running statistics, and every shared-statistics norm of a
    :class:`~mpbn.layers.sequence.ConvNorm` is folded into its conv's weights (the passes of
    :data:`FOLD_PASSES`). ``module`` itself is not modified. A tree with synchronized norms
    (:func:`~mpbn.layers.sync.convert_sync_norms`) folds as its plain twin: folded neurons
    normalize nothing, and process groups cannot be copied.
    """
    module = revert_sync_norms(module)
    if isinstance(module, LIF):
        return _fold_neuron(module).eval() if module.membrane_norm is not None \
            else copy.deepcopy(module).eval()
    folded = copy.deepcopy(module).eval()
    for fold_pass in FOLD_PASSES:
        fold_pass(folded)
    return folded


@dataclass
class SpikeMismatch:
    """Spike agreement between two models on one input, per neuron layer (in call order)."""

    layers: list[str] = field(default_factory=list)
    mismatches: list[int] = field(default_factory=list)
    totals: list[int] = field(default_factory=list)
    max_output_diff: float = 0.0

    @property
    def total_mismatches(self) -> int:
        return sum(self.mismatches)

    @property
    def rate(self) -> float:
        """Fraction of spike entries (neuron x step x sample) that differ."""
        total = sum(self.totals)
        return self.total_mismatches / total if total else 0.0


@torch.no_grad()
def spike_mismatch(reference: nn.Module, candidate: nn.Module, *inputs: Tensor,
                   seed: int | None = None) -> SpikeMismatch:
    """Run both models in eval mode on ``inputs`` and count differing spikes per LIF layer.

    Typical use: ``spike_mismatch(model, mpbn.fold(model), x)``; a correct fold gives zero in
    float64. In float32, folding BN into conv weights rounds differently from conv-then-BN, so a
    few potentials within rounding of the threshold may flip: read :attr:`SpikeMismatch.rate`.
    Both models must call their neurons in the same order. Training flags are restored.

    Args:
        seed: If given, the global RNG is reseeded (in a fork) before each model runs, so a
            random encoder (Poisson) feeds both the same spikes.
    """
    report = SpikeMismatch()
    modes = (reference.training, candidate.training)
    try:
        with record_spikes(reference, keep="tensors") as ref, \
                record_spikes(candidate, keep="tensors") as cand:
            reference.eval()
            candidate.eval()
            out_ref = _run_seeded(reference, inputs, seed)
            out_cand = _run_seeded(candidate, inputs, seed)
    finally:
        reference.train(modes[0])
        candidate.train(modes[1])
    ref_records, cand_records = ref.outputs, cand.outputs
    if len(ref_records) != len(cand_records):
        raise ValueError(
            f"models called different numbers of neurons: {len(ref_records)} vs {len(cand_records)}"
        )
    for (name, a), (_, b) in zip(ref_records, cand_records, strict=True):
        report.layers.append(name)
        report.mismatches.append(int((a != b).sum()))
        report.totals.append(a.numel())
    if isinstance(out_ref, Tensor) and isinstance(out_cand, Tensor):
        report.max_output_diff = float((out_ref.double() - out_cand.double()).abs().max())
    return report


def _run_seeded(model: nn.Module, inputs: tuple[Tensor, ...], seed: int | None) -> object:
    if seed is None:
        return model(*inputs)
    devices = [x.device for x in inputs if x.device.type == "cuda"][:1]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return model(*inputs)


def warn_unfolded(kind: str, names: list[str]) -> None:
    """Say which time-varying layers stay in a folded model."""
    if names:
        warnings.warn(
            f"{len(names)} {kind} layer(s) vary over time and cannot fold into weights; they "
            f"stay in the folded model: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}",
            FoldWarning, stacklevel=3,
        )


def _fold_norm_into_layer(layer: nn.Module, norm: SeqNorm) -> None:
    """Update ``layer`` in place so that ``layer(x) == norm(layer_old(x))`` in eval mode."""
    weight, bias = fold_bn_into_weights(
        layer.weight, layer.bias, norm.running_mean, norm.running_var, norm.weight, norm.bias,
        norm.eps, scale=norm.fold_scale(),
    )
    with torch.no_grad():
        layer.weight.copy_(weight)
        if layer.bias is None:
            # The folded layer needs a bias (``beta - mu * s``) even if the conv had none.
            layer.bias = nn.Parameter(bias.to(layer.weight.dtype))
        else:
            layer.bias.copy_(bias)


def fold_norms_into_weights(model: nn.Module) -> list[str]:
    """Fold, in place, every shared-statistics norm that directly follows a conv/linear layer.

    Every :class:`~mpbn.layers.sequence.ConvNorm` (its ``norm`` acts directly on its ``conv``'s
    output) whose norm has :attr:`~mpbn.layers.norm.SeqNorm.folds_into_weights` (plain BN,
    tdBN: in eval mode the same affine map of the input at every step) gets ``conv`` updated
    with ``W' = W s``, ``b' = (b - mu) s + beta``, ``s = scale * gamma / sqrt(var + eps)``
    (:func:`mpbn.functional.fold.fold_bn_into_weights`) and ``norm`` replaced by
    :class:`nn.Identity`; exact in eval mode.

    Norms that cannot fold stay and are reported with a :class:`FoldWarning`: time-varying ones
    (BNTT, TEBN), per-sample ones (LayerNorm), and shared-statistics BN outside a
    :class:`~mpbn.layers.sequence.ConvNorm` (no known preceding conv/linear layer).

    Returns:
        Names of the norms that were folded.
    """
    folded: list[str] = []
    for name, module in list(model.named_modules()):
        if not isinstance(module, ConvNorm):
            continue
        norm = module.norm
        if isinstance(norm, SeqNorm) and norm.folds_into_weights:
            _fold_norm_into_layer(module.conv, norm)
            module.norm = nn.Identity()
            folded.append(f"{name}.norm" if name else "norm")
    time_varying, per_sample, stranded = [], [], []
    for name, module in model.named_modules():
        if not isinstance(module, SeqNorm):
            continue
        if isinstance(module, SeqLayerNorm):
            per_sample.append(name)
        elif module.folds_into_weights:
            stranded.append(name)
        else:
            time_varying.append(name)
    warn_unfolded("time-varying norm (BNTT/TEBN)", time_varying)
    for kind, names in (("LayerNorm (per-sample statistics)", per_sample),
                        ("BN with no preceding conv/linear to fold into", stranded)):
        if names:
            warnings.warn(
                f"{len(names)} {kind} layer(s) cannot fold into weights; they stay in the folded "
                f"model: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}",
                FoldWarning, stacklevel=3,
            )
    return folded


#: Passes :func:`fold` runs in order on the copy; each folds in place and returns what it did.
FOLD_PASSES: list[Callable[[nn.Module], list[str]]] = [fold_membrane_norms,
                                                       fold_norms_into_weights]
