"""read_her2st on the real sections (../shared/data) and on small broken fixtures."""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from PIL import Image

from mclstexp import _keys as K
from mclstexp.exceptions import DataWarning
from mclstexp.io import read_her2st, read_her2st_all
from mclstexp.pp import load_panel, normalize_expression

IMAGED = ["C2", "C3", "C4", "C5", "C6"]


@pytest.fixture(scope="module")
def her2st_root(shared_data: Path) -> Path:
    return shared_data / "her2st"


@pytest.fixture(scope="module")
def imaged(her2st_root: Path) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        sections = read_her2st_all(her2st_root, with_images_only=True)
    return {a.uns[K.UNS][K.UNS_SECTION]: a for a in sections}


@pytest.mark.realdata
def test_the_five_imaged_sections_load_with_the_panel(imaged: dict) -> None:
    assert sorted(imaged) == IMAGED
    panel = load_panel("her2st_785")
    for sid, a in imaged.items():
        assert set(panel) <= set(a.var_names), sid
        assert sp.issparse(a.X) and a.X.dtype == np.float32
        meta = a.uns[K.UNS]
        assert meta[K.UNS_SECTION] == sid and meta[K.UNS_PATIENT] == "C"
        assert meta[K.UNS_MPP] == pytest.approx(0.69, abs=0.01)
        assert meta[K.UNS_SPOT_DIAMETER_PX] == pytest.approx(100 / meta[K.UNS_MPP])
        slide = Path(meta[K.UNS_SLIDE_PATH])
        assert slide.parent.name == sid and slide.suffix == ".jpg"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(slide) as im:  # header only
                w, h = im.size
        xy = a.obsm[K.SPATIAL]
        assert xy.dtype == np.float64
        assert (xy[:, 0] >= 0).all() and (xy[:, 0] < w).all()
        assert (xy[:, 1] >= 0).all() and (xy[:, 1] < h).all()
        assert a.obs_names.is_unique
        np.testing.assert_array_equal(a.obs[K.LIBRARY_SIZE], np.asarray(a.X.sum(axis=1)).ravel())
        ids = [f"{c}x{r}" for c, r in zip(a.obs[K.ARRAY_COL], a.obs[K.ARRAY_ROW], strict=True)]
        assert list(a.obs_names) == ids


@pytest.mark.realdata
def test_counts_are_unchanged_from_the_source(imaged: dict, her2st_root: Path) -> None:
    # Full oracle for C2 with an independent parser (pandas), same order and values.
    src = pd.read_csv(her2st_root / "data/ST-cnts/C2.tsv.gz", sep="\t", index_col=0)
    a = imaged["C2"]
    assert list(a.obs_names) == list(src.index)
    assert list(a.var_names) == list(src.columns)
    np.testing.assert_array_equal(a.X.toarray(), src.to_numpy(np.float32))
    # Spot checks for the others: a few lines read straight from the gz file.
    rng = np.random.default_rng(0)
    for sid in IMAGED[1:]:
        with gzip.open(her2st_root / f"data/ST-cnts/{sid}.tsv.gz", "rt") as f:
            header = f.readline().rstrip("\n").split("\t")[1:]
            lines = [f.readline().rstrip("\n").split("\t") for _ in range(5)]
        b = imaged[sid]
        assert list(b.var_names) == header
        for line in lines:
            row = b[line[0]].X.toarray().ravel()
            cols = rng.choice(len(header), size=50, replace=False)
            np.testing.assert_array_equal(row[cols], np.array(line[1:], dtype=np.float32)[cols])
            assert row.sum() == sum(map(int, line[1:]))


@pytest.mark.realdata
def test_coordinates_follow_the_spot_file(imaged: dict, her2st_root: Path) -> None:
    spots = pd.read_csv(her2st_root / "data/ST-spotfiles/C3_selection.tsv", sep="\t")
    spots.index = [f"{round(x)}x{round(y)}" for x, y in zip(spots.x, spots.y, strict=True)]
    a = imaged["C3"]
    assert len(spots) == a.n_obs + 2  # two spot-file rows without counts
    ref = spots.loc[a.obs_names, ["pixel_x", "pixel_y"]].to_numpy()
    np.testing.assert_array_equal(a.obsm[K.SPATIAL], ref)
    np.testing.assert_array_equal(a.obs[K.ARRAY_COL], spots.loc[a.obs_names, "x"])
    np.testing.assert_array_equal(a.obs[K.ARRAY_ROW], spots.loc[a.obs_names, "y"])
    assert a.uns[K.UNS]["n_ignored_spot_rows"] == 2


@pytest.mark.realdata
def test_extra_spot_rows_are_reported(her2st_root: Path) -> None:
    with pytest.warns(DataWarning, match=r"3 spot-file row\(s\) have no counts"):
        read_her2st(her2st_root, "C4", image=False)


