"""A backbone run in two parts: a frozen front and a trained back (partial fine-tuning).

A timm backbone's feature stages (its ``feature_info`` taps, e.g. ResNet's ``act1``, ``layer1``
... ``layer4``) are consecutive runs of its top-level modules (:func:`stage_segments`). With
``trained_stages = k`` the last ``k`` stages train and the earlier ones form the frozen *front*:
it runs in eval mode without gradients, and its output is rounded to float16, so that it can be
computed once per patch and view and kept in memory as it is (:class:`FrontOutput`; the
rounding is part of the model, so cached and recomputed fronts give the same bits). The *back*
runs the trained stages and pools: the backbone's own head pooling (``"global"``) or the mean of
every stage's map, frozen ones included (``"multiscale"``).

Supported: timm models whose feature taps are top-level modules in forward order (the ResNet
family, RegNets); others raise ``ValueError`` naming the model.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from mclstexp._memory import trim_heap

__all__ = [
    "FRONT_CACHE",
    "FrontCache",
    "FrontOutput",
    "StagedBackbone",
    "dihedral_view",
    "dihedral_views",
    "front_features",
    "front_outputs",
    "stage_segments",
]


class FrontOutput(NamedTuple):
    """What the frozen front hands the back: its last map (float16-rounded values, stored as
    ``storage`` dtype) and the spatial means of its stages' maps (multiscale pooling only,
    else ``(B, 0)``)."""

    activations: torch.Tensor  # (B, C, h, w)
    means: torch.Tensor  # (B, F_front)


def _timm_model(backbone: nn.Module) -> nn.Module:
    inner = getattr(backbone, "model", None)
    return inner if isinstance(inner, nn.Module) and hasattr(inner, "feature_info") else backbone


def stage_segments(backbone: nn.Module) -> list[list[nn.Module]]:
    """The backbone's top-level modules up to its last feature tap, cut after each tap.

    Examples
    --------
    >>> from mclstexp.models.image_encoder import build_backbone
    >>> [len(s) for s in stage_segments(build_backbone("test_resnet"))]
    [3, 2, 1, 1, 1]
    """
    model = _timm_model(backbone)
    info = getattr(model, "feature_info", None)
    taps = [f["module"] for f in info] if info else []
    children = dict(model.named_children())
    if not taps or any(t not in children for t in taps):
        raise ValueError(
            f"partial training needs a backbone whose feature stages are top-level modules "
            f"(the ResNet family); {type(model).__name__} has taps {taps}"
        )
    segments: list[list[nn.Module]] = []
    current: list[nn.Module] = []
    pending = list(taps)
    for name, module in children.items():
        current.append(module)
        if name == pending[0]:
            segments.append(current)
            current = []
            pending.pop(0)
            if not pending:
                break
    return segments


class StagedBackbone:
    """Front/back execution of an :class:`~mclstexp.models.ImageEncoder`'s backbone.

    Parameters
    ----------
    backbone
        The encoder's backbone (a timm model, or :class:`~mclstexp.models.image_encoder.
        MultiScalePool` around one).
    trained_stages
        How many of the last stages train (1 .. number of stages).
    multiscale
        Pool every stage's map (the backbone was built with ``pooling="multiscale"``).

    Examples
    --------
    >>> from mclstexp.models.image_encoder import build_backbone
    >>> bb = build_backbone("test_resnet", pooling="multiscale").eval()
    >>> staged = StagedBackbone(bb, 1, multiscale=True)
    >>> x = torch.rand(2, 3, 32, 32)
    >>> torch.allclose(staged.back(staged.front(x)), bb(x), atol=1e-2)
    True
    """

    def __init__(self, backbone: nn.Module, trained_stages: int, *, multiscale: bool) -> None:
        self.model = _timm_model(backbone)
        self.segments = stage_segments(backbone)
        n = len(self.segments)
        if not 1 <= trained_stages <= n:
            raise ValueError(
                f"trained_stages: must be in 1..{n} for this backbone, got {trained_stages}"
            )
        self.split = n - trained_stages
        self.multiscale = multiscale

    def front_modules(self) -> list[nn.Module]:
        """The frozen front's modules."""
        return [m for seg in self.segments[: self.split] for m in seg]

    @torch.no_grad()
    def front(self, x: torch.Tensor, *, storage: torch.dtype = torch.float32) -> FrontOutput:
        """Run the frozen front (no gradients; the caller keeps it in eval mode) on normalised
        images ``(B, 3, H, W)``; its map is rounded to float16 and returned as ``storage``."""
        means = []
        h = x
        for seg in self.segments[: self.split]:
            for module in seg:
                h = module(h)
            if self.multiscale:
                means.append(h.float().mean(dim=(2, 3)))
        pooled = torch.cat(means, 1) if means else x.new_zeros((x.shape[0], 0))
        return FrontOutput(h.to(torch.float16).to(storage), pooled)

    def back(self, front: FrontOutput) -> torch.Tensor:
        """Pooled features ``(B, F)`` from a front's output (gradients flow here)."""
        h = front.activations.float()
        means = [front.means.float()] if self.multiscale else []
        for seg in self.segments[self.split :]:
            for module in seg:
                h = module(h)
            if self.multiscale:
                means.append(h.float().mean(dim=(2, 3)))
        if self.multiscale:
            return torch.cat(means, 1)
        return self.model.forward_head(h, pre_logits=True)

    def __call__(self, x: torch.Tensor) -> Any:
        return self.back(self.front(x))


def front_outputs(
    encoder: Any,
    patches: Any,
    *,
    batch_size: int = 16,
    device: Any = "cpu",
) -> FrontOutput:
    """The frozen front's output for every patch in each of the encoder's views (8 rotations
    and flips with ``feature_views="dihedral"``, else 1), computed as inference computes it.

    Returns
    -------
    FrontOutput
        ``activations`` float16 ``(V, N, C, h, w)`` and ``means`` float32 ``(V, N, F_front)``,
        on the CPU; view ``v`` is :func:`dihedral_views`'s
        ``v``-th.

    Examples
    --------
    >>> from mclstexp.models.image_encoder import ImageEncoder
    >>> enc = ImageEncoder("test_resnet", embed_dim=4, trained_stages=1,
    ...                    feature_views="dihedral")
    >>> out = front_outputs(enc, np.zeros((3, 32, 32, 3), np.uint8))
    >>> tuple(out.activations.shape[:2]), out.activations.dtype
    ((8, 3), torch.float16)
    """
    from mclstexp.models.runtime import check_patches, resolve_device

    staged = getattr(encoder, "staged", None)
    if staged is None:
        raise ValueError("front_outputs needs an encoder built with trained_stages >= 1")
    check_patches(patches)
    dev = resolve_device(device)
    was_training = encoder.training
    encoder.eval().to(dev)
    acts, means = [], []
    try:
        with torch.no_grad():
            for s in range(0, patches.shape[0], batch_size):
                x = encoder.prepare(
                    torch.from_numpy(np.ascontiguousarray(patches[s : s + batch_size])).to(dev)
                )
                n_views = 8 if encoder.feature_views == "dihedral" else 1
                views = (dihedral_view(x, i) for i in range(n_views))  # one at a time
                outs = [staged.front(v, storage=torch.float16) for v in views]
                acts.append(torch.stack([o.activations for o in outs]).cpu())
                means.append(torch.stack([o.means for o in outs]).cpu())
    finally:
        encoder.train(was_training)
    return FrontOutput(torch.cat(acts, 1), torch.cat(means, 1))


def front_features(encoder: Any, fronts: FrontOutput, *, batch_size: int = 256) -> torch.Tensor:
    """Pooled backbone features ``(N, F)`` from front outputs ``(V, N, ...)``: the back in eval
    mode, averaged over the views exactly as :meth:`ImageEncoder.features` averages them.

    Examples
    --------
    >>> from mclstexp.models.image_encoder import ImageEncoder
    >>> enc = ImageEncoder("test_resnet", embed_dim=4, trained_stages=1).eval()
    >>> x = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    >>> f = front_features(enc, front_outputs(enc, x))
    >>> torch.allclose(f, enc.features(torch.from_numpy(x)), atol=1e-5)
    True
    """
    staged = encoder.staged
    dev = encoder.feature_shift.device
    was_training = encoder.training
    encoder.eval()
    n = fronts.activations.shape[1]
    out = []
    try:
        with torch.no_grad():
            for s in range(0, n, batch_size):
                views = [
                    staged.back(
                        FrontOutput(
                            fronts.activations[v, s : s + batch_size].to(dev),
                            fronts.means[v, s : s + batch_size].to(dev),
                        )
                    ).float()
                    for v in range(fronts.activations.shape[0])
                ]
                out.append(views[0] if len(views) == 1 else torch.stack(views).mean(0))
    finally:
        encoder.train(was_training)
    return torch.cat(out) if out else torch.zeros((0, encoder.num_features), device=dev)


class FrontCache:
    """Front outputs by content: a digest of the front's weights, the encoder settings that
    shape its input (normalisation, input size, views) and the patches
    (:func:`mclstexp.models.features.patches_identity`), kept in memory (least recently used
    first out beyond ``max_bytes``). A fold's training and inference, and every fold of a
    seed (same initial front), then compute each section's fronts once.

    Examples
    --------
    >>> from mclstexp.models.image_encoder import ImageEncoder
    >>> enc = ImageEncoder("test_resnet", embed_dim=4, trained_stages=1)
    >>> cache, x = FrontCache(), np.zeros((2, 32, 32, 3), np.uint8)
    >>> cache.get(enc, x) is cache.get(enc, x), cache.stats
    (True, {'hits': 1, 'computed': 1})
    """

    def __init__(self, max_bytes: int = 768 * 2**20) -> None:
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[str, FrontOutput] = OrderedDict()
        self.stats = {"hits": 0, "computed": 0}

    def clear(self) -> None:
        """Forget every front output."""
        self._items.clear()

    def key(self, encoder: Any, patches: Any) -> str:
        """The content key of ``encoder``'s front outputs of ``patches``."""
        from mclstexp.models.features import backbone_digest, patches_identity

        parts = {
            "front_sha256": backbone_digest(nn.Sequential(*encoder.front_modules())),
            "split": encoder.staged.split,
            "multiscale": encoder.staged.multiscale,
            "normalization": [encoder.mean.flatten().tolist(), encoder.std.flatten().tolist()],
            "input_size": encoder.input_size,
            "views": encoder.feature_views,
            "patches": patches_identity(patches),
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def get(self, encoder: Any, patches: Any, *, device: Any = "cpu") -> FrontOutput:
        """The front outputs of ``patches`` (:func:`front_outputs`), computed when not kept."""
        key = self.key(encoder, patches)
        if key in self._items:
            self._items.move_to_end(key)
            self.stats["hits"] += 1
            return self._items[key]
        out = front_outputs(encoder, patches, device=device)
        trim_heap()  # the front's temporaries: ~150 MB of RSS on her2st otherwise
        self.stats["computed"] += 1
        self._items[key] = out
        while len(self._items) > 1 and self._nbytes() > self.max_bytes:
            self._items.popitem(last=False)
        return out

    def _nbytes(self) -> int:
        return sum(
            o.activations.element_size() * o.activations.numel()
            + o.means.element_size() * o.means.numel()
            for o in self._items.values()
        )


#: The process's front cache (training and the fold runner share it).
FRONT_CACHE = FrontCache()


def dihedral_views(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 rotations and flips of ``(B, C, H, W)`` images, in a fixed order (view ``i`` is
    ``rot90(x, i)`` for ``i < 4``, ``rot90(flip(x), i - 4)`` after).

    Examples
    --------
    >>> len(dihedral_views(torch.zeros(1, 3, 4, 4)))
    8
    """
    return [dihedral_view(x, i) for i in range(8)]


def dihedral_view(x: torch.Tensor, i: int) -> torch.Tensor:
    """View ``i`` (0-7) of :func:`dihedral_views`, alone.

    Examples
    --------
    >>> x = torch.arange(4.0).view(1, 1, 2, 2)
    >>> bool(torch.equal(dihedral_view(x, 5), dihedral_views(x)[5]))
    True
    """
    if not 0 <= i < 8:
        raise ValueError(f"i must be in 0..7, got {i}")
    return torch.rot90(x if i < 4 else x.flip(3), i % 4, dims=(2, 3))
