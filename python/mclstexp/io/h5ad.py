"""Reader for AnnData files that already carry spot coordinates, including HEST-1k samples.

HEST-1k layout (one sample ``<id>``)::

    st/<id>.h5ad          counts + obsm["spatial"] (full-resolution pixels of the WSI)
    wsis/<id>.tif         pyramidal TIFF
    metadata/<id>.json    pixel_size_um_estimated / pixel_size_um_embedded, patient, ...

Given ``st/<id>.h5ad``, the slide and metadata are found next to it when present.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from mclstexp import _keys as K
from mclstexp.io._common import check_counts, check_inside, check_unique, image_size, warn_data

_HEST_MPP_KEYS = ("pixel_size_um_estimated", "pixel_size_um_embedded")
_SLIDE_SUFFIXES = (".tif", ".tiff", ".svs", ".btf")


def _tiff_mpp(path: Path) -> float | None:
    """Microns per pixel from a TIFF's resolution tags (centimetre or inch units), if any."""
    if path.suffix.lower() not in _SLIDE_SUFFIXES:
        return None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            tags = page.tags
            if "XResolution" not in tags or "ResolutionUnit" not in tags:
                return None
            num, den = tags["XResolution"].value
            unit = tags["ResolutionUnit"].value
    except Exception:
        return None
    if not num or not den:
        return None
    per_unit = num / den
    if unit == 3:  # centimetre
        return float(1e4 / per_unit)
    if unit == 2:  # inch
        mpp = 25400.0 / per_unit
        return float(mpp) if mpp < 50 else None  # 72/96 dpi defaults are not a scan resolution
    return None


def _hest_paths(path: Path) -> tuple[Path | None, Path | None]:
    if path.parent.name != "st":
        return None, None
    base = path.parent.parent
    sid = path.stem
    slide = None
    for suffix in _SLIDE_SUFFIXES:
        cand = base / "wsis" / f"{sid}{suffix}"
        if cand.is_file():
            slide = cand
            break
    meta = base / "metadata" / f"{sid}.json"
    return slide, meta if meta.is_file() else None


