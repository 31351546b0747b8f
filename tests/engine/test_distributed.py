"""Two gloo processes with synchronized norms equal one process with the doubled batch."""

from __future__ import annotations

import socket
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from mpbn.engine.distributed import cleanup_distributed
from mpbn.layers import LIF, SeqBatchNorm
from mpbn.layers.sync import convert_sync_norms

T, BATCH = 3, 8  # BATCH is the global batch; each of the two ranks holds half of it


class TinyNet(nn.Module):
    """conv -> SeqBatchNorm -> LIF with channel-wise MPBN -> mean -> linear, over [T, B, ...]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.norm = SeqBatchNorm(4)
        self.neuron = LIF(membrane_norm="channel", num_features=4)
        self.head = nn.Linear(4, 3)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        t, b = x_seq.shape[:2]
        y = self.conv(x_seq.flatten(0, 1)).view(t, b, 4, *x_seq.shape[-2:])
        y = self.neuron(self.norm(y))
        # The conv output also feeds the head directly so gradients do not hinge on spikes only.
        features = y.mean((0, 3, 4)) + self.norm(y).mean((0, 3, 4))
        return self.head(features)


def _data(zoo: bool = False) -> tuple[torch.Tensor, torch.Tensor, nn.Module]:
    """Input, targets and model: :class:`TinyNet` on ``[T, B, ...]``, or (``zoo``) a zoo ResNet
    with channel-wise MPBN on static ``[B, ...]`` images encoded over ``T`` inside."""
    torch.manual_seed(0)
    if zoo:
        from tiny_models import tiny_model

        model = tiny_model("resnet20_narrow", T, mpbn="channel").double().train()
        x = torch.rand(BATCH, *model.input_shape, dtype=torch.float64) * 2
        return x, torch.randint(0, 5, (BATCH,)), model
    model = TinyNet().double()
    x = torch.randn(T, BATCH, 2, 5, 5, dtype=torch.float64) * 2
    return x, torch.randint(0, 3, (BATCH,)), model


def _step(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    out = model(x)
    nn.functional.cross_entropy(out, target).backward()
    return out


def _worker(rank: int, port: int, path: str, zoo: bool) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    try:
        x, target, model = _data(zoo)
        if zoo:
            model.set_grad_checkpointing(every=2)  # the replay in backward all-reduces again
        # The synchronized tree shares model's parameters and buffers: read them from model.
        ddp = nn.parallel.DistributedDataParallel(convert_sync_norms(model))
        half = BATCH // 2
        part = slice(rank * half, (rank + 1) * half)
        out = _step(ddp, x[part] if zoo else x[:, part], target[part])
        torch.save({
            "out": out.detach(),
            "grads": {n: p.grad.detach().clone() for n, p in model.named_parameters()},
            "buffers": {n: b.clone() for n, b in model.named_buffers()},
        }, f"{path}/rank{rank}.pt")
    finally:
        cleanup_distributed(synchronize=not sys.exc_info()[0])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("zoo", [False, True], ids=["tiny-net", "zoo-resnet-checkpointed"])
def test_two_processes_equal_one_with_doubled_batch(tmp_path, zoo):
    """Outputs, gradients and running statistics of two ranks equal one plain process. The zoo
    case adds activation checkpointing: the replayed forward's collectives must match across
    ranks, and the replay must not update running statistics a second time."""
    mp.spawn(_worker, args=(_free_port(), str(tmp_path), zoo), nprocs=2, join=True)
    x, target, model = _data(zoo)
    out = _step(model, x, target)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    torch.testing.assert_close(torch.cat([r["out"] for r in ranks]), out.detach())
    for name, p in model.named_parameters():
        for r in ranks:
            torch.testing.assert_close(r["grads"][name], p.grad, msg=f"gradient of {name}")
    for name, b in model.named_buffers():
        for r in ranks:
            torch.testing.assert_close(r["buffers"][name], b, msg=f"buffer {name}")
