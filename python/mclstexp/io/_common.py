"""Shared checks and the AnnData builder used by every reader (the package's AnnData contract)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from mclstexp import _keys as K
from mclstexp.exceptions import DataWarning, SlideFormatError

_TIFF_SUFFIXES = {".tif", ".tiff", ".svs", ".btf", ".ndpi", ".scn", ".qptiff"}


def warn_data(msg: str) -> None:
    """Emit a :class:`DataWarning` attributed to the reader's caller."""
    warnings.warn(msg, DataWarning, stacklevel=4)


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(width, height)`` of an image's full-resolution level, read from its header only.

    TIFF-like files are read with tifffile (first page), others with Pillow, whose decompression-
    bomb check is bypassed for this header read only (nothing is decoded).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: image not found; pass the path of the section's H&E image")
    if p.is_dir():
        raise IsADirectoryError(f"{p}: is a folder; pass the path of the H&E image file")
    if p.suffix.lower() in _TIFF_SUFFIXES:
        import tifffile

        try:
            with tifffile.TiffFile(p) as tif:
                shape = tif.pages[0].shape
                axes = tif.pages[0].axes
        except Exception as err:
            raise SlideFormatError(f"{p}: not a readable TIFF ({err})") from err
        h = shape[axes.index("Y")] if "Y" in axes else shape[0]
        w = shape[axes.index("X")] if "X" in axes else shape[1]
        return int(w), int(h)
    from PIL import Image

    old = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None
        with Image.open(p) as im:
            return int(im.size[0]), int(im.size[1])
    except OSError as err:
        raise SlideFormatError(f"{p}: not a readable image ({err})") from err
    finally:
        Image.MAX_IMAGE_PIXELS = old


def check_inside(
    xy: np.ndarray, size: tuple[int, int], image: Path, coords_file: str, ids: Sequence[str]
) -> None:
    """Raise ``ValueError`` when spot centres fall outside the image (nothing is dropped)."""
    w, h = size
    bad = ~((xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h))
    if bad.any():
        idx = np.flatnonzero(bad)
        examples = ", ".join(f"{ids[i]} ({xy[i, 0]:.1f}, {xy[i, 1]:.1f})" for i in idx[:3])
        raise ValueError(
            f"{coords_file}: {idx.size} of {len(ids)} spot centres lie outside the image "
            f"{image} ({w} x {h} px), e.g. {examples}; check that the coordinates are "
            "full-resolution pixels of this image (not a downscaled image) and that the right "
            "image was given"
        )


def check_unique(ids: Sequence[str], what: str, source: str, fix: str) -> None:
    """Raise ``ValueError`` naming duplicated ids."""
    index = pd.Index(ids)
    if not index.is_unique:
        dupes = index[index.duplicated()].unique().tolist()
        raise ValueError(f"{source}: {len(dupes)} duplicated {what} (e.g. {dupes[:5]}); {fix}")


def check_counts(x: np.ndarray | sp.spmatrix, source: str) -> None:
    """Counts must be finite and non-negative; non-integers are allowed with a warning."""
    data = np.asarray(x.data) if sp.issparse(x) else np.asarray(x)
    if data.size == 0:
        return
    if not np.all(np.isfinite(data)):
        raise ValueError(f"{source}: the counts contain NaN or infinite values; pass raw counts")
    lo = float(data.min())
    if lo < 0:
        raise ValueError(
            f"{source}: the counts contain negative values (min {lo:g}); pass raw, non-negative "
            "UMI counts (not log-transformed or scaled data)"
        )
    if not np.all(data == np.round(data)):
        warn_data(f"{source}: the counts are not all integers; they are used as they are")


def build_anndata(
    *,
    counts: np.ndarray | sp.spmatrix,
    spot_ids: Sequence[str],
    genes: Sequence[str],
    xy: np.ndarray,
    array_row: np.ndarray,
    array_col: np.ndarray,
    section: str,
    slide_path: str | None,
    mpp: float | None,
    library_size: np.ndarray | None = None,
    obs_extra: Mapping[str, Any] | None = None,
    uns_extra: Mapping[str, Any] | None = None,
    var: pd.DataFrame | None = None,
) -> AnnData:
    """Assemble an AnnData following the contract (raw counts CSR float32, spatial, uns)."""
    x = sp.csr_matrix(counts, dtype=np.float32)
    if library_size is None:
        library_size = np.asarray(x.sum(axis=1), dtype=np.float64).ravel()
    obs = pd.DataFrame(index=pd.Index([str(s) for s in spot_ids]))
    obs[K.ARRAY_ROW] = np.asarray(array_row, dtype=np.int64)
    obs[K.ARRAY_COL] = np.asarray(array_col, dtype=np.int64)
    obs[K.SECTION] = pd.Categorical([section] * len(obs))
    obs[K.LIBRARY_SIZE] = np.asarray(library_size, dtype=np.float64)
    for key, value in (obs_extra or {}).items():
        obs[key] = value
    if var is None:
        var = pd.DataFrame(index=pd.Index([str(g) for g in genes]))
    adata = AnnData(X=x, obs=obs, var=var)
    adata.obsm[K.SPATIAL] = np.ascontiguousarray(xy, dtype=np.float64)
    meta: dict[str, Any] = {
        K.UNS_SLIDE_PATH: slide_path,
        K.UNS_SECTION: section,
        K.UNS_MPP: None if mpp is None else float(mpp),
    }
    meta.update(uns_extra or {})
    adata.uns[K.UNS] = meta
    return adata


def pitch_mpp(array_xy: np.ndarray, pixel_xy: np.ndarray, pitch_um: float) -> float | None:
    """Microns per pixel estimated from the spot pitch (pixels per array step, least squares)."""
    slopes = []
    for axis in (0, 1):
        a = np.asarray(array_xy[:, axis], dtype=np.float64)
        p = np.asarray(pixel_xy[:, axis], dtype=np.float64)
        if np.unique(np.round(a)).size < 3:
            continue
        slope = np.polyfit(a, p, 1)[0]
        if np.isfinite(slope) and abs(slope) > 1e-6:
            slopes.append(abs(slope))
    if not slopes:
        return None
    return float(pitch_um / np.mean(slopes))
