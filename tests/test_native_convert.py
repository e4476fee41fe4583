"""The native bindings' one conversion layer (``rust/mclstexp-py/src/convert.rs``): errors name
the argument and the expected shape, and the functions that always took any layout still do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mclstexp import _native

tifffile = pytest.importorskip("tifffile")

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def aperio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small tiled TIFF whose Aperio description declares 0.5 um/px."""
    path = tmp_path_factory.mktemp("convert") / "aperio.tif"
    tifffile.imwrite(
        path,
        _image(300, 400, 1),
        tile=(64, 64),
        photometric="rgb",
        description="Aperio Image Library v12 |AppMag = 20|MPP = 0.5",
    )
    return path


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: _native.normalize_to_tensor_layout(np.zeros((2, 4, 4, 4), np.uint8), MEAN, STD),
            r"^patches: expected shape \(N, H, W, 3\), got \(2, 4, 4, 4\)$",
        ),
        (
            lambda: _native.normalize_from_tensor_layout(
                np.zeros((2, 4, 4, 4), np.float32), MEAN, STD
            ),
            r"^tensors: expected shape \(N, 3, H, W\), got \(2, 4, 4, 4\)$",
        ),
        (
            lambda: _native.stain_macenko_fit(np.zeros((5, 4), np.uint8)),
            r"^image: expected shape \(n, 3\), got \(5, 4\)$",
        ),
        (
            lambda: _native.stain_reinhard_transform(
                np.zeros((2, 8, 8, 3), np.uint8)[:, ::2], (50.0, 0.0, 0.0), (10.0, 5.0, 5.0)
            ),
            r"^patches: must be a C-contiguous array",
        ),
        (
            lambda: _native.tissue_mask(np.zeros((4, 4, 4), np.uint8)),
            r"^image: expected shape \(h, w, 3\), got \(4, 4, 4\)$",
        ),
        (
            lambda: _native.resize_rgb(np.zeros((4, 4, 2), np.uint8), 2, 2),
            r"^image: expected shape \(h, w, 3\)",
        ),
        (
            lambda: _native.resize_rgb(np.zeros((4, 4, 3), np.uint8), 0, 2),
            r"^size: the output must be at least 1 x 1 pixels, got 0 x 2$",
        ),
        (
            lambda: _native._ExactIndex(4).add(np.zeros((3, 8), np.float32)[:, ::2]),
            r"^reference: must be a C-contiguous array",
        ),
        (
            lambda: _native.topk_cosine(
                np.zeros((2, 3), np.float32), np.ones((5, 4), np.float32), 1
            ),
            r"^queries: has 3 columns but reference has 4",
        ),
        (
            lambda: _native.augment_patches_uint8(
                np.zeros((2, 8, 8, 3), np.uint8),
                *(np.ones(2),) * 3,
                np.zeros(2, bool),
                np.zeros(2),
                out=np.zeros((2, 8, 9, 3), np.uint8),
            ),
            r"^out: expected shape \(N, 8, 8, 3\), got \(2, 8, 9, 3\)$",
        ),
        (
            lambda: _native.augment_patches_uint8(
                np.zeros((2, 8, 8, 3), np.uint8),
                *(np.ones(2),) * 3,
                np.zeros(2, bool),
                np.zeros(2),
                indices=np.array([0, -1]),
            ),
            r"^indices: must be >= 0, got -1$",
        ),
    ],
)
def test_bad_arrays_raise_value_error_naming_the_argument(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_read_patches_checks_centers_and_out(aperio: Path) -> None:
    slide = _native.NativeSlide(str(aperio))
    with pytest.raises(ValueError, match=r"^centers: expected shape \(n, 2\), got \(4, 3\)$"):
        slide.read_patches(np.zeros((4, 3)), size=8)
    with pytest.raises(
        ValueError, match=r"^out: expected shape \(2, 8, 8, 3\), got \(2, 8, 8, 4\)"
    ):
        slide.read_patches(np.zeros((2, 2)), size=8, out=np.zeros((2, 8, 8, 4), np.uint8))
    out = np.zeros((2, 8, 16, 3), np.uint8)[:, :, ::2]
    with pytest.raises(ValueError, match=r"^out: must be a C-contiguous array"):
        slide.read_patches(np.zeros((2, 2)), size=8, out=out)


def test_any_layout_still_accepted_where_it_always_was(aperio: Path) -> None:
    img = _image(40, 60, 2)
    strided = img[:, ::2]  # a view: not C-contiguous
    assert not strided.flags.c_contiguous
    dense = np.ascontiguousarray(strided)
    np.testing.assert_array_equal(
        _native.resize_rgb(strided, 7, 9), _native.resize_rgb(dense, 7, 9)
    )
    m1, t1 = _native.tissue_mask(strided)
    m2, t2 = _native.tissue_mask(dense)
    np.testing.assert_array_equal(m1, m2)
    assert t1 == t2
    mask = np.random.default_rng(3).random((20, 30)) < 0.6
    np.testing.assert_array_equal(
        _native.grid_centers(300, 200, 20.0, mask.T.copy().T),
        _native.grid_centers(300, 200, 20.0, np.ascontiguousarray(mask)),
    )
    slide = _native.NativeSlide(str(aperio))
    centers = np.random.default_rng(4).uniform(0, 300, (6, 4))[:, ::2]
    assert not centers.flags.c_contiguous
    a = slide.read_patches(centers, size=16)
    b = slide.read_patches(np.ascontiguousarray(centers), size=16)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_read_patches_defaults_to_the_slides_own_mpp(aperio: Path) -> None:
    slide = _native.NativeSlide(str(aperio))
    assert slide.mpp == (0.5, 0.5)
    centers = np.array([[100.0, 120.0], [250.5, 60.2]])
    own = slide.read_patches(centers, size=24, mpp=0.8)
    given = slide.read_patches(centers, size=24, mpp=0.8, slide_mpp=0.5)
    np.testing.assert_array_equal(own[0], given[0])
    other = slide.read_patches(centers, size=24, mpp=0.8, slide_mpp=0.4)
    assert not np.array_equal(own[0], other[0])


def test_fortran_ordered_arrays_are_refused_or_read_in_c_order(aperio: Path) -> None:
    # A Fortran-ordered array is contiguous, but not row-major: the bindings once read it as if
    # it were, silently scrambling it (queries, patches, parameters, outputs alike).
    rng = np.random.default_rng(5)
    reference = rng.standard_normal((50, 4)).astype(np.float32)
    queries = np.asfortranarray(rng.standard_normal((6, 4)).astype(np.float32))
    assert not queries.flags.c_contiguous
    with pytest.raises(ValueError, match=r"^queries: must be a C-contiguous array"):
        _native.topk_cosine(queries, reference, 3)
    patches = np.asfortranarray(rng.integers(0, 256, (2, 5, 6, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"^patches: must be a C-contiguous array"):
        _native.normalize_to_tensor_layout(patches, MEAN, STD)
    out = np.asfortranarray(np.zeros((2, 5, 6, 3), np.uint8))
    with pytest.raises(ValueError, match=r"^out: must be a C-contiguous array"):
        _native.augment_patches_uint8(
            np.ascontiguousarray(patches),
            *(np.ones(2),) * 3,
            np.zeros(2, bool),
            np.zeros(2),
            out=out,
        )
    # Where any layout is accepted, a Fortran-ordered array is copied in C order.
    img = np.asfortranarray(_image(30, 20, 6))
    np.testing.assert_array_equal(
        _native.resize_rgb(img, 9, 7), _native.resize_rgb(np.ascontiguousarray(img), 9, 7)
    )
    centers = np.asfortranarray(rng.uniform(0, 300, (5, 2)))
    slide = _native.NativeSlide(str(aperio))
    np.testing.assert_array_equal(
        slide.read_patches(centers, size=8)[0],
        slide.read_patches(np.ascontiguousarray(centers), size=8)[0],
    )
