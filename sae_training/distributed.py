"""Data-parallel helpers over ``torch.distributed`` (gloo on CPU, nccl on GPU), launched by ``torchrun``.

Every rank holds the same ensemble; gradients are averaged across ranks after each backward (what
DDP does), so N ranks on N slices of a global batch take the same step as one process on all of it
(tested with 2 gloo ranks in ``tests/sae_training/test_distributed.py``). Not ``DistributedDataParallel``:
its reducer is armed in ``forward`` while the trainer calls ``sae.loss`` and adds the MFR penalty on
``W_dec`` outside it; one flat all-reduce after backward is the single-bucket equivalent (no overlap).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor


def init_from_env(device: str = "cpu") -> tuple[int, int]:
    """Join the process group ``torchrun`` describes (WORLD_SIZE > 1); return ``(rank, world_size)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return dist.get_rank(), dist.get_world_size()


def world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def average_gradients(parameters) -> None:
    """All-reduce and average every gradient (one flat buffer, one collective)."""
    _, size = world()
    if size == 1:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= size
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def all_reduce_(tensor: Tensor, op: str = "sum") -> Tensor:
    if world()[1] > 1:
        dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
    return tensor


def broadcast_(tensor: Tensor) -> Tensor:
    """Rank 0's value everywhere (data statistics estimated once)."""
    if world()[1] > 1:
        dist.broadcast(tensor, src=0)
    return tensor


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()
