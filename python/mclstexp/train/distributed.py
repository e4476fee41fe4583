"""DistributedDataParallel process groups: set-up under torchrun, rank information, barrier.

Under ``torchrun --nproc_per_node N -m mclstexp train ...`` every process reads ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` from the environment; :func:`init_from_env` starts the process
group (NCCL on CUDA, gloo on CPU). The all-gather with gradient that the contrastive loss needs
lives beside the loss (:func:`mclstexp.models.loss.all_gather_with_grad`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from mclstexp.models.loss import is_distributed

__all__ = ["DistInfo", "barrier", "cleanup", "current", "init_from_env", "is_distributed"]


@dataclass(frozen=True)
class DistInfo:
    """Rank and world size of this process (``rank=0, world_size=1`` when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """True on rank 0 (which logs and writes checkpoints)."""
        return self.rank == 0


def current() -> DistInfo:
    """The :class:`DistInfo` of the current process group (or of a single process)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(
            dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
        )
    return DistInfo()


def init_from_env(device: str = "auto", backend: str | None = None) -> DistInfo:
    """Initialise the default process group when launched by torchrun (``WORLD_SIZE`` > 1).

    Parameters
    ----------
    device
        The training device (``"auto"``, ``"cuda"``, ``"cpu"``); picks NCCL for CUDA, gloo else.
    backend
        Force a backend.

    Returns
    -------
    DistInfo
        Rank information; a single process returns ``DistInfo()`` and starts nothing.
    """
    if dist.is_available() and dist.is_initialized():
        return current()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    if backend is None:
        backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistInfo(rank, world, local)


def barrier() -> None:
    """Synchronise all ranks (no-op when not distributed)."""
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    """Destroy the process group if one is initialised."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
