"""Frozen-encoder features of patch caches, computed once: the engine of ``mclstexp embed``.

What users with many slides run once on a GPU node: every patch's features by a frozen encoder
(a registry name, ``hf-hub:ORG/NAME`` or timm name, configured as a preset configures it), in
batches (bf16 autocast on CUDA), written beside the patches in the patch cache
(``<group>/features/<key>``, see :mod:`mclstexp.models.features`) block by block, so a killed
run resumes where it stopped. A later ``mclstexp run`` / ``mclstexp train`` with the same preset
and encoder on the same device kind finds them there (the same key: weights, configuration,
precision and patches) and computes nothing.

Examples
--------
>>> results = embed_stores(["patches.zarr"], encoder="h-optimus-0")  # doctest: +SKIP
>>> results[0]["computed"]  # doctest: +SKIP
True
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["embed_cache", "embed_stores", "frozen_encoder"]


def frozen_encoder(
    encoder: str | None = None, *, preset: str = "fm", weights: str | None = None
) -> Any:
    """The :class:`~mclstexp.models.ImageEncoder` ``preset`` builds (with ``encoder`` as its
    backbone and ``weights`` when given), in eval mode; built once per process and arguments.

    Its features have the key training with that preset computes, so they are found and reused.

    Raises
    ------
    ValueError
        The configuration has no weights (``weights=None``): a randomly initialised encoder
        differs in every run, so its features would never be reused.

    Examples
    --------
    >>> enc = frozen_encoder("resnet18", preset="cpu")  # doctest: +SKIP
    """
    return _frozen_encoder(encoder, preset, weights)


@lru_cache(maxsize=2)
def _frozen_encoder(encoder: str | None, preset: str, weights: str | None) -> Any:
    from mclstexp.models import ImageEncoder, load_preset

    overrides: dict[str, Any] = {}
    if encoder is not None:
        overrides["model__backbone"] = encoder
    if weights is not None:
        overrides["model__weights"] = weights
    cfg = load_preset(preset, **overrides).model
    if cfg.weights is None:
        raise ValueError(
            f"encoder {cfg.backbone!r} of preset {preset!r} has no weights (random "
            "initialisation differs in every run, its features are never reused): pass "
            "weights='pretrained' or a weights file (--weights)"
        )
    return ImageEncoder.from_config(cfg).eval()


def embed_cache(
    cache: Any,
    encoder: Any,
    *,
    device: Any = "auto",
    batch_size: int = 128,
    progress: bool = True,
) -> dict[str, Any]:
    """Features of one patch cache (a :class:`~mclstexp.pp.PatchCache`) by ``encoder``,
    stored beside its patches; returns what was done.

    Returns
    -------
    dict
        ``key`` (the slide's group), ``n`` patches, ``dim``, ``feature_key`` (the digest the
        features are stored under), ``computed`` (False: found complete on disk), ``stored``
        (False: the patch cache is not writable, the features were not kept) and ``seconds``.
    """
    import zarr

    from mclstexp.models.features import FeatureCache, feature_key
    from mclstexp.pp.patch_cache import cache_group

    started = time.perf_counter()
    features = FeatureCache(max_items=1)
    (feats,) = features.features(
        encoder, [cache.patches], device=device, progress=progress, batch_size=batch_size
    )
    digest = feature_key(encoder, cache.patches, device=device).digest
    group = cache_group(cache.patches)
    copy = None if group is None else group.path / "features" / digest
    stored = copy is not None and (copy / "zarr.json").is_file()
    stored = stored and zarr.open_array(str(copy), mode="r").attrs.get("complete") is True
    return {
        "key": cache.key,
        "n": int(feats.shape[0]),
        "dim": int(feats.shape[1]),
        "feature_key": digest,
        "computed": features.stats["computed"] > 0,
        "stored": bool(stored),
        "seconds": time.perf_counter() - started,
    }


def embed_stores(
    stores: Sequence[str | Path],
    *,
    encoder: str | None = None,
    preset: str = "fm",
    weights: str | None = None,
    keys: Sequence[str] | None = None,
    device: Any = "auto",
    batch_size: int = 128,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """:func:`embed_cache` for every slide group of every patch-cache store (or ``keys``).

    Examples
    --------
    >>> embed_stores(["C2.zarr", "C3.zarr"], encoder="uni")  # doctest: +SKIP
    """
    from mclstexp.pp import cache_keys, open_patch_cache

    groups = {str(store): keys or cache_keys(store) for store in stores}  # before the encoder
    enc = frozen_encoder(encoder, preset=preset, weights=weights)
    results = []
    for store in stores:
        for key in groups[str(store)]:
            cache = open_patch_cache(store, key)
            result = embed_cache(
                cache, enc, device=device, batch_size=batch_size, progress=progress
            )
            results.append({"store": str(store), **result})
    return results
