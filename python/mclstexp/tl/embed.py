"""Embeddings from a trained model: image patches and spots (eval mode, no augmentation).

Spots are embedded in the same attention sequences as in training (see
:mod:`mclstexp.models.inputs`): neighbourhood groups in ``"neighbourhood"`` mode, runs of
``inference_sequence_length`` consecutive spots in ``"batch"`` (legacy) mode.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mclstexp.models.inputs import batch_sequences, inference_sequences, spot_arrays
from mclstexp.models.runtime import autocast, check_patches, resolve_device

__all__ = ["embed_patches", "embed_spots"]


def embed_patches(
    model: Any,
    patches: Any,
    *,
    batch_size: int = 128,
    device: Any = "auto",
    frozen_features: Any = None,
    fronts: Any = None,
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
    fronts
        Precomputed outputs of a partially trained backbone's frozen front
        (:func:`mclstexp.models.stages.front_outputs`, e.g. from
        :data:`~mclstexp.models.stages.FRONT_CACHE`): only the trained stages and the head run
        and ``patches`` may be None.

    Examples
    --------
    >>> emb = embed_patches(model, cache.patches)  # doctest: +SKIP
    """
    import torch

    dev = resolve_device(device)
    was_training = model.training
    model.eval().to(dev)
    try:
        with torch.no_grad(), autocast(dev):
            if fronts is not None:
                from mclstexp.models.stages import front_features

                feats = front_features(model.image_encoder, fronts)
                return model.image_encoder.project(feats).float().cpu().numpy()
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
            check_patches(patches)
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
        "array_col"]``, see :func:`mclstexp.models.inputs.spot_arrays`) or anything with
        ``expression`` and ``positions`` arrays (a :class:`~mclstexp.train.TrainingSection`).
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ...
    sequences_per_batch
        Attention sequences per forward pass (does not change the result).

    Examples
    --------
    >>> keys = embed_spots(model, train_adata)  # doctest: +SKIP
    """
    import torch

    if hasattr(adata_or_section, "expression") and hasattr(adata_or_section, "positions"):
        expression, positions = adata_or_section.expression, adata_or_section.positions
    else:
        expression, positions = spot_arrays(adata_or_section)
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
        with torch.no_grad(), autocast(dev):
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
