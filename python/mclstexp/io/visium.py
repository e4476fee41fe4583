"""Reader for a 10x Genomics Space Ranger output folder (Visium).

Expected layout under ``path``::

    filtered_feature_bc_matrix.h5            10x HDF5 (v3: group "matrix"), or the folder
    filtered_feature_bc_matrix/              barcodes.tsv(.gz), features.tsv(.gz), matrix.mtx(.gz)
    spatial/tissue_positions.csv             with header (Space Ranger >= 2.0), or
    spatial/tissue_positions_list.csv        without header (older)
    spatial/scalefactors_json.json           spot_diameter_fullres, tissue_hires_scalef, ...

The full-resolution H&E image is not part of the output; pass it with ``image=``.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from mclstexp import _keys as K
from mclstexp.io._common import (
    build_anndata,
    check_counts,
    check_inside,
    check_unique,
    image_size,
    warn_data,
)

VISIUM_SPOT_DIAMETER_UM = 55.0
_POSITION_COLUMNS = (
    "barcode",
    "in_tissue",
    "array_row",
    "array_col",
    "pxl_row_in_fullres",
    "pxl_col_in_fullres",
)
_MAX_NNZ = 2_000_000_000


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open("r", encoding="utf-8")


def _pick(folder: Path, *names: str) -> Path | None:
    for n in names:
        for cand in (folder / n, folder / f"{n}.gz"):
            if cand.is_file():
                return cand
    return None


def _read_h5(path: Path) -> tuple[sp.csr_matrix, list[str], pd.DataFrame]:
    import h5py

    def fail(msg: str) -> ValueError:
        return ValueError(f"{path}: {msg}; pass a Space Ranger filtered_feature_bc_matrix.h5 (v3)")

    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise OSError(f"{path}: not a readable HDF5 file ({err})") from err
    with f:
        if "matrix" not in f:
            raise fail("no 'matrix' group (older v2 files are not supported)")
        g = f["matrix"]
        for key in ("data", "indices", "indptr", "shape", "barcodes", "features"):
            if key not in g:
                raise fail(f"missing 'matrix/{key}'")
        shape = tuple(int(v) for v in g["shape"][()])
        if len(shape) != 2 or min(shape) < 0:
            raise fail(f"bad shape {shape}")
        n_features, n_barcodes = shape
        nnz = g["data"].shape[0]
        if g["indices"].shape[0] != nnz or g["indptr"].shape[0] != n_barcodes + 1:
            raise fail("data/indices/indptr lengths disagree with the shape")
        if nnz > _MAX_NNZ or g["barcodes"].shape[0] != n_barcodes:
            raise fail("implausible sizes in the header")
        feats = g["features"]
        for key in ("id", "name"):
            if key not in feats:
                raise fail(f"missing 'matrix/features/{key}'")
        if feats["id"].shape[0] != n_features or feats["name"].shape[0] != n_features:
            raise fail("feature lists disagree with the shape")
        data = np.asarray(g["data"][()])
        if data.dtype.kind not in "iuf":
            raise fail(f"non-numeric counts ({data.dtype})")
        indices = np.asarray(g["indices"][()], dtype=np.int64)
        indptr = np.asarray(g["indptr"][()], dtype=np.int64)
        barcodes = [b.decode() if isinstance(b, bytes) else str(b) for b in g["barcodes"][()]]
        var = pd.DataFrame(
            {
                "gene_ids": [b.decode() for b in feats["id"][()]],
                "gene_symbols": [b.decode() for b in feats["name"][()]],
            }
        )
        if "feature_type" in feats:
            var["feature_types"] = [b.decode() for b in feats["feature_type"][()]]
    if indptr[0] != 0 or indptr[-1] != nnz or np.any(np.diff(indptr) < 0):
        raise fail("corrupt indptr")
    if nnz and (indices.min() < 0 or indices.max() >= n_features):
        raise fail("feature indices out of range")
    matrix = sp.csc_matrix((data.astype(np.float32), indices, indptr), shape=shape)
    return sp.csr_matrix(matrix.T), barcodes, var


def _read_mtx(folder: Path) -> tuple[sp.csr_matrix, list[str], pd.DataFrame]:
    from scipy.io import mmread

    mtx = _pick(folder, "matrix.mtx")
    bcs = _pick(folder, "barcodes.tsv")
    feats = _pick(folder, "features.tsv", "genes.tsv")
    found = (("matrix.mtx", mtx), ("barcodes.tsv", bcs), ("features.tsv", feats))
    missing = [n for n, p in found if p is None]
    if mtx is None or bcs is None or feats is None:
        raise FileNotFoundError(f"{folder}: missing {missing} (plain or .gz)")
    with _open_text(bcs) as f:
        barcodes = [ln.strip() for ln in f if ln.strip()]
    table = pd.read_csv(feats, sep="\t", header=None, dtype=str)
    if table.shape[1] < 2:
        raise ValueError(f"{feats}: expected columns gene id, gene name[, feature type]")
    var = pd.DataFrame({"gene_ids": table[0].to_numpy(), "gene_symbols": table[1].to_numpy()})
    if table.shape[1] >= 3:
        var["feature_types"] = table[2].to_numpy()
    try:
        with gzip.open(mtx, "rb") if mtx.suffix == ".gz" else mtx.open("rb") as f:
            matrix = mmread(f)
    except (ValueError, OSError) as err:
        raise ValueError(f"{mtx}: not a readable Matrix Market file ({err})") from err
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    if matrix.shape != (len(var), len(barcodes)):
        raise ValueError(
            f"{mtx}: shape {matrix.shape} does not match {len(var)} features x "
            f"{len(barcodes)} barcodes of {feats.name} / {bcs.name}"
        )
    return sp.csr_matrix(matrix.T), barcodes, var


def _read_positions(spatial: Path) -> tuple[pd.DataFrame, Path]:
    new = spatial / "tissue_positions.csv"
    old = spatial / "tissue_positions_list.csv"
    if new.is_file():
        table = pd.read_csv(new)
        path = new
    elif old.is_file():
        table = pd.read_csv(old, header=None)
        path = old
        if table.shape[1] != len(_POSITION_COLUMNS):
            raise ValueError(
                f"{old}: expected {len(_POSITION_COLUMNS)} columns {list(_POSITION_COLUMNS)}, "
                f"got {table.shape[1]}"
            )
        table.columns = list(_POSITION_COLUMNS)
    else:
        raise FileNotFoundError(
            f"{spatial}: neither tissue_positions.csv nor tissue_positions_list.csv found; pass a "
            "Space Ranger output folder (with its spatial/ subfolder)"
        )
    missing = [c for c in _POSITION_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected {list(_POSITION_COLUMNS)}")
    for c in _POSITION_COLUMNS[1:]:
        if not pd.api.types.is_numeric_dtype(table[c]) or table[c].isna().any():
            raise ValueError(f"{path}: column {c!r} must be numeric without gaps")
    table["barcode"] = table["barcode"].astype(str)
    check_unique(list(table["barcode"]), "barcodes", str(path), "each barcode must appear once")
    return table.set_index("barcode"), path


def read_visium(
    path: str | os.PathLike[str],
    *,
    image: str | os.PathLike[str] | None = None,
    section: str | None = None,
    count_file: str = "filtered_feature_bc_matrix.h5",
) -> AnnData:
    """Read a Space Ranger (Visium) output folder as AnnData.

    Parameters
    ----------
    path
        The Space Ranger ``outs`` folder.
    image
        The full-resolution H&E image the pixel coordinates refer to (TIFF, JPEG, PNG). When given,
        it must exist and every spot centre must lie inside it; it becomes ``slide_path``.
    section
        Section id (default: the folder's name, or its parent's when the folder is ``outs``).
    count_file
        The HDF5 matrix file; when absent, the folder of the same stem (Matrix Market) is read.

    Returns
    -------
    AnnData
        Raw counts (CSR float32) of the "Gene Expression" features, ``var_names`` = gene symbols
        (made unique with ``-1``, ``-2`` suffixes, reported), ``var["gene_ids"]``; barcodes as
        ``obs_names`` in the matrix order; ``obsm["spatial"]`` = (``pxl_col_in_fullres``,
        ``pxl_row_in_fullres``); ``obs["array_row"/"array_col"/"in_tissue"]``;
        ``uns["mclstexp"]["mpp"]`` = 55 um / ``spot_diameter_fullres`` (estimated) and
        ``spot_diameter_px``.

    Examples
    --------
    >>> adata = read_visium("outs", image="he_fullres.tif")  # doctest: +SKIP
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder; pass the Space Ranger output folder")
    h5 = root / count_file
    mtx_dir = root / Path(count_file).name.removesuffix(".h5")
    if h5.is_file():
        counts, barcodes, var = _read_h5(h5)
        source = h5
    elif mtx_dir.is_dir():
        counts, barcodes, var = _read_mtx(mtx_dir)
        source = mtx_dir
    else:
        raise FileNotFoundError(
            f"{root}: neither {h5.name} nor the folder {mtx_dir.name}/ found; pass the Space "
            "Ranger output folder"
        )
    check_unique(barcodes, "barcodes", str(source), "each barcode must appear once")
    if "feature_types" in var:
        keep = (var["feature_types"] == "Gene Expression").to_numpy()
        if not keep.all():
            warn_data(
                f"{source}: {int((~keep).sum())} non-'Gene Expression' features "
                f"({sorted(set(var['feature_types'][~keep]))}) were left out"
            )
            counts = counts[:, np.flatnonzero(keep)]
            var = var.loc[keep].reset_index(drop=True)
    check_counts(counts, str(source))
    symbols = var["gene_symbols"].astype(str)
    if not symbols.is_unique:
        dup = symbols.duplicated(keep=False)
        warn_data(
            f"{source}: {int(dup.sum())} features share {symbols[dup].nunique()} gene symbols; "
            "they were made unique with -1, -2 suffixes (var['gene_ids'] keeps the ids)"
        )
        counter: dict[str, int] = {}
        seen = set(symbols)
        names = []
        for s in symbols:
            n = counter.get(s, 0)
            counter[s] = n + 1
            if n == 0:
                names.append(s)
                continue
            cand = f"{s}-{n}"
            while cand in seen:
                n += 1
                cand = f"{s}-{n}"
            seen.add(cand)
            names.append(cand)
        symbols = pd.Series(names)
    var.index = pd.Index(symbols.to_list())

    spatial = root / "spatial"
    positions, pos_path = _read_positions(spatial)
    missing = [b for b in barcodes if b not in positions.index]
    if missing:
        raise ValueError(
            f"{source}: {len(missing)} of {len(barcodes)} barcodes have no row in {pos_path} "
            f"(e.g. {missing[:3]}); check that the matrix and spatial/ belong to the same run"
        )
    pos = positions.loc[barcodes]
    xy = pos[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(np.float64)

    mpp = None
    scale: dict[str, Any] = {}
    sf_path = spatial / "scalefactors_json.json"
    if sf_path.is_file():
        try:
            scale = json.loads(sf_path.read_text())
        except ValueError as err:
            raise ValueError(f"{sf_path}: not valid JSON ({err})") from None
        diameter = scale.get("spot_diameter_fullres")
        if isinstance(diameter, int | float) and diameter > 0:
            mpp = VISIUM_SPOT_DIAMETER_UM / float(diameter)
    else:
        warn_data(f"{sf_path}: not found; microns per pixel unknown (mpp=None)")

    slide = None
    if image is not None:
        slide = Path(image).expanduser()
        check_inside(xy, image_size(slide), slide, str(pos_path), barcodes)
    if section is None:
        section = root.parent.name if root.name == "outs" else root.name
    uns_extra: dict[str, Any] = {
        K.UNS_SPOT_DIAMETER_PX: float(scale["spot_diameter_fullres"]) if mpp is not None else None,
        K.UNS_SOURCE: {"counts": str(source), "positions": str(pos_path)},
        "mpp_source": "estimated from spot_diameter_fullres (55 um spots)" if mpp else None,
        "scalefactors": {k: v for k, v in scale.items() if isinstance(v, int | float)},
    }
    return build_anndata(
        counts=counts,
        spot_ids=barcodes,
        genes=list(var.index),
        xy=xy,
        array_row=pos["array_row"].to_numpy(),
        array_col=pos["array_col"].to_numpy(),
        section=str(section),
        slide_path=None if slide is None else str(slide),
        mpp=mpp,
        obs_extra={"in_tissue": pos["in_tissue"].to_numpy().astype(np.int64)},
        uns_extra=uns_extra,
        var=var,
    )
