"""Stain normalisation (Macenko, Reinhard) against an independent numpy reference, on real H&E."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mclstexp.pp import StainNormalizationWarning, StainNormalizer

IO, ALPHA, BETA = 240.0, 1.0, 0.15

# ------------------------------------------------------------------------------------------------
# Independent numpy reference (float64), same parameters and conventions as documented in
# rust/mclstexp-core/src/stain.rs: OD = -ln((I + 1) / Io); tissue = every channel's OD >= beta;
# the two main eigenvectors of the tissue OD covariance, each oriented to a non-negative component
# sum; phi = atan2(<od, v_main>, <od, v_second>); numpy percentiles; H = larger red component.
# ------------------------------------------------------------------------------------------------


def ref_macenko_estimate(
    img: np.ndarray, io: float = IO, alpha: float = ALPHA, beta: float = BETA
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pixels = img.reshape(-1, 3).astype(np.float64)
    od = -np.log((pixels + 1.0) / io)
    od_hat = od[~np.any(od < beta, axis=1)]
    _, vectors = np.linalg.eigh(np.cov(od_hat.T))
    plane = vectors[:, 1:3].copy()  # columns: second-largest, largest eigenvalue
    plane[:, plane.sum(axis=0) < 0] *= -1.0
    proj = od_hat @ plane
    phi = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(phi, alpha), np.percentile(phi, 100.0 - alpha)
    v_min = plane @ np.array([np.cos(lo), np.sin(lo)])
    v_max = plane @ np.array([np.cos(hi), np.sin(hi)])
    he = np.stack([v_min, v_max], axis=1) if v_min[0] > v_max[0] else np.stack([v_max, v_min], 1)
    conc = np.linalg.lstsq(he, od.T, rcond=None)[0]
    max_conc = np.percentile(conc, 99, axis=1)
    return he, conc, max_conc


def ref_macenko_normalize(
    img: np.ndarray, he_ref: np.ndarray, max_ref: np.ndarray, io: float = IO
) -> tuple[np.ndarray, np.ndarray]:
    _, conc, max_conc = ref_macenko_estimate(img, io)
    conc2 = conc / (max_conc / max_ref)[:, None]
    out = io * np.exp(-he_ref @ conc2)
    out[out > 255] = 255
    return out.T.reshape(img.shape).astype(np.uint8), conc2.T.reshape(*img.shape[:-1], 2)


_RGB2XYZ = np.array(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)
_WHITE = np.array([0.95047, 1.0, 1.08883])


def ref_rgb2lab(img: np.ndarray) -> np.ndarray:
    c = img.reshape(-1, 3).astype(np.float64) / 255.0
    lin = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = lin @ _RGB2XYZ.T / _WHITE
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    return np.stack(
        [116.0 * f[:, 1] - 16.0, 500.0 * (f[:, 0] - f[:, 1]), 200.0 * (f[:, 1] - f[:, 2])], axis=1
    )


def ref_lab2rgb(lab: np.ndarray) -> np.ndarray:
    fy = (lab[:, 0] + 16.0) / 116.0
    f = np.stack([lab[:, 1] / 500.0 + fy, fy, fy - lab[:, 2] / 200.0], axis=1)
    xyz = np.where(f > 0.2068966, f**3, (f - 16.0 / 116.0) / 7.787) * _WHITE
    lin = xyz @ np.linalg.inv(_RGB2XYZ).T
    rgb = np.where(lin > 0.0031308, 1.055 * np.abs(lin) ** (1 / 2.4) - 0.055, 12.92 * lin)
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def ref_reinhard_fit(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lab = ref_rgb2lab(img)
    return lab.mean(axis=0), lab.std(axis=0)


def ref_reinhard_normalize(img: np.ndarray, mean_t: np.ndarray, std_t: np.ndarray) -> np.ndarray:
    lab = ref_rgb2lab(img)
    mean, std = lab.mean(axis=0), lab.std(axis=0)
    return ref_lab2rgb((lab - mean) / std * std_t + mean_t).reshape(img.shape)


# ------------------------------------------------------------------------------------------------
# Real data
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def target(shared_data: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(shared_data / "images" / "tiatoolbox_target_image.png") as img:
        return np.asarray(img.convert("RGB"))


@pytest.fixture(scope="module")
def her2st_patches(shared_data: Path) -> np.ndarray:
    """16 patches of 128 x 128 around spots of her2st section C2, decoded at 1/4 scale."""
    import pandas as pd
    from PIL import Image

    jpg = next((shared_data / "her2st" / "data" / "ST-imgs" / "C" / "C2").glob("*.jpg"))
    spots = pd.read_csv(
        shared_data / "her2st" / "data" / "ST-spotfiles" / "C2_selection.tsv", sep="\t"
    )
    old_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 200_000_000  # trusted 92 MP test image; restored below
    try:
        with Image.open(jpg) as img:
            full_w, full_h = img.size
            img.draft("RGB", (full_w // 4, full_h // 4))
            small = np.asarray(img.convert("RGB"))
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit
    sx, sy = small.shape[1] / full_w, small.shape[0] / full_h
    rows = spots.iloc[np.linspace(0, len(spots) - 1, 16).astype(int)]
    out = []
    for px, py in zip(rows["pixel_x"], rows["pixel_y"], strict=True):
        x = int(np.clip(px * sx - 64, 0, small.shape[1] - 128))
        y = int(np.clip(py * sy - 64, 0, small.shape[0] - 128))
        out.append(small[y : y + 128, x : x + 128])
    return np.stack(out)


@pytest.fixture(scope="module")
def cmu_patches(shared_data: Path) -> np.ndarray:
    """8 tissue patches of 224 x 224 from the CMU SVS, read with OpenSlide."""
    openslide = pytest.importorskip("openslide")
    slide = openslide.OpenSlide(str(shared_data / "wsi" / "cmu_small_region.svs"))
    try:
        # Grid boxes with 57-98 % tissue (every channel's OD >= beta), chosen once from the slide.
        boxes = [(1120, 896), (1120, 2016), (1120, 2240), (1344, 672), (896, 1568), (1344, 1120)]
        boxes += [(1568, 2240), (896, 224)]
        patches = [np.asarray(slide.read_region(b, 0, (224, 224)).convert("RGB")) for b in boxes]
    finally:
        slide.close()
    return np.stack(patches)


def _tissue_fraction(p: np.ndarray) -> float:
    od = -np.log((p.reshape(-1, 3).astype(np.float64) + 1) / IO)
    return float(np.mean(np.all(od >= BETA, axis=1)))


# ------------------------------------------------------------------------------------------------
# Macenko
# ------------------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_macenko_fit_matches_reference(target: np.ndarray) -> None:
    norm = StainNormalizer("macenko").fit(target)
    he, _, max_conc = ref_macenko_estimate(target)
    assert norm.stain_matrix_ is not None and norm.max_conc_ is not None
    np.testing.assert_allclose(norm.stain_matrix_, he, atol=1e-3)
    np.testing.assert_allclose(norm.max_conc_, max_conc, rtol=1e-3)
    # Hematoxylin first, unit columns, all-positive ODs: a physically sensible H&E target.
    np.testing.assert_allclose(np.linalg.norm(norm.stain_matrix_, axis=0), 1.0, atol=1e-9)
    assert norm.stain_matrix_[0, 0] > norm.stain_matrix_[0, 1]


@pytest.mark.realdata
@pytest.mark.parametrize("source", ["her2st_patches", "cmu_patches"])
def test_macenko_transform_matches_reference(
    source: str, target: np.ndarray, request: pytest.FixtureRequest
) -> None:
    patches = request.getfixturevalue(source)
    norm = StainNormalizer("macenko", n_threads=2).fit(target)
    out = norm.transform(patches)
    conc = norm.concentrations(patches)
    assert out.shape == patches.shape and out.dtype == np.uint8
    assert norm.n_skipped_last == 0
    assert norm.stain_matrix_ is not None and norm.max_conc_ is not None
    for i, patch in enumerate(patches):
        he_src, _, _ = ref_macenko_estimate(patch)
        ref_out, ref_conc = ref_macenko_normalize(patch, norm.stain_matrix_, norm.max_conc_)
        diff = np.abs(out[i].astype(int) - ref_out.astype(int))
        assert diff.mean() < 1.0, f"patch {i}: mean abs diff {diff.mean():.3f} grey levels"
        np.testing.assert_allclose(conc[i], ref_conc, atol=2e-3 * np.abs(ref_conc).max())
        # The patch's own stain matrix is what the reference finds too.
        own = StainNormalizer("macenko").fit(patch).stain_matrix_
        np.testing.assert_allclose(own, he_src, atol=1e-3)
    # Normalisation moves each source's stain vectors towards the target's.
    for before, after in zip(patches, out, strict=True):
        gap_before = np.abs(StainNormalizer().fit(before).stain_matrix_ - norm.stain_matrix_).max()
        gap_after = np.abs(StainNormalizer().fit(after).stain_matrix_ - norm.stain_matrix_).max()
        assert gap_after < gap_before


@pytest.mark.realdata
def test_macenko_concentrations_recompose_the_output(target: np.ndarray) -> None:
    norm = StainNormalizer("macenko").fit(target)
    patch = target[300:500, 300:500]
    conc = norm.concentrations(patch)
    assert conc.shape == (200, 200, 2) and conc.dtype == np.float32
    assert norm.stain_matrix_ is not None
    recomposed = np.minimum(IO * np.exp(-conc @ norm.stain_matrix_.T), 255).astype(np.uint8)
    assert np.abs(recomposed.astype(int) - norm.transform(patch).astype(int)).mean() < 0.05


@pytest.mark.realdata
def test_fit_on_a_set_of_patches_and_a_path(target: np.ndarray, shared_data: Path) -> None:
    tiles = target.reshape(4, 250, 4, 250, 3).transpose(0, 2, 1, 3, 4).reshape(16, 250, 250, 3)
    by_patches = StainNormalizer().fit(tiles)
    by_image = StainNormalizer().fit(target)
    by_path = StainNormalizer().fit(shared_data / "images" / "tiatoolbox_target_image.png")
    # Pooled pixels are the same pixels: the same fit.
    np.testing.assert_allclose(by_patches.stain_matrix_, by_image.stain_matrix_, atol=1e-9)
    np.testing.assert_allclose(by_path.stain_matrix_, by_image.stain_matrix_, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# Reinhard
# ------------------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_reinhard_fit_matches_reference(target: np.ndarray) -> None:
    norm = StainNormalizer("reinhard").fit(target)
    mean, std = ref_reinhard_fit(target)
    np.testing.assert_allclose(norm.lab_mean_, mean, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(norm.lab_std_, std, rtol=1e-5)


@pytest.mark.realdata
@pytest.mark.parametrize("source", ["her2st_patches", "cmu_patches"])
def test_reinhard_transform_matches_reference(
    source: str, target: np.ndarray, request: pytest.FixtureRequest
) -> None:
    patches = request.getfixturevalue(source)
    norm = StainNormalizer("reinhard", n_threads=2).fit(target)
    out = norm.transform(patches)
    assert norm.n_skipped_last == 0
    assert norm.lab_mean_ is not None and norm.lab_std_ is not None
    for i, patch in enumerate(patches):
        ref = ref_reinhard_normalize(patch, norm.lab_mean_, norm.lab_std_)
        diff = np.abs(out[i].astype(int) - ref.astype(int))
        assert diff.mean() < 1.0, f"patch {i}: mean abs diff {diff.mean():.4f}"
        assert diff.max() <= 1
    # The output's LAB statistics are the target's.
    lab = ref_rgb2lab(out[0])
    np.testing.assert_allclose(lab.mean(0), norm.lab_mean_, atol=1.0)


# ------------------------------------------------------------------------------------------------
# Patches that cannot be normalised, bad input, persistence
# ------------------------------------------------------------------------------------------------


def _degenerate_batch(real: np.ndarray) -> np.ndarray:
    size = real.shape[1:3]
    white = np.full((*size, 3), 255, np.uint8)
    black = np.zeros((*size, 3), np.uint8)
    single = np.broadcast_to(np.array([150, 60, 170], np.uint8), (*size, 3)).copy()
    rng = np.random.default_rng(0)
    background = np.clip(rng.normal(235, 3, (*size, 3)), 0, 255).astype(np.uint8)
    return np.stack([white, black, single, background, real[0]])


@pytest.mark.realdata
@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_background_black_white_single_colour_are_counted_and_unchanged(
    method: str, target: np.ndarray, cmu_patches: np.ndarray
) -> None:
    norm = StainNormalizer(method).fit(target)
    batch = _degenerate_batch(cmu_patches)
    with pytest.warns(StainNormalizationWarning, match=r"^4 of 5 patches"):
        out = norm.transform(batch)
    assert norm.n_skipped_last == 4
    assert norm.skipped_last is not None
    assert norm.skipped_last.tolist() == [True, True, True, True, False]
    np.testing.assert_array_equal(out[:4], batch[:4])
    assert not np.array_equal(out[4], batch[4])
    if method == "macenko":
        with pytest.warns(StainNormalizationWarning):
            conc = norm.concentrations(batch)
        assert np.isfinite(conc).all()
    # A clean batch resets the count and does not warn.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        norm.transform(cmu_patches[:2])
    assert norm.n_skipped_last == 0


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
@pytest.mark.parametrize(
    ("image", "why"),
    [
        (np.full((64, 64, 3), 250, np.uint8), "too little tissue"),
        (np.zeros((64, 64, 3), np.uint8), "single colour"),
        (np.broadcast_to(np.array([150, 60, 170], np.uint8), (64, 64, 3)), "single colour"),
    ],
)
def test_degenerate_target_raises_value_error_saying_why(
    method: str, image: np.ndarray, why: str
) -> None:
    with pytest.raises(ValueError, match=why):
        StainNormalizer(method).fit(image)


def test_a_target_file_that_cannot_be_fitted_is_named(tmp_path: Path) -> None:
    """Regression (sweep #38): ``--stain-target blank.tif`` said "too little tissue" without
    naming the image."""
    from PIL import Image

    path = tmp_path / "blank.png"
    Image.fromarray(np.full((64, 64, 3), 250, np.uint8)).save(path)
    for method in ("macenko", "reinhard"):
        with pytest.raises(ValueError, match=r"^\S*blank\.png: "):
            StainNormalizer(method).fit(path)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros((8, 8, 3), np.float32), "patches: expected dtype uint8"),
        (np.zeros((8, 8, 4), np.uint8), r"patches: expected shape \(H, W, 3\)"),
        (np.zeros((8, 8), np.uint8), r"patches: expected shape"),
        (np.zeros((2, 2, 8, 8, 3), np.uint8), r"patches: expected shape"),
    ],
)
def test_bad_patches_raise_value_error_naming_the_argument(bad: np.ndarray, match: str) -> None:
    norm = StainNormalizer("reinhard")
    norm.lab_mean_, norm.lab_std_ = np.array([60.0, 20, -10]), np.array([15.0, 8, 6])
    with pytest.raises(ValueError, match=match):
        norm.transform(bad)
    with pytest.raises(ValueError, match=match.replace("patches", "image")):
        StainNormalizer("macenko").fit(bad)


def test_bad_parameters_and_unfitted_use() -> None:
    with pytest.raises(ValueError, match="method"):
        StainNormalizer("vahadane")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="alpha"):
        StainNormalizer("reinhard", alpha=1.0)
    with pytest.raises(ValueError, match="alpha"):
        StainNormalizer("macenko", alpha=60).fit(np.zeros((4, 4, 3), np.uint8) + 100)
    with pytest.raises(ValueError, match="Io"):
        StainNormalizer("macenko", Io=0.5).fit(np.zeros((4, 4, 3), np.uint8) + 100)
    with pytest.raises(ValueError, match="n_threads"):
        StainNormalizer("macenko", n_threads=0)
    with pytest.raises(RuntimeError, match="not fitted"):
        StainNormalizer("macenko").transform(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="concentrations"):
        StainNormalizer("reinhard").concentrations(np.zeros((4, 4, 3), np.uint8))


@pytest.mark.realdata
@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_save_load_round_trip(method: str, target: np.ndarray, tmp_path: Path) -> None:
    norm = StainNormalizer(method, beta=0.2, min_tissue=0.05).fit(target)
    path = tmp_path / "stain.json"
    norm.save(path)
    data = json.loads(path.read_text())
    assert data["method"] == method and data["params"]["beta"] == 0.2
    loaded = StainNormalizer.load(path)
    assert loaded.to_dict() == norm.to_dict()
    patch = target[:200, :200]
    np.testing.assert_array_equal(loaded.transform(patch), norm.transform(patch))
    # Our own object pickles (DataLoader workers), the JSON file is never unpickled.
    clone = pickle.loads(pickle.dumps(norm))
    np.testing.assert_array_equal(clone.transform(patch), norm.transform(patch))


def test_load_rejects_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a JSON"):
        StainNormalizer.load(path)
    good = StainNormalizer("macenko").to_dict()
    for broken in [
        {**good, "format": "other"},
        {**good, "version": 99},
        {**good, "params": {"Io": 240}},
        {**good, "target": {"stain_matrix": [[1, 2]], "max_conc": [1, 1]}},
        {
            **good,
            "target": {"stain_matrix": [[0.6, 0.1], [0.7, 0.9], [0.4, 0.5]], "max_conc": [1, -1]},
        },
    ]:
        path.write_text(json.dumps(broken))
        with pytest.raises(ValueError, match=str(path)):
            StainNormalizer.load(path)
    with pytest.raises(FileNotFoundError):
        StainNormalizer.load(tmp_path / "missing.json")
    # A loaded target whose stains are parallel is refused by the core with a clear message.
    parallel = {
        **good,
        "target": {"stain_matrix": [[0.6, 0.6], [0.7, 0.7], [0.4, 0.4]], "max_conc": [1, 1]},
    }
    path.write_text(json.dumps(parallel))
    with pytest.raises(ValueError, match="stain_matrix"):
        StainNormalizer.load(path).transform(np.full((8, 8, 3), 100, np.uint8))


_STAINS = np.array([[0.65, 0.07], [0.70, 0.99], [0.29, 0.11]])
_MACENKO = {
    "stain_matrix": (_STAINS / np.linalg.norm(_STAINS, axis=0)).tolist(),
    "max_conc": [1.9, 1.1],
}
_REINHARD = {"lab_mean": [70.0, 15.0, -10.0], "lab_std": [15.0, 8.0, 6.0]}
ABSURD = {
    "huge LAB mean (all-black output)": ("reinhard", {"lab_mean": [1e6, 15.0, -10.0]}, "lab_mean"),
    "LAB a out of range": ("reinhard", {"lab_mean": [70.0, 400.0, -10.0]}, "lab_mean"),
    "huge LAB std": ("reinhard", {"lab_std": [1e5, 8.0, 6.0]}, "lab_std"),
    "tiny LAB std": ("reinhard", {"lab_std": [1e-9, 8.0, 6.0]}, "lab_std"),
    "tiny max_conc (all-240 output)": ("macenko", {"max_conc": [1e-9, 1e-9]}, "max_conc"),
    "huge max_conc": ("macenko", {"max_conc": [1e4, 1.0]}, "max_conc"),
    "stain vectors not unit": (
        "macenko",
        {"stain_matrix": [[6.5, 0.07], [7.0, 0.99], [2.9, 0.11]]},
        "stain_matrix",
    ),
    "negative stain vector": (
        "macenko",
        {"stain_matrix": [[-0.65, 0.07], [-0.70, 0.99], [-0.29, 0.11]]},
        "stain_matrix",
    ),
    "Io above 255": ("macenko", {"params": {"Io": 1e6}}, "Io"),
    "beta above any OD": ("reinhard", {"params": {"beta": 100.0}}, "beta"),
    "min_tissue above 1": ("reinhard", {"params": {"min_tissue": 2.0}}, "min_tissue"),
    "alpha 50 or more": ("macenko", {"params": {"alpha": 80.0}}, "alpha"),
}


@pytest.mark.parametrize("case", list(ABSURD))
def test_absurd_stain_json_is_refused_at_load_naming_the_file(case: str, tmp_path: Path) -> None:
    """Regression (issue #18, item 9): a tampered stain JSON with absurd values was accepted (huge
    LAB means gave all-black output, tiny maximum concentrations all-240)."""
    method, change, field = ABSURD[case]
    base = StainNormalizer(method).to_dict()
    base["target"] = dict(_MACENKO if method == "macenko" else _REINHARD)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(base))
    assert StainNormalizer.load(good).is_fitted  # the untampered values load
    data = json.loads(json.dumps(base))
    data["params"].update(change.get("params", {}))
    data["target"].update({k: v for k, v in change.items() if k != "params"})
    path = tmp_path / "tampered.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"tampered\.json: .*{field}"):
        StainNormalizer.load(path)


@pytest.mark.realdata
@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_single_patch_and_training_transform(method: str, target: np.ndarray) -> None:
    norm = StainNormalizer(method).fit(target)
    patch = target[100:324, 200:424]
    single = norm(patch)
    assert single.shape == patch.shape and single.dtype == np.uint8
    np.testing.assert_array_equal(single, norm.transform(patch[None])[0])
    # Non-contiguous views are accepted.
    view = target[::2, ::2][:100, :100]
    assert norm.transform(view).shape == (100, 100, 3)
    # Self-normalisation is close to identity.
    assert np.abs(norm.transform(target).astype(int) - target).mean() < 2.0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    patches=arrays(
        np.uint8, st.tuples(st.integers(1, 3), st.integers(1, 12), st.integers(1, 12), st.just(3))
    ),
    method=st.sampled_from(["macenko", "reinhard"]),
)
def test_any_patches_never_raise_nor_nan(patches: np.ndarray, method: str) -> None:
    norm = StainNormalizer(method)
    if method == "macenko":
        norm.stain_matrix_ = np.array([[0.56, 0.22], [0.72, 0.80], [0.41, 0.56]])
        norm.max_conc_ = np.array([1.97, 1.03])
    else:
        norm.lab_mean_, norm.lab_std_ = np.array([60.0, 20, -10]), np.array([15.0, 8, 6])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StainNormalizationWarning)
        out = norm.transform(patches)
        assert out.shape == patches.shape and out.dtype == np.uint8
        assert norm.skipped_last is not None
        np.testing.assert_array_equal(out[norm.skipped_last], patches[norm.skipped_last])
        if method == "macenko":
            assert np.isfinite(norm.concentrations(patches)).all()


def test_gil_is_released_during_transform() -> None:
    rng = np.random.default_rng(0)
    od = rng.uniform(0, 1.5, (64, 128, 128, 1)) * [0.65, 0.70, 0.29]
    od += rng.uniform(0, 1, (64, 128, 128, 1)) * [0.07, 0.99, 0.11]
    patches = (240 * np.exp(-od) - 1).clip(0, 255).astype(np.uint8)
    norm = StainNormalizer("macenko", n_threads=1).fit(patches[0])
    start = time.perf_counter()
    norm.transform(patches)
    alone = time.perf_counter() - start
    done = threading.Event()
    progress = 0

    def work() -> None:
        for _ in range(3):
            norm.transform(patches)
        done.set()

    worker = threading.Thread(target=work)
    worker.start()
    while not done.is_set():
        progress += 1
    worker.join()
    # With the GIL held this loop could not advance while the three native calls run.
    assert alone > 0.005
    assert progress > 1000


def test_import_pp_stain_does_not_import_torch() -> None:
    code = (
        "import sys, mclstexp.pp as pp; pp.StainNormalizer; pp.to_tensor_layout; "
        "print(int('torch' in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"


@pytest.mark.realdata
def test_from_spec_for_the_command_line(shared_data: Path, tmp_path: Path) -> None:
    image = shared_data / "images" / "tiatoolbox_target_image.png"
    assert StainNormalizer.from_spec(str(image)).method == "macenko"
    reinhard = StainNormalizer.from_spec(f"reinhard:{image}")
    assert reinhard.method == "reinhard" and reinhard.is_fitted
    reinhard.save(tmp_path / "t.json")
    assert StainNormalizer.from_spec(tmp_path / "t.json").to_dict() == reinhard.to_dict()
    with pytest.raises(FileNotFoundError, match="stain target"):
        StainNormalizer.from_spec(tmp_path / "missing.png")