def _grid_index(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer (col, row) grid positions: centres in steps of the median neighbour distance."""
    if xy.shape[0] < 2:
        return np.zeros(xy.shape[0], dtype=np.int64), np.zeros(xy.shape[0], dtype=np.int64)
    from scipy.spatial import cKDTree

    dist, _ = cKDTree(xy).query(xy, k=2)
    nn = dist[:, 1]
    nn = nn[nn > 1e-6]
    step = float(np.median(nn)) if nn.size else 1.0
    col = np.rint((xy[:, 0] - xy[:, 0].min()) / step).astype(np.int64)
    row = np.rint((xy[:, 1] - xy[:, 1].min()) / step).astype(np.int64)
    return col, row


def read_h5ad(
    path: str | os.PathLike[str],
    *,
    slide: str | os.PathLike[str] | None = None,
    section: str | None = None,
    mpp: float | None = None,
) -> AnnData:
    """Read an ``.h5ad`` with ``obsm["spatial"]`` (e.g. a HEST-1k sample) into the package contract.

    Parameters
    ----------
    path
        The ``.h5ad`` file. In a HEST-1k folder (``st/<id>.h5ad``) the slide ``wsis/<id>.tif``
        and ``metadata/<id>.json`` are picked up automatically.
    slide
        The H&E image the coordinates refer to (overrides the HEST slide). Must exist; every
        spot centre must lie inside it.
    section
        Section id (default: ``uns["mclstexp"]["section"]`` if present, else the file stem).
    mpp
        Microns per pixel (default: HEST metadata ``pixel_size_um_estimated`` then
        ``pixel_size_um_embedded``, then ``uns["mclstexp"]["mpp"]``, then the slide's TIFF
        resolution tags).

    Returns
    -------
    AnnData
        Raw counts in ``X`` (CSR float32; ``layers["counts"]`` is used when present), the file's
        ``obs``/``var`` kept, ``obsm["spatial"]`` float64, ``obs["array_row"/"array_col"]``
        (taken from ``obs``; derived from the coordinates with a warning when absent),
        ``obs["section"]``, ``obs["library_size"]``, ``uns["mclstexp"]``.

    Examples
    --------
    >>> adata = read_h5ad("hest/st/TENX95.h5ad")  # doctest: +SKIP
    >>> adata.uns["mclstexp"]["slide_path"]  # doctest: +SKIP
    'hest/wsis/TENX95.tif'
    """
    p = Path(path).expanduser()
    src = read_anndata(p)
    xy = _spatial(src, p)
    check_unique(list(src.obs_names), "spot ids (obs_names)", str(p), "make them unique")
    check_unique(
        list(src.var_names), "gene names (var_names)", str(p), "call var_names_make_unique()"
    )
    counts = _raw_counts(src, p)

    hest_slide, hest_meta = _hest_paths(p)
    meta = _read_metadata(hest_meta)
    old = src.uns.get(K.UNS, {})
    old = dict(old) if isinstance(old, dict) else {}
    slide_path: Path | None
    if slide is not None:
        slide_path = Path(slide).expanduser()
    elif hest_slide is not None:
        slide_path = hest_slide
    elif old.get(K.UNS_SLIDE_PATH):
        slide_path = Path(str(old[K.UNS_SLIDE_PATH]))
    else:
        slide_path = None
    ids = list(map(str, src.obs_names))
    if slide_path is not None:
        check_inside(xy, image_size(slide_path), slide_path, f"{p} (obsm['spatial'])", ids)
    mpp, mpp_source = _resolve_mpp(mpp, meta, hest_meta, old, slide_path)
    if section is None:
        section = str(old.get(K.UNS_SECTION) or p.stem)

    obs = _obs(src, ids, xy, p)
    obs[K.SECTION] = pd.Categorical([section] * len(obs))
    if K.LIBRARY_SIZE not in obs:
        obs[K.LIBRARY_SIZE] = np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()
    patient = meta.get("patient") if isinstance(meta.get("patient"), str) else None
    patient = patient or old.get(K.UNS_PATIENT)
    if patient is not None and K.PATIENT not in obs:
        obs[K.PATIENT] = pd.Categorical([str(patient)] * len(obs))

    adata = AnnData(X=counts, obs=obs, var=src.var.copy())
    adata.obsm[K.SPATIAL] = np.ascontiguousarray(xy)
    for key, value in src.obsm.items():
        if key != K.SPATIAL:
            adata.obsm[key] = value
    spot_diameter = old.get(K.UNS_SPOT_DIAMETER_PX)
    if spot_diameter is None and isinstance(meta.get("spot_diameter"), int | float) and mpp:
        # HEST stores the spot diameter in microns
        spot_diameter = float(meta["spot_diameter"]) / mpp
    info: dict[str, Any] = {
        **old,
        K.UNS_SLIDE_PATH: None if slide_path is None else str(slide_path),
        K.UNS_SECTION: section,
        K.UNS_MPP: None if mpp is None else float(mpp),
        K.UNS_SPOT_DIAMETER_PX: spot_diameter,
        "mpp_source": mpp_source if mpp is not None else None,
        K.UNS_SOURCE: {"h5ad": str(p), **({"metadata": str(hest_meta)} if hest_meta else {})},
    }
    if patient is not None:
        info[K.UNS_PATIENT] = str(patient)
    if meta:
        info["hest_metadata"] = {
            k: v for k, v in meta.items() if isinstance(v, str | int | float | bool)
        }
    adata.uns[K.UNS] = info
    return adata


def read_anndata(path: str | os.PathLike[str]) -> AnnData:
    """Read any ``.h5ad`` file as it is (no contract applied), with errors that name the file.

    Parameters
    ----------
    path
        The file.

    Returns
    -------
    AnnData

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Not a readable ``.h5ad`` file (what h5py or anndata said is kept in the message).

    Examples
    --------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "x.h5ad"
    >>> _ = p.write_text("not hdf5")
    >>> read_anndata(p)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: .../x.h5ad: not a readable .h5ad file (OSError: ...)
    """
    import anndata

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: file not found; pass the path of an .h5ad file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return anndata.read_h5ad(p)
    except Exception as err:  # h5py/anndata raise a variety of errors on bad files
        msg = " ".join(str(err).split())
        raise ValueError(f"{p}: not a readable .h5ad file ({type(err).__name__}: {msg})") from err


def _spatial(src: AnnData, p: Path) -> np.ndarray:
    """``obsm["spatial"]`` as float64 ``(n, 2)``, validated."""
    if K.SPATIAL not in src.obsm:
        raise ValueError(
            f"{p}: no obsm['spatial'] (spot pixel coordinates); add them as an (n_spots, 2) "
            "array of full-resolution pixels (x = column, y = row), or use read_visium / "
            "read_her2st for raw platform outputs"
        )
    xy = np.asarray(src.obsm[K.SPATIAL])
    if xy.ndim != 2 or xy.shape[1] < 2 or xy.shape[0] != src.n_obs:
        raise ValueError(f"{p}: obsm['spatial'] has shape {xy.shape}, expected ({src.n_obs}, 2)")
    if xy.dtype.kind not in "iuf":
        raise ValueError(f"{p}: obsm['spatial'] is not numeric ({xy.dtype})")
    xy = xy[:, :2].astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(xy).all(axis=1))
    if bad.size:
        raise ValueError(
            f"{p}: obsm['spatial'] has NaN or infinite coordinates in {bad.size} row(s), the "
            f"first row {bad[0] + 1} (spot {str(src.obs_names[bad[0]])!r}): {xy[bad[0]].tolist()}"
        )
    return xy


def _raw_counts(src: AnnData, p: Path) -> sp.csr_matrix:
    """The raw counts (``layers["counts"]``, else ``X``) as CSR float32, validated."""
    raw = src.layers.get(K.LAYER_COUNTS, src.X)
    if raw is None:
        raise ValueError(f"{p}: no expression matrix (X is empty and there is no counts layer)")
    if not sp.issparse(raw):
        raw = np.asarray(raw)
        if raw.dtype.kind not in "iuf":
            raise ValueError(f"{p}: the expression matrix is not numeric ({raw.dtype})")
    counts = sp.csr_matrix(raw, dtype=np.float32)
    check_counts(counts, str(p))
    return counts


def _read_metadata(hest_meta: Path | None) -> dict[str, Any]:
    if hest_meta is None:
        return {}
    try:
        meta = json.loads(hest_meta.read_text())
    except ValueError as err:
        raise ValueError(f"{hest_meta}: not valid JSON ({err})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{hest_meta}: expected a JSON object")
    return meta


def _resolve_mpp(
    mpp: float | None,
    meta: dict[str, Any],
    hest_meta: Path | None,
    old: dict[str, Any],
    slide_path: Path | None,
) -> tuple[float | None, str]:
    """Microns per pixel and where it came from: argument, HEST metadata, file, TIFF tags."""
    mpp_source = "argument"
    if mpp is None:
        for key in _HEST_MPP_KEYS:
            v = meta.get(key)
            if isinstance(v, int | float) and v > 0:
                mpp, mpp_source = float(v), f"{hest_meta} ({key})"
                break
    if mpp is None and isinstance(old.get(K.UNS_MPP), int | float):
        mpp, mpp_source = float(old[K.UNS_MPP]), "uns['mclstexp']['mpp'] of the file"
    if mpp is None and slide_path is not None:
        mpp = _tiff_mpp(slide_path)
        mpp_source = f"{slide_path} (resolution tags)"
    if mpp is not None and not (np.isfinite(mpp) and mpp > 0):
        raise ValueError(f"mpp: expected a positive number of microns per pixel, got {mpp!r}")
    return mpp, mpp_source


def _obs(src: AnnData, ids: list[str], xy: np.ndarray, p: Path) -> pd.DataFrame:
    """The file's ``obs`` with integer ``array_row``/``array_col`` (derived when absent)."""
    obs = src.obs.copy()
    obs.index = pd.Index(ids)
    if K.ARRAY_ROW in obs and K.ARRAY_COL in obs:
        for key in (K.ARRAY_ROW, K.ARRAY_COL):
            col = obs[key]
            if not pd.api.types.is_numeric_dtype(col) or col.isna().any():
                raise ValueError(f"{p}: obs[{key!r}] must be numeric without gaps")
            if not np.all(np.asarray(col) == np.round(np.asarray(col))):
                raise ValueError(f"{p}: obs[{key!r}] must hold integer array coordinates")
            obs[key] = np.asarray(col).astype(np.int64)
    else:
        warn_data(
            f"{p}: no obs['array_row'/'array_col']; derived from the pixel coordinates "
            "(steps of the median nearest-neighbour distance)"
        )
        obs[K.ARRAY_COL], obs[K.ARRAY_ROW] = _grid_index(xy)
    return obs
