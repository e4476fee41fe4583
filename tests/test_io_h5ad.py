"""read_h5ad on small HEST-1k-layout and plain AnnData fixtures written by the tests."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from mclstexp import _keys as K
from mclstexp.datasets import write_pyramid_tiff
from mclstexp.exceptions import DataWarning
from mclstexp.io import read_h5ad

COUNTS = np.array([[0, 2, 5], [1, 0, 0], [3, 3, 3], [0, 0, 7]], dtype=np.float32)
XY = np.array([[100.0, 50.0], [300.0, 50.0], [100.0, 250.0], [300.5, 250.0]])


def _adata(*, array: bool = True) -> ad.AnnData:
    obs = pd.DataFrame(index=["b1", "b2", "b3", "b4"])
    obs["in_tissue"] = 1
    if array:
        obs["array_row"] = [0, 0, 2, 2]
        obs["array_col"] = [0, 2, 0, 2]
    a = ad.AnnData(sp.csr_matrix(COUNTS), obs=obs, var=pd.DataFrame(index=["G1", "G2", "G3"]))
    a.obsm["spatial"] = XY.copy()
    return a


def _hest(root: Path, *, meta: dict | None = None, adata: ad.AnnData | None = None) -> Path:
    for d in ("st", "wsis", "metadata"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (adata or _adata()).write_h5ad(root / "st/TENX1.h5ad")
    write_pyramid_tiff(root / "wsis/TENX1.tif", [np.full((400, 512, 3), 230, np.uint8)], mpp=0.25)
    if meta is None:
        meta = {
            "pixel_size_um_estimated": 0.5,
            "pixel_size_um_embedded": 0.25,
            "patient": "P7",
            "spot_diameter": 55.0,
            "st_technology": "Visium",
        }
    (root / "metadata/TENX1.json").write_text(json.dumps(meta))
    return root / "st/TENX1.h5ad"


def test_hest_layout(tmp_path: Path) -> None:
    a = read_h5ad(_hest(tmp_path))
    meta = a.uns[K.UNS]
    assert meta[K.UNS_SLIDE_PATH] == str(tmp_path / "wsis/TENX1.tif")
    assert meta[K.UNS_MPP] == 0.5  # the estimated pixel size wins, as in HEST
    assert meta[K.UNS_SECTION] == "TENX1"
    assert meta[K.UNS_PATIENT] == "P7" and set(a.obs[K.PATIENT]) == {"P7"}
    assert meta[K.UNS_SPOT_DIAMETER_PX] == pytest.approx(110.0)
    assert meta["hest_metadata"]["st_technology"] == "Visium"
    assert sp.issparse(a.X) and a.X.dtype == np.float32
    np.testing.assert_array_equal(a.X.toarray(), COUNTS)
    np.testing.assert_array_equal(a.obsm[K.SPATIAL], XY)
    assert a.obsm[K.SPATIAL].dtype == np.float64
    assert list(a.obs[K.ARRAY_ROW]) == [0, 0, 2, 2] and a.obs[K.ARRAY_ROW].dtype == np.int64
    np.testing.assert_array_equal(a.obs[K.LIBRARY_SIZE], COUNTS.sum(axis=1))
    assert list(a.obs["in_tissue"]) == [1, 1, 1, 1]  # the file's obs is kept


def test_mpp_falls_back_to_the_tiff_resolution(tmp_path: Path) -> None:
    a = read_h5ad(_hest(tmp_path, meta={"patient": "P1"}))
    assert a.uns[K.UNS][K.UNS_MPP] == pytest.approx(0.25)
    assert read_h5ad(tmp_path / "st/TENX1.h5ad", mpp=0.8).uns[K.UNS][K.UNS_MPP] == 0.8


def test_plain_file_with_explicit_slide_and_derived_array(tmp_path: Path) -> None:
    a0 = _adata(array=False)
    a0.layers["counts"] = a0.X.copy()
    a0.X = sp.csr_matrix(np.log1p(COUNTS))  # X normalised: the counts layer is used
    a0.write_h5ad(tmp_path / "s.h5ad")
    slide = tmp_path / "he.tif"
    write_pyramid_tiff(slide, [np.zeros((300, 400, 3), np.uint8)], mpp=1.0)
    with pytest.warns(DataWarning, match="derived from the pixel coordinates"):
        a = read_h5ad(tmp_path / "s.h5ad", slide=slide, section="X9")
    np.testing.assert_array_equal(a.X.toarray(), COUNTS)
    assert list(a.obs[K.ARRAY_COL]) == [0, 1, 0, 1]
    assert list(a.obs[K.ARRAY_ROW]) == [0, 0, 1, 1]
    assert a.uns[K.UNS][K.UNS_SECTION] == "X9"
    assert a.uns[K.UNS][K.UNS_MPP] == pytest.approx(1.0)


def test_round_trip_of_a_contract_anndata(tmp_path: Path) -> None:
    from mclstexp.datasets import synthetic

    src = synthetic(tmp_path / "syn", n_sections=1, n_patients=1, n_spots=30, n_genes=5)[0]
    src.write_h5ad(tmp_path / "a.h5ad")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        a = read_h5ad(tmp_path / "a.h5ad")
    for key in (K.UNS_SLIDE_PATH, K.UNS_SECTION, K.UNS_MPP, K.UNS_PATIENT):
        assert a.uns[K.UNS][key] == src.uns[K.UNS][key]
    assert (a.X != src.X).nnz == 0
    np.testing.assert_array_equal(a.obsm[K.SPATIAL], src.obsm[K.SPATIAL])
    assert list(a.obs[K.LABEL]) == list(src.obs[K.LABEL])


def test_bad_files(tmp_path: Path) -> None:
    nospatial = _adata()
    del nospatial.obsm["spatial"]
    nospatial.write_h5ad(tmp_path / "a.h5ad")
    with pytest.raises(ValueError, match=r"a\.h5ad: no obsm\['spatial'\]"):
        read_h5ad(tmp_path / "a.h5ad")

    neg = _adata()
    neg.X = sp.csr_matrix(-COUNTS)
    neg.write_h5ad(tmp_path / "b.h5ad")
    with pytest.raises(ValueError, match=r"b\.h5ad: .*negative"):
        read_h5ad(tmp_path / "b.h5ad")

    nan = _adata()
    nan.obsm["spatial"][0, 0] = np.nan
    nan.write_h5ad(tmp_path / "c.h5ad")
    with pytest.raises(ValueError, match="NaN"):
        read_h5ad(tmp_path / "c.h5ad")

    (tmp_path / "d.h5ad").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match=r"d\.h5ad: not a readable \.h5ad"):
        read_h5ad(tmp_path / "d.h5ad")
    with pytest.raises(FileNotFoundError, match="file not found"):
        read_h5ad(tmp_path / "none.h5ad")

    far = _adata()
    far.obsm["spatial"][3] = [5000.0, 10.0]
    path = _hest(tmp_path / "hest", adata=far)
    with pytest.raises(
        ValueError, match=r"1 of 4 spot centres lie outside .*TENX1\.tif \(512 x 400"
    ):
        read_h5ad(path)
    with pytest.raises(FileNotFoundError, match="image not found"):
        read_h5ad(path, slide=tmp_path / "missing.tif")

    frac = _adata()
    frac.obs["array_row"] = [0.5, 0, 2, 2]
    frac.write_h5ad(tmp_path / "e.h5ad")
    with pytest.raises(ValueError, match=r"obs\['array_row'\] must hold integer"):
        read_h5ad(tmp_path / "e.h5ad")
