"""Test helper: write samples in the exact HEST-1k and HEST-Benchmark layouts.

What HEST writes, and where each fact comes from (github.com/mahmoodlab/HEST at commit afd42c3,
package hest 1.1.1; hestcore 1.0.4 from PyPI):

- ``st/<id>.h5ad``: counts in X; obs ``in_tissue``, ``pxl_col_in_fullres``,
  ``pxl_row_in_fullres``, ``array_col``, ``array_row`` and QC columns; ``obsm["spatial"]`` spot
  centres (x, y) in level-0 pixels; ``uns["spatial"]["ST"]`` with ``images/downscaled_fullres``
  and ``scalefactors`` (``spot_diameter_fullres``, ``tissue_downscaled_fullres_scalef``)
  (``register_downscale_img`` in utils.py; tutorial 2-Interacting-with-HEST-1k.ipynb).
- ``wsis/<id>.tif``: pyramidal TIFF (``tiff_save``); ``metadata/<id>.json``: the columns of
  ``assets/HEST_v1_1_0.csv`` for the sample (``pixel_size_um_estimated`` and ``_embedded``,
  ``spot_diameter``, ``inter_spot_dist``, ``st_technology``, ``patient``, ...).
- ``patches/<id>.h5``: ``HESTData.dump_patches(target_patch_size=224, target_pixel_size=0.5)``:
  ``patch_size_src = 224 * 0.5 / mpp`` (float), corners ``int(centre - patch_size_src // 2)``,
  spots whose patch leaves the slide dropped; hestcore's ``WSIPatcher`` reads
  ``round(patch_size_src)`` level-0 pixels from the corner and resizes them to 224 (cv2
  INTER_LINEAR; here PIL bilinear, cv2 is not a dependency), ``to_h5`` writes ``img`` (chunks
  (1, 224, 224, 3), maxshape (None, ...), attrs ``patch_size_src``, ``patch_size_target``,
  ``downsample``, ``pixel_size``), ``coords`` (int64 [N, 2], corners) and ``barcode`` (UTF-8
  strings [N, 1], chunks (1, 1)) (``initsave_hdf5`` in vst_save_utils.py). No tissue mask here
  (``use_mask=False``): every spot inside the slide keeps its patch.
- HEST-Benchmark task: ``var_50genes.json`` (``{"genes": [...]}``, ``get_k_genes`` in utils.py),
  ``splits/train_<i>.csv``/``test_<i>.csv`` (``sample_id, patches_path, expr_path``;
  ``create_splits``: one test group per patient), ``patches/<id>.h5``, ``adata/<id>.h5ad``
  (``create_benchmark_data`` in HESTData.py).

The her2st fixture converts sections C2.. of ``../shared/data/her2st`` (one patient, legacy ST):
each section is its own split group (a fixture choice: HEST groups by patient), patches at
0.5 µm/px from the section's H&E decoded at ``1 / scale`` (JPEG draft decoding; ``scale=1`` is
the full resolution), the genes are the 50 most variable by :func:`mclstexp.pp.select_genes`
(HEST uses scanpy's ``highly_variable_genes``, not a dependency here).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from PIL import Image

from mclstexp.datasets import write_pyramid_tiff
from mclstexp.exceptions import DataWarning

TARGET_MPP = 0.5
PATCH = 224


def hest_corners(centres: np.ndarray, mpp: float) -> tuple[np.ndarray, float]:
    """HEST's patch corners for spot centres (``dump_patches``) and the float source side."""
    src = PATCH * (TARGET_MPP / mpp)
    return (np.asarray(centres, dtype=np.float64) - src // 2).astype(int), src


def cut_patches(image: np.ndarray, corners: np.ndarray, mpp: float) -> np.ndarray:
    """Read ``round(224 * 0.5 / mpp)`` px from each corner (black outside) and resize to 224."""
    side = round(PATCH * TARGET_MPP / mpp)
    h, w = image.shape[:2]
    out = np.empty((len(corners), PATCH, PATCH, 3), np.uint8)
    for i, (x, y) in enumerate(np.asarray(corners, dtype=int)):
        tile = np.zeros((side, side, 3), np.uint8)
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + side, w), min(y + side, h)
        if x1 > x0 and y1 > y0:
            tile[y0 - y : y1 - y, x0 - x : x1 - x] = image[y0:y1, x0:x1, :3]
        out[i] = np.asarray(Image.fromarray(tile).resize((PATCH, PATCH), Image.BILINEAR))
    return out


