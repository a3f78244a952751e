"""Multi-process training with ``torch.distributed`` (``torchrun --nproc_per_node N ucdir train ...``).

What stays identical on every process: the memory banks (every step writes the keys and ids
gathered from all processes), the clustering (computed once, on process 0, and broadcast), the
key encoder's BatchNorm buffers (broadcast from process 0 after every epoch) and so the evaluation
embeddings. Each process trains on its shard of the epoch's pairs; DistributedDataParallel averages
the query encoder's gradients. Only process 0 writes the run folder.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def init_from_env() -> tuple[int, int]:
    """Join the process group that torchrun describes in the environment; (rank, world size).

    Uses NCCL when CUDA is available, gloo otherwise. A no-op returning (0, 1) outside torchrun.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` from every process along dim 0 (equal shapes), in rank order."""
    if not active():
        return t
    parts = [torch.empty_like(t) for _ in range(world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def broadcast_object(obj: Any) -> Any:
    """Process 0's ``obj`` on every process."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Copy process 0's buffers (e.g. BatchNorm running statistics) to every process."""
    if not active():
        return
    for buf in module.buffers():
        dist.broadcast(buf.data, src=0)


def barrier() -> None:
    if active():
        dist.barrier()


def wrap_ddp(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``module`` wrapped in DistributedDataParallel when several processes train, else itself."""
    if world_size() <= 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
