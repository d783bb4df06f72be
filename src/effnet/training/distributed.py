"""PyTorch's own distributed engine, as launched by ``torchrun``.

``torchrun --nproc_per_node N -m effnet train ...`` sets RANK, WORLD_SIZE and LOCAL_RANK;
effnet then runs DistributedDataParallel with NCCL on GPUs and gloo on CPUs. Multi-node runs
use torchrun's rendezvous (``--nnodes``, ``--rdzv-endpoint``) unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun prepared (no-op for a single process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return DistInfo(rank=dist.get_rank(), local_rank=int(os.environ.get("LOCAL_RANK", "0")), world_size=world)


def cleanup_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True if ``flag`` is true on any process (so every rank stops together)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t)
    return bool(t.item() > 0)


class GlooSyncBatchNorm(nn.BatchNorm2d):
    """Batch norm whose training statistics are computed over all processes, on CPU.

    PyTorch's SyncBatchNorm runs on GPUs only; this is the same computation for the gloo
    backend: global mean, then global variance, through differentiable all-reduces so the
    gradient also flows across processes.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dims = (0, 2, 3)
        count = torch.tensor([float(x.numel() // x.shape[1])], dtype=x.dtype)
        total = dist_fn.all_reduce(torch.cat([x.sum(dims), count]))
        n = total[-1]
        mean = total[:-1] / n
        centered = x - mean[None, :, None, None]
        var = dist_fn.all_reduce((centered * centered).sum(dims)) / n
        if self.track_running_stats:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1), alpha=m)
                self.num_batches_tracked.add_(1)
        out = centered * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return out


def convert_sync_batchnorm(model: nn.Module, device_type: str) -> nn.Module:
    """Swap every BatchNorm2d for a synchronised one: PyTorch's on GPU, :class:`GlooSyncBatchNorm` on CPU."""
    if device_type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            sync = GlooSyncBatchNorm(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            sync.load_state_dict(child.state_dict())
            setattr(model, name, sync)
        else:
            convert_sync_batchnorm(child, device_type)
    return model