def write_patches_h5(
    path: Path,
    images: np.ndarray,
    corners: np.ndarray,
    barcodes: Sequence[str],
    *,
    mpp: float,
    name: str | None = None,
) -> None:
    """Write a patch file as hestcore 1.0.4's ``WSIPatcher.to_h5`` does (module docstring)."""
    n = len(barcodes)
    down = TARGET_MPP / mpp
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        img = f.create_dataset(
            "img", data=images, chunks=(1, PATCH, PATCH, 3), maxshape=(None, PATCH, PATCH, 3)
        )
        f.create_dataset(
            "coords", data=np.asarray(corners, np.int64), chunks=(1, 2), maxshape=(None, 2)
        )
        f.create_dataset(
            "barcode",
            data=np.array(list(barcodes), dtype=object).reshape(n, 1),
            dtype=h5py.string_dtype(encoding="utf-8"),
            chunks=(1, 1),
            maxshape=(None, 1),
        )
        img.attrs["patch_size_src"] = round(PATCH * down)
        img.attrs["patch_size_target"] = PATCH
        img.attrs["downsample"] = down
        img.attrs["pixel_size"] = mpp
        if name is not None:
            img.attrs["name"] = name


def hest_anndata(
    counts: sp.spmatrix | np.ndarray,
    barcodes: Sequence[str],
    genes: Sequence[str],
    centres: np.ndarray,
    array_rc: np.ndarray,
    *,
    thumbnail: np.ndarray,
    scalef: float,
    spot_px: float,
    var: pd.DataFrame | None = None,
) -> ad.AnnData:
    """An AnnData with the obs, var, obsm and uns HEST-1k's ``st/*.h5ad`` files carry."""
    x = sp.csr_matrix(counts, dtype=np.float32)
    obs = pd.DataFrame(index=pd.Index(list(barcodes)))
    obs["in_tissue"] = 1
    obs["pxl_col_in_fullres"] = centres[:, 0]
    obs["pxl_row_in_fullres"] = centres[:, 1]
    obs["array_col"] = np.asarray(array_rc[:, 1], dtype=np.int64)
    obs["array_row"] = np.asarray(array_rc[:, 0], dtype=np.int64)
    obs["total_counts"] = np.asarray(x.sum(axis=1)).ravel()
    obs["n_genes_by_counts"] = np.diff(x.indptr)
    if var is None:
        var = pd.DataFrame(index=pd.Index(list(genes)))
    var["n_cells_by_counts"] = np.asarray((x > 0).sum(axis=0)).ravel()
    var["total_counts"] = np.asarray(x.sum(axis=0)).ravel()
    var["mito"] = [str(g).upper().startswith("MT-") for g in var.index]
    a = ad.AnnData(x, obs=obs, var=var)
    a.obsm["spatial"] = np.asarray(centres, dtype=np.float64)
    a.uns["spatial"] = {
        "ST": {
            "images": {"downscaled_fullres": thumbnail},
            "scalefactors": {
                "spot_diameter_fullres": float(spot_px),
                "tissue_downscaled_fullres_scalef": float(scalef),
            },
        }
    }
    return a


