"""read_visium on small Space Ranger-layout fixtures written by the tests."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp
from PIL import Image

from mclstexp import _keys as K
from mclstexp.exceptions import DataWarning
from mclstexp.io import read_visium

BARCODES = ["AAAC-1", "AAAG-1", "AACT-1", "AAGT-1"]
GENE_IDS = ["ENSG1", "ENSG2", "ENSG3", "ENSG4", "AB1"]
SYMBOLS = ["SAMD11", "NOC2L", "DUP", "DUP", "CD3"]
TYPES = ["Gene Expression"] * 4 + ["Antibody Capture"]
# features x barcodes, as 10x stores it
MATRIX = np.array(
    [
        [1, 0, 3, 0],
        [0, 0, 2, 5],
        [4, 0, 0, 1],
        [0, 0, 1, 1],
        [9, 9, 9, 9],
    ],
    dtype=np.int32,
)
# barcode, in_tissue, array_row, array_col, pxl_row, pxl_col; one extra off-tissue barcode
POSITIONS = [
    ("AAAC-1", 1, 0, 0, 110.0, 100.0),
    ("AAAG-1", 1, 0, 2, 110.5, 200.0),
    ("TTTT-1", 0, 1, 1, 150.0, 150.0),
    ("AACT-1", 1, 1, 3, 200.0, 250.0),
    ("AAGT-1", 1, 2, 0, 290.0, 100.0),
]


def _write_h5(path: Path, matrix: np.ndarray = MATRIX) -> None:
    m = sp.csc_matrix(matrix)
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        g["data"] = m.data
        g["indices"] = m.indices.astype(np.int64)
        g["indptr"] = m.indptr.astype(np.int64)
        g["shape"] = np.array(m.shape, dtype=np.int32)
        g["barcodes"] = np.array([b.encode() for b in BARCODES])
        fg = g.create_group("features")
        fg["id"] = np.array([s.encode() for s in GENE_IDS])
        fg["name"] = np.array([s.encode() for s in SYMBOLS])
        fg["feature_type"] = np.array([s.encode() for s in TYPES])


def _write_mtx(folder: Path) -> None:
    folder.mkdir()
    with gzip.open(folder / "matrix.mtx.gz", "wb") as f:
        scipy.io.mmwrite(f, sp.coo_matrix(MATRIX))
    with gzip.open(folder / "barcodes.tsv.gz", "wt") as f:
        f.write("\n".join(BARCODES) + "\n")
    with gzip.open(folder / "features.tsv.gz", "wt") as f:
        for row in zip(GENE_IDS, SYMBOLS, TYPES, strict=True):
            f.write("\t".join(row) + "\n")


def _write_outs(
    root: Path,
    *,
    mtx: bool = False,
    old_positions: bool = False,
    positions: list | None = None,
    image: tuple[int, int] | None = (400, 350),
) -> Path:
    outs = root / "sample1" / "outs"
    (outs / "spatial").mkdir(parents=True)
    if mtx:
        _write_mtx(outs / "filtered_feature_bc_matrix")
    else:
        _write_h5(outs / "filtered_feature_bc_matrix.h5")
    table = pd.DataFrame(
        positions or POSITIONS,
        columns=[
            "barcode",
            "in_tissue",
            "array_row",
            "array_col",
            "pxl_row_in_fullres",
            "pxl_col_in_fullres",
        ],
    )
    if old_positions:
        table.to_csv(outs / "spatial/tissue_positions_list.csv", header=False, index=False)
    else:
        table.to_csv(outs / "spatial/tissue_positions.csv", index=False)
    (outs / "spatial/scalefactors_json.json").write_text(
        json.dumps({"spot_diameter_fullres": 110.0, "tissue_hires_scalef": 0.2})
    )
    if image is not None:
        Image.new("RGB", image, (230, 190, 210)).save(root / "he.png")
    return outs


@pytest.mark.parametrize(("mtx", "old"), [(False, False), (True, False), (False, True)])
def test_reads_h5_and_mtx_and_both_position_files(tmp_path: Path, mtx: bool, old: bool) -> None:
    outs = _write_outs(tmp_path, mtx=mtx, old_positions=old)
    with pytest.warns(DataWarning) as record:
        a = read_visium(outs, image=tmp_path / "he.png")
    messages = " | ".join(str(w.message) for w in record)
    assert "1 non-'Gene Expression' features" in messages
    assert "2 features share 1 gene symbols" in messages
    assert list(a.obs_names) == BARCODES
    assert list(a.var_names) == ["SAMD11", "NOC2L", "DUP", "DUP-1"]
    assert list(a.var["gene_ids"]) == GENE_IDS[:4]
    assert sp.issparse(a.X) and a.X.dtype == np.float32
    np.testing.assert_array_equal(a.X.toarray(), MATRIX[:4].T)
    np.testing.assert_array_equal(a.obs[K.LIBRARY_SIZE], MATRIX[:4].sum(axis=0))
    np.testing.assert_array_equal(
        a.obsm[K.SPATIAL], [[100.0, 110.0], [200.0, 110.5], [250.0, 200.0], [100.0, 290.0]]
    )
    assert list(a.obs[K.ARRAY_ROW]) == [0, 0, 1, 2]
    assert list(a.obs[K.ARRAY_COL]) == [0, 2, 3, 0]
    assert list(a.obs["in_tissue"]) == [1, 1, 1, 1]
    meta = a.uns[K.UNS]
    assert meta[K.UNS_SECTION] == "sample1"
    assert meta[K.UNS_MPP] == pytest.approx(55 / 110)
    assert meta[K.UNS_SPOT_DIAMETER_PX] == 110.0
    assert meta[K.UNS_SLIDE_PATH] == str(tmp_path / "he.png")


def test_without_image_and_with_a_section_name(tmp_path: Path) -> None:
    outs = _write_outs(tmp_path, image=None)
    with pytest.warns(DataWarning):
        a = read_visium(outs, section="S9")
    assert a.uns[K.UNS][K.UNS_SLIDE_PATH] is None
    assert a.uns[K.UNS][K.UNS_SECTION] == "S9"


def _bad_positions(barcode: str = "AAGT-1", pxl: float = 290.0) -> list:
    return [*POSITIONS[:4], (barcode, 1, 2, 0, pxl, 100.0)]


@pytest.mark.parametrize(
    ("setup", "exc", "match"),
    [
        (
            lambda r: _write_outs(r, positions=_bad_positions("ZZZZ-1")),
            ValueError,
            r"filtered_feature_bc_matrix.h5: 1 of 4 barcodes have no row in .*tissue_positions"
            r".*AAGT-1.*same run",
        ),
        (
            lambda r: _write_outs(r, positions=[*POSITIONS, POSITIONS[0]]),
            ValueError,
            r"tissue_positions.csv: 1 duplicated barcodes",
        ),
        (
            lambda r: _write_outs(r, positions=_bad_positions(pxl=5000.0)),
            ValueError,
            r"1 of 4 spot centres lie outside the image .*he.png \(400 x 350",
        ),
    ],
)
def test_bad_layouts(tmp_path: Path, setup, exc: type, match: str) -> None:  # type: ignore[no-untyped-def]
    outs = setup(tmp_path)
    with pytest.warns(DataWarning), pytest.raises(exc, match=match):
        read_visium(outs, image=tmp_path / "he.png")


def test_missing_pieces(tmp_path: Path) -> None:
    outs = _write_outs(tmp_path)
    with pytest.warns(DataWarning), pytest.raises(FileNotFoundError, match=r"nope\.tif"):
        read_visium(outs, image=tmp_path / "nope.tif")
    table = pd.read_csv(outs / "spatial/tissue_positions.csv").drop(columns=["pxl_row_in_fullres"])
    table.to_csv(outs / "spatial/tissue_positions.csv", index=False)
    with pytest.warns(DataWarning), pytest.raises(ValueError, match="pxl_row_in_fullres"):
        read_visium(outs)
    (outs / "spatial/tissue_positions.csv").unlink()
    with pytest.warns(DataWarning), pytest.raises(FileNotFoundError, match="tissue_positions"):
        read_visium(outs)
    (outs / "filtered_feature_bc_matrix.h5").unlink()
    with pytest.raises(FileNotFoundError, match=r"filtered_feature_bc_matrix\.h5"):
        read_visium(outs)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        read_visium(tmp_path / "none")


def test_negative_and_corrupt_matrices(tmp_path: Path) -> None:
    outs = _write_outs(tmp_path)
    bad = MATRIX.copy()
    bad[0, 0] = -3
    _write_h5(outs / "filtered_feature_bc_matrix.h5", bad)
    with pytest.warns(DataWarning), pytest.raises(ValueError, match=r"\.h5: .*negative"):
        read_visium(outs)
    with h5py.File(outs / "filtered_feature_bc_matrix.h5", "r+") as f:
        del f["matrix/indptr"]
        f["matrix/indptr"] = np.array([0, 1, 2], dtype=np.int64)
    with pytest.raises(ValueError, match="lengths disagree"):
        read_visium(outs)
    (outs / "filtered_feature_bc_matrix.h5").write_bytes(b"garbage")
    with pytest.raises(OSError, match="not a readable HDF5"):
        read_visium(outs)
