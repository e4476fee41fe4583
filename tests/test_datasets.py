"""Synthetic dataset: contract, determinism, cache, slide format, learnability."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import tifffile

from mclstexp import _keys as K
from mclstexp.datasets import synthetic
from mclstexp.exceptions import CacheMismatchError
from mclstexp.pp import normalize_expression

SMALL = {"n_sections": 2, "n_spots": 40, "n_genes": 8}


def _sha(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def default_sections(tmp_path_factory: pytest.TempPathFactory) -> list:
    return synthetic(tmp_path_factory.mktemp("syn_default"))


def test_contract(default_sections: list) -> None:
    assert [a.uns[K.UNS][K.UNS_SECTION] for a in default_sections] == ["A1", "B1", "A2", "B2"]
    patients = {a.uns[K.UNS][K.UNS_PATIENT] for a in default_sections}
    assert patients == {"A", "B"}
    for a in default_sections:
        assert a.shape == (200, 50)
        assert sp.issparse(a.X) and a.X.dtype == np.float32
        x = a.X.toarray()
        assert (x >= 0).all() and np.array_equal(x, np.round(x))
        assert a.obs_names.is_unique
        assert a.obsm[K.SPATIAL].dtype == np.float64 and a.obsm[K.SPATIAL].shape == (200, 2)
        for key in (K.ARRAY_ROW, K.ARRAY_COL):
            assert a.obs[key].dtype.kind == "i"
        ids = [f"{c}x{r}" for c, r in zip(a.obs[K.ARRAY_COL], a.obs[K.ARRAY_ROW], strict=True)]
        assert list(a.obs_names) == ids
        assert set(a.obs[K.SECTION]) == {a.uns[K.UNS][K.UNS_SECTION]}
        assert set(a.obs[K.PATIENT]) == {a.uns[K.UNS][K.UNS_PATIENT]}
        np.testing.assert_array_equal(a.obs[K.LIBRARY_SIZE], x.sum(axis=1))
        meta = a.uns[K.UNS]
        assert meta[K.UNS_MPP] == 2.0 and meta[K.UNS_SPOT_DIAMETER_PX] == 50.0
        slide = tifffile.TiffFile(meta[K.UNS_SLIDE_PATH])
        h, w = slide.pages[0].shape[:2]
        xy = a.obsm[K.SPATIAL]
        r = meta[K.UNS_SPOT_DIAMETER_PX] / 2
        assert (xy[:, 0] - r >= 0).all() and (xy[:, 0] + r < w).all()
        assert (xy[:, 1] - r >= 0).all() and (xy[:, 1] + r < h).all()
        # every spot lies on tissue according to the ground-truth region map
        fractions = a.obsm[K.SYNTH_REGIONS]
        assert fractions.shape == (200, 4) and (fractions.sum(axis=1) > 0.5).all()
        for key in (K.SYNTH_CELLULARITY, K.SYNTH_EOSIN):
            assert a.obs[key].dtype == np.float64 and np.isfinite(a.obs[key]).all()
        slide.close()


def test_slide_is_a_tiled_jpeg_pyramid_with_mpp(default_sections: list) -> None:
    path = default_sections[0].uns[K.UNS][K.UNS_SLIDE_PATH]
    with tifffile.TiffFile(path) as tif:
        pages = tif.pages
        assert len(pages) == 3
        shapes = [p.shape for p in pages]
        assert shapes[1][0] == shapes[0][0] // 2 and shapes[2][0] == shapes[0][0] // 4
        for i, p in enumerate(pages):
            assert p.is_tiled and p.tilewidth == 256 and p.tilelength == 256
            assert p.compression == tifffile.COMPRESSION.JPEG
            assert p.tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
            num, den = p.tags["XResolution"].value
            assert 1e4 / (num / den) == pytest.approx(2.0 * 2**i, rel=1e-6)
            assert (p.tags["NewSubfileType"].value == 1) == (i > 0)
        desc = json.loads(pages[0].description)
        assert desc["mclstexp"]["mpp"] == 2.0 and desc["mclstexp"]["section"] == "A1"
        img = pages[0].asarray()
        assert img.dtype == np.uint8 and img.shape[2] == 3
        # tissue-like: background near white, tissue pink/purple (R > G), nuclei dark
        assert img[:5, :5].mean() > 230
        xy = default_sections[0].obsm[K.SPATIAL].astype(int)
        centre = img[xy[:, 1], xy[:, 0]].astype(float)
        assert (centre[:, 0] > centre[:, 1]).mean() > 0.9
        assert (img.min(axis=2) < 100).mean() > 0.005


def test_slide_opens_in_openslide(default_sections: list) -> None:
    openslide = pytest.importorskip("openslide")
    path = default_sections[0].uns[K.UNS][K.UNS_SLIDE_PATH]
    s = openslide.OpenSlide(path)
    try:
        assert s.level_count == 3
        assert float(s.properties["openslide.mpp-x"]) == pytest.approx(2.0)
        with tifffile.TiffFile(path) as tif:
            ref = tif.pages[0].asarray()[300:340, 500:560]
        got = np.asarray(s.read_region((500, 300), 0, (60, 40)))[..., :3]
        np.testing.assert_array_equal(got, ref)
    finally:
        s.close()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    a = synthetic(tmp_path / "a", **SMALL)
    b = synthetic(tmp_path / "b", **SMALL)
    c = synthetic(tmp_path / "c", seed=1, **SMALL)
    for x, y, z in zip(a, b, c, strict=True):
        px, py, pz = (s.uns[K.UNS][K.UNS_SLIDE_PATH] for s in (x, y, z))
        assert _sha(px) == _sha(py) != _sha(pz)
        assert (x.X != y.X).nnz == 0
        np.testing.assert_array_equal(x.obsm[K.SPATIAL], y.obsm[K.SPATIAL])
        assert x.X.shape != z.X.shape or (x.X != z.X).nnz > 0


def test_cache_is_reused_checked_and_never_confused(tmp_path: Path) -> None:
    root = tmp_path / "syn"
    first = synthetic(root, **SMALL)
    tif = Path(first[0].uns[K.UNS][K.UNS_SLIDE_PATH])
    mtime = tif.stat().st_mtime_ns
    again = synthetic(root, **SMALL)
    assert tif.stat().st_mtime_ns == mtime  # reused, not rewritten
    assert (again[0].X != first[0].X).nnz == 0
    assert again[0].uns[K.UNS][K.UNS_SLIDE_PATH] == str(tif)
    maps = [s[0].uns[K.UNS]["synthetic"]["region_map"] for s in (again, first)]
    np.testing.assert_array_equal(*maps)
    # a damaged file is detected and the dataset regenerated, byte-identical
    good = _sha(tif)
    tif.write_bytes(tif.read_bytes()[:1000])
    synthetic(root, **SMALL)
    assert _sha(tif) == good
    # other arguments on the same root: a clear error, unless overwrite=True
    with pytest.raises(CacheMismatchError, match="overwrite=True"):
        synthetic(root, seed=5, **SMALL)
    other = synthetic(root, seed=5, overwrite=True, **SMALL)
    assert _sha(other[0].uns[K.UNS][K.UNS_SLIDE_PATH]) != good


def test_default_root_is_the_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCLSTEXP_CACHE_DIR", str(tmp_path / "cache"))
    sections = synthetic(n_sections=1, n_patients=1, n_spots=10, n_genes=3)
    path = Path(sections[0].uns[K.UNS][K.UNS_SLIDE_PATH])
    assert path.parent.parent == tmp_path / "cache" / "synthetic"


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"n_sections": 0}, ValueError, "n_sections"),
        ({"n_patients": 3, "n_sections": 2}, ValueError, "n_patients"),
        ({"n_spots": 2.5}, TypeError, "n_spots"),
        ({"mpp": -1.0}, ValueError, "mpp"),
        ({"spot_pitch_px": 1}, ValueError, "spot_pitch_px"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        synthetic(tmp_path, **kwargs)


def _pure_spots(adata, region: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.nonzero(adata.obsm[K.SYNTH_REGIONS][:, region] >= 0.9)[0]


def test_cell_type_shows_in_nuclear_morphology_not_in_colour(default_sections: list) -> None:
    """Generator v2: tumour, stroma and immune share their stain colours and nuclear area, and
    differ in the size of their nuclei (large oval, spindle, small round)."""
    from scipy import ndimage

    half = 25  # the spot disc's bounding box
    for adata in default_sections[:2]:
        img = tifffile.imread(adata.uns[K.UNS][K.UNS_SLIDE_PATH], key=0)
        xy = adata.obsm[K.SPATIAL].astype(int)
        colour, spread, nucleus_px = [], [], []
        for region in range(3):  # tumour, stroma, immune
            means, sizes = [], []
            for i in _pure_spots(adata, region):
                x, y = xy[i]
                patch = img[y - half : y + half, x - half : x + half]
                means.append(patch.reshape(-1, 3).mean(axis=0))
                dark = patch.min(axis=2) < 110
                _, n_objects = ndimage.label(dark)
                sizes.append(dark.sum() / max(1, n_objects))
            assert len(means) >= 10, (adata.uns[K.UNS][K.UNS_SECTION], region, len(means))
            colour.append(np.mean(means, axis=0))
            spread.append(np.std(means, axis=0))
            nucleus_px.append(np.mean(sizes))
        # mean colours differ by less than the spread of the spots within one type...
        gap = np.abs(np.asarray(colour)[:, None] - np.asarray(colour)[None]).max()
        assert gap < np.asarray(spread).mean(), (colour, spread)
        # ...while the nuclei are ordered tumour > stroma > immune, well apart
        assert nucleus_px[0] > 1.3 * nucleus_px[1] > 1.3**2 * nucleus_px[2], nucleus_px


def test_expression_follows_the_ground_truth(default_sections: list) -> None:
    """Counts depend on what lies under the spot: a ridge on the true region fractions,
    cellularity and eosin predicts held-out sections; the same fit on shuffled spots does not."""
    from sklearn.linear_model import Ridge

    truth_x = [
        np.column_stack([a.obsm[K.SYNTH_REGIONS], a.obs[K.SYNTH_CELLULARITY], a.obs[K.SYNTH_EOSIN]])
        for a in default_sections
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no zero-count spots in the synthetic data
        expr = [normalize_expression(a).X for a in default_sections]

    def mean_pcc(pred: np.ndarray, truth: np.ndarray) -> float:
        return float(
            np.nanmean([np.corrcoef(pred[:, g], truth[:, g])[0, 1] for g in range(truth.shape[1])])
        )

    for test in range(len(default_sections)):
        train = [i for i in range(len(default_sections)) if i != test]
        model = Ridge(alpha=1e-3).fit(
            np.vstack([truth_x[i] for i in train]), np.vstack([expr[i] for i in train])
        )
        assert mean_pcc(model.predict(truth_x[test]), expr[test]) > 0.45
        shuffled = np.random.default_rng(test).permutation(len(truth_x[test]))
        assert abs(mean_pcc(model.predict(truth_x[test][shuffled]), expr[test])) < 0.1


# ------------------------------------------------------------------------------ her2st download


class _Server:
    """A local HTTP server on 127.0.0.1 serving a folder, counting requests (never the internet)."""

    def __init__(self, folder: Path) -> None:
        import functools
        import http.server
        import threading

        self.requests: list[str] = []
        log = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                log.append(self.path)

        handler = functools.partial(Handler, directory=str(folder))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def her2st_server(shared_data: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    import shutil

    served = tmp_path / "served"
    src = shared_data / "her2st"
    for rel in (
        "data/ST-cnts/B1.tsv.gz",
        "data/ST-spotfiles/B1_selection.tsv",
        "data/ST-pat/lbl/B1_labeled_coordinates.tsv",
        "data/ST-cnts/B2.tsv.gz",
        "data/ST-spotfiles/B2_selection.tsv",
    ):
        (served / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, served / rel)
    server = _Server(served)
    yield server, served
    server.close()


@pytest.mark.realdata
def test_her2st_downloads_with_checksums_from_a_local_server(her2st_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from mclstexp.datasets import her2st
    from mclstexp.io import read_her2st

    server, served = her2st_server
    dest = tmp_path / "cache"
    (b1,) = her2st(dest, sections=["B1"], url=server.url)
    assert sorted(server.requests) == sorted(
        [
            "/data/ST-cnts/B1.tsv.gz",
            "/data/ST-spotfiles/B1_selection.tsv",
            "/data/ST-pat/lbl/B1_labeled_coordinates.tsv",
        ]
    )
    ref = read_her2st(served, "B1")
    assert (b1.X != ref.X).nnz == 0 and list(b1.obs[K.LABEL]) == list(ref.obs[K.LABEL])
    # second call: everything verified in place, nothing fetched
    n = len(server.requests)
    her2st(dest, sections=["B1"], url=server.url)
    assert len(server.requests) == n
    # the downloaded folder is now a local copy too, and download=False works offline
    assert her2st(dest, sections=["B1"], download=False)[0].n_obs == b1.n_obs
    # a corrupted mirror is refused and nothing unverified is kept
    gz = served / "data/ST-cnts/B2.tsv.gz"
    gz.write_bytes(gz.read_bytes()[:-10])
    with pytest.raises(ValueError, match=r"B2\.tsv\.gz: the downloaded file does not match"):
        her2st(tmp_path / "other", sections=["B2"], url=server.url, retries=0)
    assert not (tmp_path / "other/data/ST-cnts/B2.tsv.gz").exists()


def test_her2st_registry_and_errors(tmp_path: Path) -> None:
    from mclstexp.datasets import her2st
    from mclstexp.datasets._her2st import her2st_registry

    reg = her2st_registry()
    assert len([p for p in reg if "/ST-cnts/" in p]) == 35
    assert all(len(sha) == 64 for _, sha in reg.values())
    assert len([p for p in reg if "/ST-imgs/" in p]) == 5
    with pytest.raises(ValueError, match="'Z9' is not in the her2st registry"):
        her2st(tmp_path, sections=["Z9"], url="http://127.0.0.1:9/")
    with pytest.raises(FileNotFoundError, match="download=False"):
        her2st(tmp_path, sections=["B1"], download=False)
    # nothing listens on port 9 of 127.0.0.1 (discard): a clear network error naming the URL
    with pytest.raises(OSError, match=r"127\.0\.0\.1:9/data/ST-cnts/B1\.tsv\.gz: download failed"):
        her2st(tmp_path, sections=["B1"], url="http://127.0.0.1:9", retries=0)


@pytest.mark.realdata
def test_her2st_reads_a_local_copy(shared_data: Path) -> None:
    from mclstexp.datasets import her2st

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sections = her2st(shared_data / "her2st", sections=["C2", "B1"])
    assert [a.uns[K.UNS][K.UNS_SECTION] for a in sections] == ["C2", "B1"]
    assert sections[0].uns[K.UNS][K.UNS_SLIDE_PATH] is not None
