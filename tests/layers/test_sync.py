"""Synchronized norms as a module transform: a new tree of twins sharing the tensors.

The two-process equivalence (synchronized statistics over gloo ranks equal one process with
the whole batch) is in tests/engine/test_distributed.py.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import mpbn
from mpbn.layers import LIF, SeqBatchNorm
from mpbn.layers.neuron import MembraneBN
from mpbn.layers.norm import SeqLayerNorm
from mpbn.layers.sync import (
    SyncMembraneBN,
    SyncSeqBatchNorm,
    convert_sync_norms,
    revert_sync_norms,
)


def test_convert_sync_norms_returns_a_new_tree_sharing_the_tensors():
    model = nn.Sequential(SeqBatchNorm(4), SeqLayerNorm(4),
                          LIF(membrane_norm="channel", num_features=4))
    group = object()
    synced = convert_sync_norms(model, group)
    assert synced is not model
    assert type(synced[0]) is SyncSeqBatchNorm and synced[0].process_group is group
    assert synced[1] is model[1]  # LayerNorm has no batch statistics
    assert type(synced[2].membrane_norm) is SyncMembraneBN
    assert synced[2].membrane_norm.process_group is group
    # The original is untouched and plain, and shares every tensor with the converted tree.
    assert type(model[0]) is SeqBatchNorm and type(model[2].membrane_norm) is MembraneBN
    assert not hasattr(model[0], "process_group")
    assert list(model.state_dict()) == list(synced.state_dict())
    for (name, a), b in zip(model.state_dict().items(), synced.state_dict().values(),
                            strict=True):
        assert a.data_ptr() == b.data_ptr(), name
    plain = revert_sync_norms(synced)
    assert type(plain[0]) is SeqBatchNorm and type(plain[2].membrane_norm) is MembraneBN
    assert not hasattr(plain[0], "process_group")
    assert convert_sync_norms(nn.Sequential(SeqLayerNorm(4)), group)[0].num_features == 4


def test_synchronized_mpbn_runs_the_reference_neuron_and_evaluates_unchanged():
    """Without a process group the synchronized norms are plain BN: same spikes and running
    statistics as the plain model in training (through the reference step, as the fused path
    does not apply) and in evaluation."""
    torch.manual_seed(0)
    model = nn.Sequential(SeqBatchNorm(3), LIF(membrane_norm="element",
                                               feature_shape=(3, 2, 2))).double()
    plain = copy.deepcopy(model)
    synced = convert_sync_norms(model, None)
    x = torch.randn(3, 4, 3, 2, 2, dtype=torch.float64) + 0.3
    torch.testing.assert_close(synced(x), plain(x), rtol=0, atol=0)
    for (name, a), b in zip(plain.state_dict().items(), model.state_dict().values(),
                            strict=True):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12, msg=name)
    synced.eval()
    plain.eval()
    torch.testing.assert_close(synced(x), plain(x), rtol=0, atol=0)


def test_convert_refuses_a_norm_subclass_it_cannot_synchronize():
    class MyBN(SeqBatchNorm):
        pass

    with pytest.raises(TypeError, match="MyBN has batch statistics but no synchronized twin"):
        convert_sync_norms(nn.Sequential(MyBN(2)), object())


def test_fold_of_a_synchronized_tree_is_the_fold_of_the_plain_model():
    class Group:  # like a process group: cannot be copied
        def __deepcopy__(self, memo):
            raise TypeError("cannot pickle a process group")

    torch.manual_seed(0)
    model = nn.Sequential(SeqBatchNorm(3), LIF(membrane_norm="channel", num_features=3))
    model(torch.randn(2, 4, 3, 2, 2) + 0.3)  # non-trivial running statistics
    folded = mpbn.fold(convert_sync_norms(model, Group()))
    assert not any(type(m).__name__.startswith("Sync") for m in folded.modules())
    x = torch.randn(2, 4, 3, 2, 2) + 0.3
    torch.testing.assert_close(folded(x), mpbn.fold(model)(x), rtol=0, atol=0)