@pytest.mark.realdata
def test_spots_sit_on_tissue(imaged: dict) -> None:
    a = imaged["C2"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im = Image.open(a.uns[K.UNS][K.UNS_SLIDE_PATH])
    with im:
        w, h = im.size
        im.draft("RGB", (w // 8, h // 8))  # cheap reduced-scale decode
        small = np.asarray(im.convert("RGB"), dtype=np.float64)
    sx, sy = small.shape[1] / w, small.shape[0] / h
    xy = a.obsm[K.SPATIAL]
    at_spots = small[(xy[:, 1] * sy).astype(int), (xy[:, 0] * sx).astype(int)].mean(axis=1)
    corners = np.r_[small[:20, :20].reshape(-1, 3), small[-20:, -20:].reshape(-1, 3)].mean(axis=1)
    assert np.median(at_spots) < np.median(corners) - 20  # tissue is darker than the glass


@pytest.mark.realdata
def test_zero_count_spots_of_the_real_data(imaged: dict) -> None:
    panel = load_panel("her2st")
    expected = {"C2": 1, "C3": 1, "C4": 0, "C5": 2, "C6": 1}
    for sid, a in imaged.items():
        zero = np.asarray(a[:, panel].X.sum(axis=1)).ravel() == 0
        assert zero.sum() == expected[sid]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            b = normalize_expression(a, genes=panel, flavor="legacy_spot")
        msgs = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
        assert bool(msgs) == bool(expected[sid])
        assert np.isfinite(b.X).all()
        assert (b.X[zero] == 0).all() and (b.X[~zero].sum(axis=1) > 0).all()
        assert b.uns[K.UNS][K.UNS_NORMALIZATION]["n_zero_spots"] == expected[sid]
        # the default flavour divides by the all-gene library size, which is never zero here
        with warnings.catch_warnings():
            warnings.simplefilter("error", DataWarning)
            c = normalize_expression(a, genes=panel)
        assert np.isfinite(c.X).all() and c.n_vars == 785


@pytest.mark.realdata
@pytest.mark.filterwarnings("ignore:.*spot-file row:mclstexp.exceptions.DataWarning")
def test_labels_and_counts_only_sections(her2st_root: Path) -> None:
    with pytest.warns(DataWarning, match="2 label row"):
        a = read_her2st(her2st_root, "A1")
    assert a.uns[K.UNS][K.UNS_SLIDE_PATH] is None
    assert a.uns[K.UNS][K.UNS_MPP] == pytest.approx(0.92, abs=0.01)
    lbl = pd.read_csv(her2st_root / "data/ST-pat/lbl/A1_labeled_coordinates.tsv", sep="\t")
    lbl.index = [f"{round(x)}x{round(y)}" for x, y in zip(lbl.x, lbl.y, strict=True)]
    expected = lbl.loc[a.obs_names, "label"]
    assert list(a.obs[K.LABEL].astype(str)) == list(expected)
    with pytest.warns(DataWarning, match="8 label row"):
        g2 = read_her2st(her2st_root, "G2")
    assert g2.obs[K.LABEL].notna().sum() > 400
    no_labels = read_her2st(her2st_root, "C3", labels=False, image=False)
    assert K.LABEL not in no_labels.obs


# ---------------------------------------------------------------------------------- fixtures


def _write_layout(
    root: Path,
    *,
    counts: str | None = None,
    spots: str | None = None,
    image_size: tuple[int, int] | None = (400, 300),
) -> Path:
    data = root / "data"
    (data / "ST-cnts").mkdir(parents=True)
    (data / "ST-spotfiles").mkdir()
    if counts is None:
        counts = "\tG1\tG2\tG3\n2x3\t1\t0\t4\n3x3\t0\t0\t0\n2x4\t7\t2\t1\n"
    if spots is None:
        spots = (
            "x\ty\tnew_x\tnew_y\tpixel_x\tpixel_y\tselected\n"
            "2\t3\t2.0\t3.0\t100.5\t120.25\t1\n"
            "3\t3\t3.0\t3.0\t200.5\t121.0\t1\n"
            "2\t4\t2.0\t4.0\t101.0\t220.0\t1\n"
        )
    with gzip.open(data / "ST-cnts/X1.tsv.gz", "wt") as f:
        f.write(counts)
    (data / "ST-spotfiles/X1_selection.tsv").write_text(spots)
    if image_size is not None:
        (data / "ST-imgs/X/X1").mkdir(parents=True)
        Image.new("RGB", image_size, (240, 200, 220)).save(data / "ST-imgs/X/X1/he.jpg")
    return root


def test_fixture_reads_per_contract(tmp_path: Path) -> None:
    root = _write_layout(tmp_path)
    a = read_her2st(root, "X1")
    assert list(a.obs_names) == ["2x3", "3x3", "2x4"]
    np.testing.assert_array_equal(a.X.toarray(), [[1, 0, 4], [0, 0, 0], [7, 2, 1]])
    np.testing.assert_array_equal(a.obsm[K.SPATIAL], [[100.5, 120.25], [200.5, 121.0], [101, 220]])
    assert list(a.obs[K.ARRAY_ROW]) == [3, 3, 4] and list(a.obs[K.ARRAY_COL]) == [2, 3, 2]
    assert a.uns[K.UNS][K.UNS_SLIDE_PATH].endswith("he.jpg")
    assert read_her2st(root / "data", "X1").shape == (3, 3)  # the data folder works too
    assert [s.uns[K.UNS][K.UNS_SECTION] for s in read_her2st_all(root)] == ["X1"]


SPOT_HEADER = "x\ty\tnew_x\tnew_y\tpixel_x\tpixel_y\tselected\n"


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        # counts id without coordinates
        (
            {"counts": "\tG1\n2x3\t1\n9x9\t1\n"},
            ValueError,
            r"X1.tsv.gz: 1 of 2 spots have no coordinates .*9x9.*same section",
        ),
        # duplicated spot ids in the counts
        ({"counts": "\tG1\n2x3\t1\n2x3\t2\n"}, ValueError, r"X1.tsv.gz: 1 duplicated spot ids"),
        # duplicated genes
        ({"counts": "\tG1\tG1\n2x3\t1\t1\n"}, ValueError, "duplicated gene names"),
        # two spot-file rows rounding to the same id
        (
            {"spots": SPOT_HEADER + "2\t3\t0\t0\t1\t1\t1\n2.2\t3\t0\t0\t5\t5\t1\n"},
            ValueError,
            r"X1_selection.tsv: 1 duplicated spot ids after rounding",
        ),
        # missing column
        (
            {"spots": "x\ty\tpixel_x\n2\t3\t1\n"},
            ValueError,
            r"X1_selection.tsv: missing column\(s\) \['pixel_y'\]",
        ),
        # non-numeric coordinates
        (
            {"spots": SPOT_HEADER + "2\t3\t0\t0\tabc\t1\t1\n"},
            ValueError,
            "'pixel_x' is not numeric",
        ),
        # non-numeric counts
        ({"counts": "\tG1\tG2\n2x3\t1\tfive\n"}, ValueError, r"X1.tsv.gz: non-numeric count"),
        # negative counts
        ({"counts": "\tG1\tG2\n2x3\t1\t-2\n"}, ValueError, r"X1.tsv.gz: .*negative"),
        # ragged rows
        ({"counts": "\tG1\tG2\n2x3\t1\t2\n3x3\t1\n"}, ValueError, "line 3 has 1 values"),
        # spot outside the image
        (
            {"counts": "\tG1\n2x3\t1\n", "spots": SPOT_HEADER + "2\t3\t0\t0\t100\t500\t1\n"},
            ValueError,
            r"X1_selection.tsv: 1 of 1 spot centres lie outside the image .*he.jpg \(400 x 300",
        ),
    ],
)
def test_bad_input(tmp_path: Path, kwargs: dict, exc: type, match: str) -> None:
    root = _write_layout(tmp_path, **kwargs)
    with pytest.raises(exc, match=match):
        read_her2st(root, "X1")


def test_spot_file_reader_is_public_and_shared(tmp_path: Path) -> None:
    from mclstexp.io import read_her2st_spots

    path = tmp_path / "X1_selection.tsv"
    path.write_text(SPOT_HEADER + "2\t3\t0\t0\t10.5\t20\t1\n4.4\t3\t0\t0\t30\t40\t0\n")
    spots = read_her2st_spots(path)
    assert list(spots.index) == ["2x3", "4x3"]
    assert list(spots.columns) == ["x", "y", "pixel_x", "pixel_y"]
    assert list(read_her2st_spots(path, selected_only=True).index) == ["2x3"]
    csv = tmp_path / "X1.csv"
    csv.write_text("x,y,pixel_x,pixel_y\n2,3,10.5,20\n")
    assert read_her2st_spots(csv, sep=",")["pixel_x"].tolist() == [10.5]
    with pytest.raises(FileNotFoundError, match="spot file not found"):
        read_her2st_spots(tmp_path / "none.tsv")


def test_missing_files_and_images(tmp_path: Path) -> None:
    root = _write_layout(tmp_path, image_size=None)
    a = read_her2st(root, "X1")  # no image folder: counts-only section
    assert a.uns[K.UNS][K.UNS_SLIDE_PATH] is None
    with pytest.raises(FileNotFoundError, match="no image for section 'X1'"):
        read_her2st(root, "X1", image=True)
    with pytest.raises(FileNotFoundError, match=r"nope\.jpg: image not found"):
        read_her2st(root, "X1", image=tmp_path / "nope.jpg")
    with pytest.raises(FileNotFoundError, match=r"no counts for section 'Y1'.*\['X1'\]"):
        read_her2st(root, "Y1")
    with pytest.raises(FileNotFoundError, match="no ST-cnts folder"):
        read_her2st(tmp_path / "elsewhere", "X1")
    with pytest.raises(ValueError, match="section"):
        read_her2st(root, "../X1")
    (root / "data/ST-spotfiles/X1_selection.tsv").unlink()
    with pytest.raises(FileNotFoundError, match=r"X1_selection\.tsv: spot file not found"):
        read_her2st(root, "X1")


def test_not_an_image(tmp_path: Path) -> None:
    from mclstexp.exceptions import SlideFormatError

    root = _write_layout(tmp_path)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(SlideFormatError, match=r"bad\.jpg: not a readable image"):
        read_her2st(root, "X1", image=bad)
