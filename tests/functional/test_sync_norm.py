"""Synchronized BN (mpbn.functional.sync_norm) in one process: plain BN, with or without a group.

The two-process equivalence is in tests/engine/test_distributed.py.
"""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
from torch import nn

from mpbn.functional.sync_norm import sync_batch_norm, sync_normalize_with_batch_stats


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _single_worker_group(port: int) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0,
                            world_size=1)


def test_sync_functions_match_local_bn_in_a_world_of_one():
    _single_worker_group(_free_port())
    try:
        torch.manual_seed(1)
        x = torch.randn(6, 3, 4, dtype=torch.float64, requires_grad=True)
        w = torch.rand(3, dtype=torch.float64, requires_grad=True)
        b = torch.randn(3, dtype=torch.float64, requires_grad=True)
        rm, rv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
        rm2, rv2 = rm.clone(), rv.clone()
        y = sync_batch_norm(x, w, b, rm, rv, 1e-5, 0.1, dist.group.WORLD)
        y_ref = nn.functional.batch_norm(x, rm2, rv2, w, b, True, 0.1, 1e-5)
        torch.testing.assert_close(y, y_ref)
        torch.testing.assert_close((rm, rv), (rm2, rv2))
        g = torch.randn_like(y)
        grads = torch.autograd.grad(y, (x, w, b), g)
        grads_ref = torch.autograd.grad(y_ref, (x, w, b), g)
        torch.testing.assert_close(grads, grads_ref)
        y2, mean, var = sync_normalize_with_batch_stats(x, w, b, 1e-5, dist.group.WORLD)
        torch.testing.assert_close(y2, y_ref)
        torch.testing.assert_close(mean, x.detach().mean((0, 2)))
        torch.testing.assert_close(var, x.detach().transpose(0, 1).flatten(1).var(1))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("weight", [True, False])
def test_sync_function_without_group_sums_locally(weight):
    # Without an initialized process group the reductions are no-ops: plain BN.
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    w = torch.rand(2, dtype=torch.float64, requires_grad=True) if weight else None
    y, _, _ = sync_normalize_with_batch_stats(x, w, None, 1e-5, None)
    y_ref = nn.functional.batch_norm(x, None, None, w, None, True, 0.1, 1e-5)
    torch.testing.assert_close(y, y_ref)
    g = torch.randn_like(y)
    torch.testing.assert_close(torch.autograd.grad(y, x, g), torch.autograd.grad(y_ref, x, g))
