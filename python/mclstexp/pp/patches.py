"""Patch extraction: a patch under every spot of an AnnData, into the patch cache.

The cache format and its writer are :mod:`mclstexp.pp.patch_cache`; tissue detection and grid
centres (for tiling a slide without spots) are :mod:`mclstexp.pp.tissue`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mclstexp import _keys
from mclstexp.pp.patch_cache import PatchCache, tile_slide

__all__ = ["extract_patches"]


def extract_patches(
    adata: Any,
    *,
    store: str | Path,
    size: int = 224,
    mpp: float | None = None,
    level: int = 0,
    stain_normalizer: Any = None,
    n_threads: int | None = None,
    key: str | None = None,
    slide_path: str | Path | None = None,
    chunk_patches: int = 32,
    overwrite: bool = False,
    backend: str = "auto",
    progress: bool = True,
) -> PatchCache:
    """Cut a patch under every spot of ``adata`` into a Zarr v3 patch cache.

    Spots come from ``adata.obsm["spatial"]`` (level-0 pixel centres, x then y) and
    ``adata.obs_names``; the slide from ``adata.uns["mclstexp"]["slide_path"]`` (its ``mpp`` is
    used when the slide file declares none).

    Parameters
    ----------
    adata
        AnnData following the mclstexp contract.
    store
        Zarr store directory; the slide's group is ``key`` inside it.
    size
        Patch side in pixels.
    mpp
        Target microns per pixel; ``None`` (default, the method's choice) cuts ``level`` as is.
    level
        Level read when ``mpp`` is ``None``.
    stain_normalizer
        Optional fitted normaliser with ``transform(patches) -> patches`` and ``to_dict()``
        (e.g. :class:`mclstexp.pp.StainNormalizer`); its parameters are recorded.
    n_threads
        Threads for reading and decoding, >= 1 (default: ``MCLSTEXP_NUM_THREADS`` or all CPUs).
    key
        Group name (default: ``uns["mclstexp"]["section"]``, else the slide file's stem).
    slide_path
        Overrides ``uns["mclstexp"]["slide_path"]``.
    chunk_patches
        Patches per Zarr chunk (also the unit of resumption).
    overwrite
        Replace a cache made with other parameters, or anything else at ``store/key`` that the
        tiler did not create, instead of raising.
    backend
        Slide backend (see :func:`mclstexp.io.open_slide`).
    progress
        Show a progress bar.

    Returns
    -------
    PatchCache
        The complete cache (reused untouched when it already was complete).

    Raises
    ------
    mclstexp.exceptions.CacheMismatchError
        A cache made with other parameters exists and ``overwrite`` is False.
    FileExistsError
        Something the tiler did not create (another group, a folder) is at ``store/key`` and
        ``overwrite`` is False; it is left untouched.

    Examples
    --------
    >>> import mclstexp as mx  # doctest: +SKIP
    >>> cache = mx.pp.extract_patches(adata, store="patches.zarr")  # doctest: +SKIP
    >>> cache.patches.shape  # doctest: +SKIP
    (len(adata), 224, 224, 3)
    """
    uns = dict(adata.uns.get(_keys.UNS, {}) or {})
    path = slide_path if slide_path is not None else uns.get(_keys.UNS_SLIDE_PATH)
    if path is None:
        source = uns.get(_keys.UNS_SOURCE)  # the file(s) a reader took the section from
        if isinstance(source, dict):
            source = ", ".join(map(str, source.values()))
        where = f"adata (read from {source})" if source else "adata"
        raise ValueError(
            f"{where}: no slide path; set adata.uns[{_keys.UNS!r}][{_keys.UNS_SLIDE_PATH!r}] or "
            "pass slide_path="
        )
    if _keys.SPATIAL not in adata.obsm:
        raise ValueError(f"adata: obsm[{_keys.SPATIAL!r}] (spot pixel centres) is missing")
    centers = np.asarray(adata.obsm[_keys.SPATIAL], dtype=np.float64)
    if key is None:
        key = _keys.section_id(adata, default="") or None
    mpp0 = uns.get(_keys.UNS_MPP)
    return tile_slide(
        path,
        centers,
        list(map(str, adata.obs_names)),
        store=store,
        key=key,
        size=size,
        mpp=mpp,
        level=level,
        slide_mpp=None if mpp0 is None else float(mpp0),
        stain_normalizer=stain_normalizer,
        n_threads=n_threads,
        chunk_patches=chunk_patches,
        overwrite=overwrite,
        backend=backend,
        progress=progress,
    )