def write_hest_sample(
    root: Path,
    sample_id: str,
    adata: ad.AnnData,
    image: np.ndarray,
    meta: dict,
    *,
    wsi: bool = True,
) -> Path:
    """Write ``st/``, ``wsis/`` (when ``wsi``), ``metadata/`` and ``patches/`` for one sample;
    return the patch file. Spots whose patch leaves the slide get none (as HEST)."""
    mpp = float(meta["pixel_size_um_estimated"])
    centres = np.asarray(adata.obsm["spatial"], dtype=np.float64)
    corners, src = hest_corners(centres, mpp)
    h, w = image.shape[:2]
    inside = (
        (corners[:, 0] + src >= 0)
        & (corners[:, 0] < w)
        & (corners[:, 1] + src >= 0)
        & (corners[:, 1] < h)
    )
    for d in ("st", "metadata", "patches", *(["wsis"] if wsi else [])):
        (root / d).mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(root / "st" / f"{sample_id}.h5ad")
    (root / "metadata" / f"{sample_id}.json").write_text(json.dumps(meta))
    if wsi:
        levels = [image]
        while max(levels[-1].shape[:2]) > 1024:
            levels.append(np.asarray(Image.fromarray(levels[-1]).reduce(2)))
        write_pyramid_tiff(root / "wsis" / f"{sample_id}.tif", levels, mpp=mpp)
    path = root / "patches" / f"{sample_id}.h5"
    barcodes = np.asarray(adata.obs_names)[inside]
    images = cut_patches(image, corners[inside], mpp)
    write_patches_h5(path, images, corners[inside], barcodes, mpp=mpp, name=sample_id)
    return path


def write_bench_task(
    task_root: Path,
    hest_root: Path,
    ids: Sequence[str],
    genes: Sequence[str],
    groups: Sequence[Sequence[str]],
) -> Path:
    """A HEST-Benchmark task from HEST-1k samples: copies of ``st``/``patches`` files as
    ``adata``/``patches``, the gene JSON, and one split per group (``create_splits``)."""
    import shutil

    for d in ("patches", "adata", "splits"):
        (task_root / d).mkdir(parents=True, exist_ok=True)
    for sid in ids:
        shutil.copy(hest_root / "patches" / f"{sid}.h5", task_root / "patches" / f"{sid}.h5")
        shutil.copy(hest_root / "st" / f"{sid}.h5ad", task_root / "adata" / f"{sid}.h5ad")
    (task_root / "var_50genes.json").write_text(json.dumps({"genes": list(genes)}))
    for i in range(len(groups)):
        test = [s for s in groups[i]]
        train = [s for j, g in enumerate(groups) if j != i for s in g]
        for kind, members in (("train", train), ("test", test)):
            pd.DataFrame(
                {
                    "sample_id": members,
                    "patches_path": [f"patches/{s}.h5" for s in members],
                    "expr_path": [f"adata/{s}.h5ad" for s in members],
                }
            ).to_csv(task_root / "splits" / f"{kind}_{i}.csv", index=False)
    return task_root


def _meta(sample_id: str, mpp: float, *, tech: str, patient: str, **extra: object) -> dict:
    return {
        "dataset_title": "mclstexp test fixture",
        "id": sample_id,
        "organ": "Breast",
        "disease_state": "Cancer",
        "oncotree_code": "IDC",
        "species": "Homo sapiens",
        "patient": patient,
        "st_technology": tech,
        "inter_spot_dist": 200.0,
        "spot_diameter": 100.0,
        "pixel_size_um_embedded": mpp,
        "pixel_size_um_estimated": mpp,
        "magnification": "20x",
        "hest_version_added": "fixture",
        **extra,
    }


def _thumbnail(image: np.ndarray) -> tuple[np.ndarray, float]:
    f = 1000 / max(image.shape[:2])
    h, w = image.shape[:2]
    thumb = Image.fromarray(image).resize((max(1, round(w * f)), max(1, round(h * f))))
    return np.asarray(thumb), f


