"""DistributedDataParallel plumbing: ``torchrun`` sets the environment, we read it."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device: torch.device) -> Dist:
    """Join the process group when launched by torchrun (gloo on CPU, NCCL on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def all_mean(value: torch.Tensor, info: Dist) -> torch.Tensor:
    """Average a tensor over ranks (a no-op in a single process)."""
    if info.enabled:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= info.world
    return value


def broadcast_floats(values: list[float], info: Dist) -> list[float]:
    """Rank 0's values on every rank (keeps time-based decisions in step)."""
    if not info.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.broadcast(t, src=0)
    return t.tolist()


def ranks_in_sync(model: torch.nn.Module, info: Dist) -> bool:
    """True when every rank holds exactly rank 0's weights (DDP's promise, checked)."""
    worst = torch.zeros(())
    for p in model.parameters():
        ref = p.detach().clone()
        dist.broadcast(ref, src=0)
        worst = torch.maximum(worst, (p.detach() - ref).abs().max().cpu())
    dist.all_reduce(worst, op=dist.ReduceOp.MAX)
    return worst.item() == 0.0


def barrier(info: Dist) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: Dist) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
