"""Embeddings from a trained model: image patches and spots (eval mode, no augmentation).

Spots are embedded in the same attention sequences as in training (see
:mod:`mclstexp.train.data`): neighbourhood groups in ``"neighbourhood"`` mode, runs of
``inference_sequence_length`` consecutive spots in ``"batch"`` (legacy) mode.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

__all__ = ["backbone_features", "embed_patches", "embed_spots", "resolve_device"]


def resolve_device(device: Any = "auto") -> Any:
    """``"auto"`` -> CUDA when available, else CPU; anything else -> ``torch.device(device)``."""
    import torch

    if isinstance(device, torch.device):
        return device
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available; use device='cpu'")
    return dev


def _autocast(device: Any, amp: str = "auto") -> Any:
    import torch

    if device.type != "cuda" or amp == "none":
        return contextlib.nullcontext()
    if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast("cuda", dtype=torch.bfloat16)


def _check_patches(patches: Any) -> None:
    shape = tuple(getattr(patches, "shape", ()))
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"patches must be [N, H, W, 3] uint8, got shape {shape}")
    if np.dtype(getattr(patches, "dtype", np.uint8)) != np.uint8:
        raise ValueError(f"patches must be uint8, got {patches.dtype}")


def backbone_features(
    model: Any, patches: Any, *, batch_size: int = 128, device: Any = "auto", progress: bool = False
) -> np.ndarray:
    """Pooled backbone features ``[N, F]`` float32 of every patch (eval mode, no augmentation).

    This is what frozen-encoder mode caches once per patch.
    """
    import torch

    _check_patches(patches)
    dev = resolve_device(device)
    enc = model.image_encoder
    was_training = enc.training
    enc.eval().to(dev)
    n = patches.shape[0]
    out = np.empty((n, enc.num_features), dtype=np.float32)
    steps = range(0, n, batch_size)
    if progress:
        from mclstexp._progress import progress_bar

        steps = progress_bar(steps, desc="backbone features", unit="batch")
    with torch.no_grad(), _autocast(dev):
        for s in steps:
            x = torch.from_numpy(np.ascontiguousarray(patches[s : s + batch_size])).to(dev)
            out[s : s + x.shape[0]] = enc.features(x).float().cpu().numpy()
    enc.train(was_training)
    return out


def embed_patches(
    model: Any,
    patches: Any,
    *,
    batch_size: int = 128,
    device: Any = "auto",
    frozen_features: Any = None,
) -> np.ndarray:
    """Image embeddings ``[N, D]`` (float32) of patches.

    Parameters
    ----------
    model
        A :class:`~mclstexp.models.MclSTExp`.
    patches
        ``[N, H, W, 3]`` uint8 array-like (numpy or zarr; read in contiguous slices).
    batch_size
        Patches per forward pass.
    device
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ...
    frozen_features
        Precomputed backbone features ``[N, F]`` (frozen-encoder mode): only the projection head
        runs and ``patches`` may be None.

    Examples
    --------
    >>> emb = embed_patches(model, cache.patches)  # doctest: +SKIP
    """
    import torch

    dev = resolve_device(device)
    was_training = model.training
    model.eval().to(dev)
    try:
        with torch.no_grad(), _autocast(dev):
            if frozen_features is not None:
                feats = np.asarray(frozen_features, dtype=np.float32)
                chunks = [
                    model.encode_images(torch.from_numpy(feats[s : s + 4096]).to(dev))
                    .float()
                    .cpu()
                    .numpy()
                    for s in range(0, len(feats), 4096)
                ]
                return np.concatenate(chunks) if chunks else np.empty((0, model.config.embed_dim))
            _check_patches(patches)
            n = patches.shape[0]
            out = np.empty((n, model.config.embed_dim), dtype=np.float32)
            for s in range(0, n, batch_size):
                x = torch.from_numpy(np.ascontiguousarray(patches[s : s + batch_size])).to(dev)
                out[s : s + x.shape[0]] = model.encode_images(x).float().cpu().numpy()
            return out
    finally:
        model.train(was_training)


def embed_spots(
    model: Any,
    adata_or_section: Any,
    *,
    device: Any = "auto",
    sequences_per_batch: int = 64,
) -> np.ndarray:
    """Spot embeddings ``[n_obs, D]`` (float32) in obs order.

    Parameters
    ----------
    model
        A :class:`~mclstexp.models.MclSTExp`.
    adata_or_section
        AnnData (``X`` normalised expression of the model's genes, ``obs["array_row"/
        "array_col"]``) or a :class:`~mclstexp.train.TrainingSection`.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ...
    sequences_per_batch
        Attention sequences per forward pass (does not change the result).

    Examples
    --------
    >>> keys = embed_spots(model, train_adata)  # doctest: +SKIP
    """
    import torch

    from mclstexp.train.data import TrainingSection, batch_sequences, inference_sequences

    if isinstance(adata_or_section, TrainingSection):
        expression, positions = adata_or_section.expression, adata_or_section.positions
    else:
        dummy = _NoPatches(adata_or_section.n_obs)
        sec = TrainingSection(adata_or_section, dummy, in_memory=False)
        expression, positions = sec.expression, sec.positions
    cfg = model.config
    if expression.shape[1] != cfg.n_genes:
        raise ValueError(
            f"the data have {expression.shape[1]} genes but the model was trained on "
            f"{cfg.n_genes}; subset/normalise to the model's gene list (model.genes)"
        )
    rows, cols = model.spot_encoder.pos_y.shape[0], model.spot_encoder.pos_x.shape[0]
    outside = int(((positions[:, 0] >= rows) | (positions[:, 1] >= cols)).sum())
    if outside:
        import warnings

        warnings.warn(
            f"{outside} spots have array coordinates beyond the position tables ({rows} rows x "
            f"{cols} columns); they are clamped to the last row/column",
            stacklevel=2,
        )
    length = (
        cfg.sequence_length if cfg.sequence == "neighbourhood" else cfg.inference_sequence_length
    )
    seqs = inference_sequences(positions, cfg.sequence, length)
    dev = resolve_device(device)
    was_training = model.training
    model.eval().to(dev)
    out = np.empty((len(expression), cfg.embed_dim), dtype=np.float32)
    try:
        with torch.no_grad(), _autocast(dev):
            for s in range(0, len(seqs), sequences_per_batch):
                part = seqs[s : s + sequences_per_batch]
                expr, pos, mask = batch_sequences(part, expression, positions)
                emb = model.encode_spots(
                    torch.from_numpy(expr).to(dev),
                    torch.from_numpy(pos).to(dev),
                    torch.from_numpy(mask).to(dev),
                )
                out[np.concatenate(part)] = emb.float().cpu().numpy()
    finally:
        model.train(was_training)
    return out


class _NoPatches:
    """Stands in for patches when only expression is needed."""

    dtype = np.dtype(np.uint8)

    def __init__(self, n: int) -> None:
        self.shape = (n, 1, 1, 3)