def her2st_hest(
    shared_data: Path,
    out: Path,
    *,
    sections: Sequence[str] = ("C2", "C3", "C4"),
    scale: int = 2,
    max_spots: int | None = None,
    wsi_sections: Sequence[str] | None = None,
    task: str = "HER2ST",
) -> tuple[Path, Path]:
    """HEST-1k folder ``out/hest`` and HEST-Benchmark folder ``out/bench`` (task ``task``) made
    from her2st sections; returns ``(hest_root, bench_root)``. ``max_spots`` keeps the first
    spots of each section (fast tests); ``wsi_sections`` (default all) get a pyramidal TIFF."""
    from mclstexp.io import read_her2st
    from mclstexp.pp import select_genes

    hest_root, bench_root = out / "hest", out / "bench"
    wsi_sections = list(sections) if wsi_sections is None else list(wsi_sections)
    adatas = []
    for s in sections:
        with warnings.catch_warnings():  # her2st's spot files have 0-3 rows without counts
            warnings.simplefilter("ignore", DataWarning)
            src = read_her2st(shared_data / "her2st", s)
        if max_spots is not None:
            src = src[:max_spots].copy()
        old = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None  # trusted test data (92 Mpx, above Pillow's default)
        try:
            with Image.open(src.uns["mclstexp"]["slide_path"]) as im:
                full = im.size
                im.draft("RGB", (full[0] // scale, full[1] // scale))
                image = np.asarray(im.convert("RGB"))
        finally:
            Image.MAX_IMAGE_PIXELS = old
        sx, sy = image.shape[1] / full[0], image.shape[0] / full[1]
        mpp = float(src.uns["mclstexp"]["mpp"]) / sx
        centres = np.asarray(src.obsm["spatial"]) * np.array([sx, sy])
        thumb, f = _thumbnail(image)
        rc = src.obs[["array_row", "array_col"]].to_numpy()
        a = hest_anndata(
            src.X, src.obs_names, src.var_names, centres, rc,
            thumbnail=thumb, scalef=f, spot_px=100.0 / mpp,
        )  # fmt: skip
        meta = _meta(s, mpp, tech="Spatial Transcriptomics", patient=s, spots_under_tissue=a.n_obs)
        write_hest_sample(hest_root, s, a, image, meta, wsi=s in wsi_sections)
        adatas.append(src)
    genes = list(select_genes(adatas, method="hvg", n_genes=50))
    write_bench_task(bench_root / task, hest_root, list(sections), genes, [[s] for s in sections])
    return hest_root, bench_root


def tiny_hest(
    out: Path, *, n_samples: int = 3, n_spots: int = 16, seed: int = 0
) -> tuple[Path, Path]:
    """A small synthetic HEST-1k + HEST-Benchmark pair (no real data): ``n_samples`` samples of
    ``n_spots`` spots on a 4-column grid at 1 µm/px, Ensembl ids as gene names with symbols in
    ``var["gene_name"]`` (sample 0 also carries a 20 % mpp disagreement). Expression follows the
    patch colour, so a probe has something to find. Returns ``(hest_root, bench_root)``."""
    rng = np.random.default_rng(seed)
    hest_root, bench_root = out / "hest", out / "bench"
    symbols = [f"GENE{i}" for i in range(8)]
    ids = [f"ENSG{100000 + i:011d}" for i in range(8)]
    names = []
    for k in range(n_samples):
        sid = f"TINY{k}"
        mpp, step = 1.0, 120.0
        rows, cols = np.divmod(np.arange(n_spots), 4)
        centres = np.stack([150 + cols * step, 150 + rows * step], axis=1).astype(np.float64)
        h, w = int(centres[:, 1].max() + 150), int(centres[:, 0].max() + 150)
        image = np.full((h, w, 3), 235, np.uint8)
        tone = rng.uniform(0, 1, n_spots)
        for (x, y), t in zip(centres.astype(int), tone, strict=True):
            image[y - 50 : y + 50, x - 50 : x + 50] = (np.array([200, 80, 160]) * t + 30).astype(
                np.uint8
            )
        lam = np.outer(1 + 9 * tone, np.linspace(0.5, 3, 8))
        counts = rng.poisson(lam).astype(np.float32)
        var = pd.DataFrame({"gene_name": symbols}, index=pd.Index(ids))
        thumb, f = _thumbnail(image)
        barcodes = [f"{r:03d}x{c:03d}" for r, c in zip(rows, cols, strict=True)]
        a = hest_anndata(
            counts, barcodes, ids, centres, np.stack([rows, cols], 1),
            thumbnail=thumb, scalef=f, spot_px=100.0, var=var,
        )  # fmt: skip
        embedded = 1.2 if k == 0 else mpp
        meta = _meta(sid, mpp, tech="Visium", patient=f"P{k}", pixel_size_um_embedded=embedded)
        write_hest_sample(hest_root, sid, a, image, meta)
        names.append(sid)
    bench_task = bench_root / "TINY"
    write_bench_task(bench_task, hest_root, names, ids[:6], [[s] for s in names])
    return hest_root, bench_root
