"""Process-group setup for ``torchrun --nproc_per_node=N -m facenet train ...``.

Each rank embeds its share of the global batch; the triplet loss gathers every rank's embeddings
(with gradients) and mines over the whole global batch (``facenet.losses.distributed``), so N
processes train on the same triplets as one process with the N-times larger batch.
Without ``torchrun`` (no ``WORLD_SIZE`` in the environment) everything is a single process.
"""

from __future__ import annotations

import gc
import importlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from facenet.config import ConfigError
from facenet.models.layers import BatchNormShift, SyncBatchNormShift
from facenet.utils import device_problem


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size``, its device, whether it logs."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` -> the local CUDA device if present, else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    problem = device_problem(name)
    if problem:
        raise ConfigError(f"device={name!r}: {problem}; use device=cpu or device=auto")
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


def setup(device: str = "auto") -> DistInfo:
    """Join the process group torchrun describes in the environment (gloo on CPU, NCCL on CUDA)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        # why: DDP imports torch.distributed.nn, whose functions take ``group.WORLD`` as a
        # default argument. Imported after the group exists, they keep it (and gloo's worker
        # threads) alive past cleanup() into interpreter shutdown, where a worker still releasing
        # a finished collective aborts the process ("terminate called without an active
        # exception"). Imported first, the defaults are None.
        importlib.import_module("torch.distributed.nn")
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, world_size, local_rank, dev)


def cleanup() -> None:
    """Leave the process group and end its worker threads (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        # why: a DDP wrapper sits in reference cycles that hold the group; whether the automatic
        # collector has freed them by now depends on allocation counts (in CI one rank of two
        # still had gloo's 3 threads here). Collect now, so the threads are joined while the
        # interpreter is whole (see setup()).
        gc.collect()


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_true(flag: bool, device: torch.device) -> bool:
    """Logical AND of ``flag`` over ranks (used to stop every rank together)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def convert_sync_batchnorm(module: nn.Module, process_group: object | None = None) -> nn.Module:
    """``nn.SyncBatchNorm.convert_sync_batchnorm`` that keeps shift-only BatchNorm trainable.

    :class:`~facenet.models.layers.BatchNormShift` becomes
    :class:`~facenet.models.layers.SyncBatchNormShift` (PyTorch's own conversion would leave its
    shift without a gradient under DDP); every other BatchNorm converts as PyTorch converts it.
    """
    if isinstance(module, BatchNormShift):
        return SyncBatchNormShift.from_shift(module, process_group)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return nn.SyncBatchNorm.convert_sync_batchnorm(module, process_group)
    for name, child in module.named_children():
        converted = convert_sync_batchnorm(child, process_group)
        if converted is not child:
            setattr(module, name, converted)
    return module
