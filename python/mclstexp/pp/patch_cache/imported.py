"""Patches cut by another tool, stored in the patch cache's format (instead of re-tiling).

A source that already holds one patch per spot (HEST's ``patches/<id>.h5``, for one) is copied
into a group of the same layout :func:`~mclstexp.pp.patch_cache.tile_slide` writes, so every
reader, the resume bookkeeping and the frozen-feature cache beside it
(:mod:`mclstexp.models.features`) work unchanged. The group's attributes name the source file
(``source_path``, its size and checksum in ``slide_size`` / ``slide_checksum``) and its format
(``source_format``); ``level`` and ``stain_normalization`` are ``None``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mclstexp.pp.patch_cache.layout import FORMAT, FORMAT_VERSION, PatchCache, slide_checksum
from mclstexp.pp.patch_cache.write import (
    _check_spots,
    _coords_digest,
    _fill,
    _open_group,
    _sanitize_key,
    _version,
)

__all__ = ["store_patches"]


def store_patches(
    source: str | Path,
    read: Callable[[np.ndarray], np.ndarray],
    centers: np.ndarray,
    spot_ids: Sequence[str],
    *,
    store: str | Path,
    key: str,
    size: int,
    source_format: str,
    mpp: float | None = None,
    slide_mpp: float | None = None,
    chunk_patches: int = 32,
    overwrite: bool = False,
    progress: bool | Callable[[int], None] = False,
) -> PatchCache:
    """Copy ready-made patches into the patch cache ``store`` under ``key``.

    Parameters
    ----------
    source
        The file the patches come from (recorded with its checksum: a changed file is a
        :class:`~mclstexp.exceptions.CacheMismatchError` unless ``overwrite``).
    read
        ``read(rows)`` returns the patches of the increasing row indices ``rows``, uint8
        ``[len(rows), size, size, 3]``.
    centers, spot_ids
        Level-0 pixel centre ``(x, y)`` and spot id of every row.
    size, mpp, slide_mpp
        Patch side in pixels, µm/px of the patches and of the slide they were cut from.
    source_format
        What the source is (e.g. ``"hest-patches-h5"``), recorded in the attributes.

    Examples
    --------
    >>> import tempfile
    >>> x = np.zeros((3, 8, 8, 3), np.uint8)
    >>> src = Path(tempfile.mkdtemp()) / "src.bin"
    >>> _ = src.write_bytes(b"patches")
    >>> cache = store_patches(src, lambda rows: x[rows], np.zeros((3, 2)), ["a", "b", "c"],
    ...                       store=src.parent / "p.zarr", key="s", size=8, source_format="demo")
    >>> len(cache), cache.complete
    (3, True)
    """
    source = Path(source)
    centers, ids = _check_spots(centers, spot_ids)
    if int(size) < 1 or int(chunk_patches) < 1:
        raise ValueError("size and chunk_patches must be >= 1")
    key = _sanitize_key(key)
    attrs: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "source_path": str(source.resolve()),
        "source_format": source_format,
        "slide_size": source.stat().st_size,
        "slide_checksum": slide_checksum(source),
        "slide_mpp": slide_mpp,
        "mpp": mpp,
        "patch_size": int(size),
        "level": None,
        "stain_normalization": None,
        "n_patches": len(centers),
        "chunk_patches": int(chunk_patches),
        "spots_sha256": _coords_digest(centers, ids),
        "package_version": _version(),
    }
    group = _open_group(Path(store), key, attrs, centers, ids, overwrite=overwrite)
    if not group.attrs.get("complete", False):

        def copy(idx: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            patches = np.asarray(read(idx), dtype=np.uint8)
            if patches.shape != (len(idx), size, size, 3):
                raise ValueError(
                    f"{source}: read() gave patches of shape {patches.shape}, expected "
                    f"{(len(idx), size, size, 3)}"
                )
            out[: len(idx)] = patches
            return out[: len(idx)], np.ones(len(idx), dtype=bool)

        _fill(group, copy, 4, progress, key)
        group.attrs["complete"] = True
    return PatchCache(group, key)
