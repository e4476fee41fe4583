"""DistributedDataParallel helpers: process-group set-up under torchrun, all-gather with gradient.

Under ``torchrun --nproc_per_node N -m mclstexp train ...`` every process reads ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` from the environment; :func:`init_from_env` starts the process
group (NCCL on CUDA, gloo on CPU). The contrastive loss gathers image and spot embeddings from
every rank with :func:`all_gather_with_grad` (as CLIP implementations do), so each rank's loss
uses the negatives of the whole global batch and gradients flow back to the rank that produced
each embedding.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "all_gather_with_grad",
    "barrier",
    "cleanup",
    "init_from_env",
    "is_distributed",
]


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


def is_distributed() -> bool:
    """True when a process group is initialised with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


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


class _GatherWithGrad(torch.autograd.Function):
    """all_gather forward; backward sums the incoming gradients over ranks and keeps this rank's
    slice (all_reduce, which gloo and NCCL both support, unlike reduce_scatter on gloo)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        rank = dist.get_rank()
        ctx.sizes = sizes
        ctx.rank = rank
        max_n = max(sizes)
        padded = x.new_zeros((max_n, *x.shape[1:]))
        padded[: x.shape[0]] = x
        out = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(out, padded.contiguous())
        return torch.cat([o[:n] for o, n in zip(out, sizes, strict=True)], dim=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (``(n_r, ...)``, sizes may differ) from every rank in rank order.

    The result keeps the autograd graph to this rank's slice; since every rank computes the same
    global loss from the gathered tensors, backward sums the gradient over ranks (all_reduce) and
    DDP's gradient averaging then yields exactly the single-process gradient of the global loss.

    Examples
    --------
    >>> all_gather_with_grad(torch.ones(2, 3)).shape  # not distributed: unchanged
    torch.Size([2, 3])
    """
    if not is_distributed():
        return x
    n = torch.tensor([x.shape[0]], device=x.device)
    all_n = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(all_n, n)
    sizes = [int(t.item()) for t in all_n]
    return _GatherWithGrad.apply(x, sizes)
