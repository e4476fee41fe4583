"""HEST-1k samples: expression, slide, metadata and HEST's own patches, read as HEST wrote them.

Layout of a HEST-1k folder (the Hugging Face dataset ``MahmoodLab/hest``; tutorial
``tutorials/1-Downloading-HEST-1k.ipynb`` and ``hest.HESTData._read_st`` of
github.com/mahmoodlab/HEST at commit afd42c3, package ``hest`` 1.1.1)::

    st/<id>.h5ad          counts (X), obsm["spatial"] = spot CENTRES in level-0 pixels (x, y)
    wsis/<id>.tif         pyramidal TIFF at the scan's own resolution
    metadata/<id>.json    pixel_size_um_estimated, pixel_size_um_embedded, st_technology,
                          spot_diameter / inter_spot_dist (µm), patient, oncotree_code, ...
    patches/<id>.h5       224 px patches at 0.5 µm/px around the spots (below)
    (spatial_plots/, thumbnails/, tissue_seg/, pixel_size_vis/, patches_vis/, cellvit_seg/,
    xenium_seg/, transcripts/: not read here)

Microns per pixel: HEST itself patches and segments with ``pixel_size_um_estimated`` (from the
spot grid; ``read_HESTData`` in HESTData.py); ``pixel_size_um_embedded`` is the TIFF's own tag
(``load_wsi``). :func:`read_hest` uses the estimated value, like HEST, and warns when the two
disagree by more than 10 % (:data:`MPP_TOLERANCE`).

``patches/<id>.h5`` as hestcore 1.0.4 writes it (``WSIPatcher.to_h5`` and ``initsave_hdf5`` in
``hestcore/wsi.py`` / ``vst_save_utils.py``, called by ``HESTData.dump_patches``)::

    img      uint8 [N, 224, 224, 3]   chunks (1, 224, 224, 3); attrs patch_size_src (level-0 px,
                                      rounded), patch_size_target (224), downsample
                                      (0.5 / pixel_size), pixel_size (the slide's µm/px)
    coords   int   [N, 2]             TOP-LEFT corner (x, y) of each patch in level-0 pixels:
                                      int(centre - (224 * 0.5 / pixel_size) // 2)
    barcode  str   [N, 1]             the spot's obs name in st/<id>.h5ad

Spots whose patch leaves the slide or covers less than 15 % tissue are not in the file. Before
hestcore (HEST <= 1.0, commit 582ec99^) the file stored ``coords`` as spot CENTRES in (y, x)
order with ``img`` attributes ``patch_size`` and ``factor``; :func:`read_hest_patches` reads both
and always returns corners and centres as (x, y), so the two are never mixed up.

Visium HD and Xenium samples are stored by HEST as pseudo-spots: Xenium transcripts pooled in
100 µm squares (``XeniumReader.read(spot_size_um=100.)``, readers.py), Visium HD 16 µm bins
pooled in 128 µm squares (``VisiumHDReader.read``: ``pool_bins_visiumhd(dst_bin_size_um=128,
src_bin_size_um=16)``), on a square grid with ``array_row``/``array_col``. Their metadata's
``spot_diameter`` is empty (Xenium) or the raw 2 µm bin (Visium HD), so :func:`read_hest` takes
the pseudo-spot size from the spot pitch instead (recorded in ``uns["mclstexp"]["hest"]``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from mclstexp import _keys as K
from mclstexp.io._common import warn_data

__all__ = [
    "MPP_TOLERANCE",
    "PSEUDO_SPOT_UM",
    "HestPatches",
    "check_hest_patches",
    "read_hest",
    "read_hest_patches",
]

#: Relative disagreement of ``pixel_size_um_estimated`` and ``pixel_size_um_embedded`` above which
#: :func:`read_hest` warns.
MPP_TOLERANCE = 0.10
#: HEST's pseudo-spot side in µm per technology (readers.py at afd42c3, see module docstring).
PSEUDO_SPOT_UM = {"Xenium": 100.0, "Visium HD": 128.0}
_ENSEMBL = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$")
_SYMBOL_COLUMNS = ("gene_name", "gene_symbols", "gene_symbol", "feature_name", "symbol")
_ID_COLUMNS = ("gene_ids", "gene_id", "ensembl_id", "gene_ensembl")


def _sample_path(root: Path, folder: str, sample_id: str, suffix: str) -> Path:
    path = root / folder / f"{sample_id}{suffix}"
    if not path.is_file():
        known = sorted(p.stem for p in (root / folder).glob(f"*{suffix}"))[:10]
        raise FileNotFoundError(
            f"{path}: no HEST-1k file for sample {sample_id!r} (the folder has {known}); "
            "download it with mclstexp.datasets.hest(ids=[...]) or pass the folder holding "
            "st/, wsis/ and metadata/"
        )
    return path


def read_hest(
    root: str | os.PathLike[str],
    sample_id: str,
    *,
    mpp: float | None = None,
    gene_symbols: bool = True,
) -> AnnData:
    """Read one HEST-1k sample (``st/<id>.h5ad`` with ``wsis/`` and ``metadata/`` beside it).

    Parameters
    ----------
    root
        The HEST-1k folder (holding ``st/``, ``wsis/``, ``metadata/``).
    sample_id
        The sample id, e.g. ``"TENX95"``.
    mpp
        Microns per pixel of the slide (default: ``pixel_size_um_estimated`` of the metadata, as
        HEST uses; see :func:`mclstexp.io.read_h5ad` for the fallbacks).
    gene_symbols
        When the file's gene names are Ensembl ids and ``var`` has a symbol column
        (``gene_name``, ``gene_symbols``, ...), use the symbols as ``var_names`` and keep the ids
        in ``var["gene_ids"]`` (duplicated symbols made unique with a warning).

    Returns
    -------
    AnnData
        As :func:`mclstexp.io.read_h5ad` (raw counts, spot centres in ``obsm["spatial"]``,
        ``uns["mclstexp"]`` with ``mpp`` and ``mpp_source``), plus ``uns["mclstexp"]["hest"]``:
        the sample id, technology, both metadata pixel sizes, and for pseudo-spot technologies
        the pseudo-spot side in µm measured from the spot pitch.

    Warns
    -----
    DataWarning
        The estimated and embedded pixel sizes disagree by more than :data:`MPP_TOLERANCE`.

    Examples
    --------
    >>> adata = read_hest("hest_data", "TENX95")  # doctest: +SKIP
    >>> adata.uns["mclstexp"]["mpp_source"]  # doctest: +SKIP
    'hest_data/metadata/TENX95.json (pixel_size_um_estimated)'
    """
    from mclstexp.io.h5ad import read_h5ad

    base = Path(root).expanduser()
    adata = read_h5ad(_sample_path(base, "st", sample_id, ".h5ad"), section=sample_id, mpp=mpp)
    info = adata.uns[K.UNS]
    meta = dict(info.get("hest_metadata", {}))
    _check_mpp(meta, str(info.get("mpp_source")))
    hest = _hest_info(adata, meta, sample_id, info.get(K.UNS_MPP))
    if hest.get("pseudo_spot_um") and info.get(K.UNS_MPP):
        # the metadata's spot_diameter is empty (Xenium) or the raw 2 µm bin (Visium HD)
        info[K.UNS_SPOT_DIAMETER_PX] = hest["pseudo_spot_um"] / float(info[K.UNS_MPP])
    info["hest"] = hest
    patches = base / "patches" / f"{sample_id}.h5"
    if patches.is_file():
        info[K.UNS_SOURCE] = {**dict(info.get(K.UNS_SOURCE, {})), "patches": str(patches)}
    if gene_symbols:
        adata = _use_symbols(adata)
    return adata


def _number(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) and out > 0 else None


def _check_mpp(meta: dict[str, Any], source: str) -> None:
    est = _number(meta.get("pixel_size_um_estimated"))
    emb = _number(meta.get("pixel_size_um_embedded"))
    if est is None or emb is None:
        return
    gap = abs(est - emb) / est
    if gap > MPP_TOLERANCE:
        warn_data(
            f"{source}: pixel_size_um_estimated = {est:.4g} and pixel_size_um_embedded = "
            f"{emb:.4g} µm/px disagree by {100 * gap:.0f} % (> {100 * MPP_TOLERANCE:.0f} %); "
            f"the estimated value is used, as HEST does (pass mpp= to override)"
        )


def _hest_info(
    adata: AnnData, meta: dict[str, Any], sample_id: str, mpp: float | None
) -> dict[str, Any]:
    tech = str(meta.get("st_technology") or "")
    out: dict[str, Any] = {
        "sample_id": sample_id,
        "st_technology": tech or None,
        "pixel_size_um_estimated": _number(meta.get("pixel_size_um_estimated")),
        "pixel_size_um_embedded": _number(meta.get("pixel_size_um_embedded")),
    }
    if tech in PSEUDO_SPOT_UM:
        pitch = _pitch_px(np.asarray(adata.obsm[K.SPATIAL]))
        measured = None if pitch is None or not mpp else pitch * float(mpp)
        expected = PSEUDO_SPOT_UM[tech]
        if measured is not None and abs(measured - expected) > 0.1 * expected:
            warn_data(
                f"{sample_id}: {tech} pseudo-spots are {measured:.0f} µm apart, not HEST's "
                f"default {expected:.0f} µm (re-pooled?); the measured size is used"
            )
        out["pseudo_spot_um"] = measured if measured is not None else expected
        out["pseudo_spot_um_hest_default"] = expected
    return out


def _pitch_px(xy: np.ndarray) -> float | None:
    """Median distance from each spot to its nearest neighbour, in pixels."""
    if xy.shape[0] < 2:
        return None
    from scipy.spatial import cKDTree

    dist, _ = cKDTree(xy).query(xy, k=2)
    nn = dist[:, 1][dist[:, 1] > 1e-6]
    return float(np.median(nn)) if nn.size else None


def _use_symbols(adata: AnnData) -> AnnData:
    """Gene symbols as ``var_names`` with the Ensembl ids in ``var["gene_ids"]``."""
    names = pd.Index(map(str, adata.var_names))
    if not names.size or np.mean([bool(_ENSEMBL.match(n)) for n in names]) < 0.5:
        for col in _ID_COLUMNS[1:]:
            if col in adata.var and "gene_ids" not in adata.var:
                adata.var["gene_ids"] = adata.var[col].astype(str).to_numpy()
        return adata
    column = next((c for c in _SYMBOL_COLUMNS if c in adata.var), None)
    if column is None:
        warn_data(
            f"{adata.uns[K.UNS].get(K.UNS_SOURCE)}: the genes are Ensembl ids and var has no "
            f"symbol column ({list(_SYMBOL_COLUMNS)}); the ids are kept as gene names"
        )
        return adata
    symbols = adata.var[column].astype(str).to_numpy()
    symbols = np.where(np.isin(symbols, ["", "nan", "None"]), names.to_numpy(), symbols)
    adata.var["gene_ids"] = names.to_numpy()
    adata.var_names = pd.Index(symbols)
    if adata.var_names.has_duplicates:
        n = int(adata.var_names.duplicated().sum())
        warn_data(f"{n} duplicated gene symbol(s) after mapping Ensembl ids; made unique")
        adata.var_names_make_unique()
    return adata


@dataclass(frozen=True)
class HestPatches:
    """HEST's patches of one sample (``patches/<id>.h5``), coordinates in level-0 pixels (x, y).

    Attributes
    ----------
    path
        The ``.h5`` file.
    barcodes
        ``(N,)`` spot ids, aligned with the patches (a subset of the sample's spots).
    corners
        float64 ``(N, 2)`` top-left corner of each patch.
    centres
        float64 ``(N, 2)`` centre of each patch (corner + half the level-0 patch side).
    patch_size
        Side of the stored patches in pixels (224).
    patch_size_src
        Side of the region each patch covers on the slide, level-0 pixels.
    slide_mpp
        µm/px of the slide HEST patched (``img.attrs["pixel_size"]``), when recorded.
    mpp
        µm/px of the stored patches (0.5 for HEST-1k and HEST-Benchmark), when known.
    layout
        ``"hestcore"`` (corners, HEST >= 1.0.x) or ``"legacy"`` (centres (y, x), HEST <= 1.0).
    """

    path: Path
    barcodes: np.ndarray
    corners: np.ndarray
    centres: np.ndarray
    patch_size: int
    patch_size_src: float
    slide_mpp: float | None
    mpp: float | None
    layout: str

    def __len__(self) -> int:
        return int(self.barcodes.shape[0])

    def images(self, rows: Any = None) -> np.ndarray:
        """The patches, uint8 ``[n, size, size, 3]`` (all, or ``rows`` in increasing order)."""
        import h5py

        with h5py.File(self.path, "r") as f:
            img = f["img"]
            if rows is None:
                return np.asarray(img[:], dtype=np.uint8)
            idx = np.asarray(rows, dtype=np.int64).reshape(-1)
            if idx.size and np.all(np.diff(idx) == 1):  # a run: one slice, not fancy indexing
                return np.asarray(img[int(idx[0]) : int(idx[-1]) + 1], dtype=np.uint8)
            return np.asarray(img[idx], dtype=np.uint8)


def _decode(values: np.ndarray) -> np.ndarray:
    flat = np.asarray(values).reshape(-1)
    return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in flat], dtype=str)


def read_hest_patches(path: str | os.PathLike[str]) -> HestPatches:
    """Read the index of a HEST patch file (``patches/<id>.h5``); images are read on demand.

    Both layouts HEST has written are understood (module docstring): hestcore's top-left
    corners ``(x, y)`` with ``patch_size_src``, and HEST <= 1.0's centres ``(y, x)`` with
    ``patch_size`` and ``factor``.

    Examples
    --------
    >>> p = read_hest_patches("hest_data/patches/TENX95.h5")  # doctest: +SKIP
    >>> p.images(range(8)).shape  # doctest: +SKIP
    (8, 224, 224, 3)
    """
    import h5py

    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{p}: HEST patch file not found")
    try:
        with h5py.File(p, "r") as f:
            missing = [k for k in ("img", "coords", "barcode") if k not in f]
            if missing:
                raise ValueError(f"{p}: not a HEST patch file (no {missing} dataset)")
            attrs = dict(f["img"].attrs)
            shape = tuple(f["img"].shape)
            coords = np.asarray(f["coords"][:], dtype=np.float64).reshape(-1, 2)
            barcodes = _decode(f["barcode"][:])
    except OSError as err:
        raise ValueError(f"{p}: not a readable HDF5 file ({err})") from err
    if (
        len(shape) != 4
        or shape[3] != 3
        or shape[1] != shape[2]
        or not (shape[0] == coords.shape[0] == barcodes.shape[0])
    ):
        raise ValueError(
            f"{p}: img {shape}, coords {coords.shape}, barcode {barcodes.shape} do not describe "
            "N square RGB patches"
        )
    size = int(shape[1])
    if "patch_size_src" in attrs:  # hestcore: top-left corners (x, y)
        src = float(attrs["patch_size_src"])
        corners, layout = coords, "hestcore"
        slide_mpp = _number(attrs.get("pixel_size"))
        down = _number(attrs.get("downsample"))
        mpp = slide_mpp * down if slide_mpp and down else None
    elif "patch_size" in attrs:  # HEST <= 1.0: centres (y, x); patch_size in level-0 pixels
        src = float(attrs["patch_size"])
        corners, layout = coords[:, ::-1] - src // 2, "legacy"
        slide_mpp, mpp = None, None
    else:
        raise ValueError(
            f"{p}: img has neither 'patch_size_src' (hestcore) nor 'patch_size' (HEST <= 1.0) "
            f"attributes ({sorted(attrs)}); cannot tell corners from centres"
        )
    centres = corners + src / 2.0
    if layout == "legacy":
        centres = coords[:, ::-1].copy()
    return HestPatches(p, barcodes, corners, centres, size, src, slide_mpp, mpp, layout)


def check_hest_patches(
    patches: HestPatches, adata: AnnData, *, tol_px: float | None = None
) -> None:
    """Check that HEST's patches sit on the spots of ``adata``: every barcode is a spot and each
    patch centre lies within ``tol_px`` of its spot centre (``obsm["spatial"]``).

    The default tolerance, ``max(2, 2 % of the level-0 patch side)`` pixels, covers HEST's
    integer truncation of the corners. A file whose ``coords`` are the spot centres themselves
    (corners and centres mixed up) fails with a message that says so.

    Examples
    --------
    >>> check_hest_patches(read_hest_patches("p/TENX95.h5"), adata)  # doctest: +SKIP
    """
    ids = pd.Index(map(str, adata.obs_names))
    pos = ids.get_indexer(patches.barcodes)
    if (pos < 0).any():
        bad = patches.barcodes[pos < 0][:5].tolist()
        raise ValueError(
            f"{patches.path}: {int((pos < 0).sum())} patch barcode(s) are not spots of the "
            f"sample (e.g. {bad})"
        )
    tol = max(2.0, 0.02 * patches.patch_size_src) if tol_px is None else float(tol_px)
    spots = np.asarray(adata.obsm[K.SPATIAL], dtype=np.float64)[pos]
    err = np.abs(patches.centres - spots).max(axis=1) if len(pos) else np.zeros(0)
    if err.size and float(err.max()) > tol:
        as_corners = np.abs(patches.corners - spots).max(axis=1)
        hint = (
            " (the stored coordinates are the spot centres, not the corners HEST's layout "
            "records: corners and centres mixed up)"
            if float(as_corners.max()) <= tol
            else ""
        )
        raise ValueError(
            f"{patches.path}: {int((err > tol).sum())} of {err.size} patch centres are more "
            f"than {tol:.1f} px from their spot (max {float(err.max()):.1f} px){hint}"
        )
