"""Contrastive losses (method.md §3): mclSTExp's symmetric InfoNCE and BLEEP's soft targets,
and the all-gather with gradient they use under DistributedDataParallel.

Both losses take embeddings that may already be gathered from all ranks (see
:func:`all_gather_with_grad`); with ``gather=True`` they gather themselves when a process group
is initialised, so negatives come from every GPU (as open_clip keeps ``gather_features`` in its
loss module). Process-group set-up lives in :mod:`mclstexp.train.distributed`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

__all__ = ["all_gather_with_grad", "clip_loss", "is_distributed", "soft_target_loss"]


def is_distributed() -> bool:
    """True when a process group is initialised with more than one process.

    Examples
    --------
    >>> is_distributed()
    False
    """
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


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


def all_gather_with_grad(x: torch.Tensor, *, always: bool = False) -> torch.Tensor:
    """Concatenate ``x`` (``(n_r, ...)``, sizes may differ) from every rank in rank order.

    The result keeps the autograd graph to this rank's slice; since every rank computes the same
    global loss from the gathered tensors, backward sums the gradient over ranks (all_reduce) and
    DDP's gradient averaging then yields exactly the single-process gradient of the global loss.
    Without a process group of several ranks ``x`` is returned as it is, unless ``always`` asks
    for the collective path whenever a group is initialised (a group of one process: the check
    that NCCL's gather returns the local tensor, ``mclstexp bench gpu``).

    Examples
    --------
    >>> all_gather_with_grad(torch.ones(2, 3)).shape  # not distributed: unchanged
    torch.Size([2, 3])
    """
    grouped = dist.is_available() and dist.is_initialized()
    if not (is_distributed() or (always and grouped)):
        return x
    n = torch.tensor([x.shape[0]], device=x.device)
    all_n = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(all_n, n)
    sizes = [int(t.item()) for t in all_n]
    return _GatherWithGrad.apply(x, sizes)


def _maybe_gather(
    image: torch.Tensor, spot: torch.Tensor, gather: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    if not gather or not is_distributed():
        return image, spot
    return all_gather_with_grad(image), all_gather_with_grad(spot)


def _check(image: torch.Tensor, spot: torch.Tensor) -> None:
    if image.dim() != 2 or image.shape != spot.shape:
        raise ValueError(
            f"image and spot embeddings must both be (N, D), got {tuple(image.shape)} and "
            f"{tuple(spot.shape)}"
        )


def clip_loss(
    image_embeddings: torch.Tensor,
    spot_embeddings: torch.Tensor,
    logit_scale: float | torch.Tensor = 1.0,
    *,
    lam: float = 0.5,
    gather: bool = False,
) -> torch.Tensor:
    r"""mclSTExp's loss: symmetric InfoNCE with identity targets.

    With spot embeddings :math:`b` and image embeddings :math:`a` (rows; not L2-normalised) and
    :math:`s = 1/\tau`:

    .. math::

        S = s\, b a^\top, \qquad
        L = \lambda\, \mathrm{CE}(S, I) + (1 - \lambda)\, \mathrm{CE}(S^\top, I)

    where :math:`\mathrm{CE}(S, I) = -\frac{1}{N}\sum_i \log \mathrm{softmax}(S_{i\cdot})_i`
    (spot -> image) and the transposed term is image -> spot. :math:`\lambda = 0.5` gives
    mclSTExp's :math:`(\mathrm{CE}(S, I) + \mathrm{CE}(S^\top, I)) / 2`.

    Parameters
    ----------
    image_embeddings, spot_embeddings
        ``(N, D)``, row i of both is the same spot.
    logit_scale
        :math:`1/\tau` (1 in mclSTExp).
    lam
        :math:`\lambda`, weight of the spot -> image term.
    gather
        All-gather both from every rank first (with gradient) when running distributed.

    Examples
    --------
    >>> a = torch.eye(2); b = torch.eye(2)
    >>> round(float(clip_loss(a, b)), 4)  # -log(e / (e + 1))
    0.3133
    """
    image, spot = _maybe_gather(image_embeddings, spot_embeddings, gather)
    _check(image, spot)
    logits = logit_scale * (spot.float() @ image.float().T)  # (N, N) S[i, j] = b_i . a_j
    target = torch.arange(logits.shape[0], device=logits.device)
    spot_to_image = F.cross_entropy(logits, target)
    image_to_spot = F.cross_entropy(logits.T, target)
    return lam * spot_to_image + (1.0 - lam) * image_to_spot


def soft_target_loss(
    image_embeddings: torch.Tensor,
    spot_embeddings: torch.Tensor,
    logit_scale: float | torch.Tensor = 1.0,
    *,
    lam: float = 0.5,
    gather: bool = False,
) -> torch.Tensor:
    r"""BLEEP's variant: soft targets from within-modality similarities.

    .. math::

        S = s\, b a^\top, \qquad
        T = \mathrm{softmax}_\text{row}\!\big(s\,(a a^\top + b b^\top) / 2\big),

        L = \frac{1}{N}\sum_i \Big[\lambda \big(-\textstyle\sum_j T_{ij} \log
            \mathrm{softmax}(S_{i\cdot})_j\big)
            + (1-\lambda)\big(-\textstyle\sum_j T^\top_{ij}
            \log \mathrm{softmax}(S^\top_{i\cdot})_j\big)\Big]

    (:math:`s = 1/\tau`.) As in BLEEP's code, :math:`T` is not detached: gradients also flow
    through the targets. As within-modality similarities become diagonal-dominant, T tends to I
    and this tends to :func:`clip_loss`.

    Examples
    --------
    >>> a = torch.eye(2); b = torch.eye(2)
    >>> float(soft_target_loss(a, b)) > 0
    True
    """
    image, spot = _maybe_gather(image_embeddings, spot_embeddings, gather)
    _check(image, spot)
    image, spot = image.float(), spot.float()
    logits = logit_scale * (spot @ image.T)  # (N, N)
    sim = (image @ image.T + spot @ spot.T) / 2.0  # (N, N)
    targets = F.softmax(logit_scale * sim, dim=-1)  # (N, N), not detached (as in BLEEP)
    spot_loss = -(targets * F.log_softmax(logits, dim=-1)).sum(1)  # (N,)
    image_loss = -(targets.T * F.log_softmax(logits.T, dim=-1)).sum(1)  # (N,)
    return (lam * spot_loss + (1.0 - lam) * image_loss).mean()
