"""The native slide reader: parity with OpenSlide and Pillow, bad input, threads."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mclstexp import _native
from mclstexp.exceptions import SlideFormatError
from mclstexp.io import open_slide

openslide = pytest.importorskip("openslide")
tifffile = pytest.importorskip("tifffile")
Image = pytest.importorskip("PIL.Image")

MALFORMED = Path(__file__).parent / "data" / "malformed"


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _openslide_rgb(path: Path, location, level, size) -> np.ndarray:
    """OpenSlide's region composited on white (our convention for pixels outside the slide)."""
    with openslide.OpenSlide(str(path)) as osr:
        rgba = np.asarray(osr.read_region(location, level, size))
    rgb = rgba[..., :3].copy()
    rgb[rgba[..., 3] == 0] = 255
    return rgb


@pytest.fixture(scope="module")
def cmu(shared_data: Path) -> Path:
    return shared_data / "wsi" / "cmu_small_region.svs"


@pytest.fixture(scope="module")
def boxes(shared_data: Path) -> Path:
    return shared_data / "wsi" / "openslide_python_fixtures" / "boxes.tiff"


@pytest.fixture(scope="module")
def her2st_jpeg(shared_data: Path) -> Path:
    return next((shared_data / "her2st/data/ST-imgs/C/C2").glob("*.jpg"))


@pytest.fixture(scope="module")
def her2st_pyramid(her2st_jpeg: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pyramidal JPEG-tiled TIFF (256 px tiles, 3 levels) of a her2st section at 1/4 scale."""
    Image.MAX_IMAGE_PIXELS = None  # a trusted 92-megapixel test image
    with Image.open(her2st_jpeg) as im:
        im.draft("RGB", (im.width // 4, im.height // 4))
        base = np.asarray(im.convert("RGB"))[:2000, :1800]
    path = tmp_path_factory.mktemp("pyr") / "her2st_c2_pyramid.tif"
    levels = [base]
    for _ in range(2):
        prev = Image.fromarray(levels[-1])
        levels.append(np.asarray(prev.resize((prev.width // 2, prev.height // 2), Image.BOX)))
    with tifffile.TiffWriter(path) as tw:
        for i, lv in enumerate(levels):
            tw.write(
                lv,
                tile=(256, 256),
                compression="jpeg",
                compressionargs={"level": 90},
                photometric="rgb",
                subfiletype=1 if i else 0,
                resolution=(10_000 / (0.69 * 4 * 2**i), 10_000 / (0.69 * 4 * 2**i)),
                resolutionunit="CENTIMETER",
            )
    return path


@pytest.mark.realdata
def test_svs_matches_openslide(cmu: Path) -> None:
    slide = open_slide(cmu)
    assert slide.backend == "native" and slide.vendor == "aperio"
    with openslide.OpenSlide(str(cmu)) as osr:
        assert slide.level_dimensions == tuple(osr.level_dimensions)
        assert slide.mpp == pytest.approx(float(osr.properties["openslide.mpp-x"]))
    whole = slide.read_region((0, 0), 0, slide.dimensions)
    assert _mad(whole, _openslide_rgb(cmu, (0, 0), 0, slide.dimensions)) <= 1.0
    rng = np.random.default_rng(1)
    for _ in range(5):
        x, y = rng.integers(0, 1900), rng.integers(0, 2600)
        got = slide.read_region((x, y), 0, (300, 250))
        assert _mad(got, _openslide_rgb(cmu, (x, y), 0, (300, 250))) <= 1.0


@pytest.mark.realdata
def test_generic_tiff_levels_match_openslide(boxes: Path) -> None:
    slide = open_slide(boxes)
    with openslide.OpenSlide(str(boxes)) as osr:
        assert slide.level_dimensions == tuple(osr.level_dimensions)
        assert slide.level_downsamples == pytest.approx(osr.level_downsamples)
    for level, (w, h) in enumerate(slide.level_dimensions):
        got = slide.read_region((0, 0), level, (w, h))
        assert _mad(got, _openslide_rgb(boxes, (0, 0), level, (w, h))) == 0.0


@pytest.mark.realdata
def test_pyramidal_jpeg_tiff_matches_openslide(her2st_pyramid: Path) -> None:
    slide = open_slide(her2st_pyramid)
    with openslide.OpenSlide(str(her2st_pyramid)) as osr:
        assert slide.level_dimensions == tuple(osr.level_dimensions)
        assert slide.level_count == 3
    assert slide.mpp == pytest.approx(0.69 * 4, rel=1e-3)
    for level in range(slide.level_count):
        ds = round(slide.level_downsamples[level])
        loc = (256 * ds + 40 * ds, 512 * ds - 24 * ds)  # straddles tile borders
        got = slide.read_region(loc, level, (300, 280))
        assert _mad(got, _openslide_rgb(her2st_pyramid, loc, level, (300, 280))) <= 1.0
    # Patches equal OpenSlide's read_region of the same boxes.
    centers = np.array([[700.5, 900.2], [1500.0, 300.0], [10.0, 1990.0]])
    patches, inside = slide.read_patches(centers, size=224, return_mask=True)
    for c, p in zip(centers, patches, strict=True):
        x, y = int(np.floor(c[0])) - 112, int(np.floor(c[1])) - 112
        ref = _openslide_rgb(her2st_pyramid, (x, y), 0, (224, 224))
        if x >= 0 and y >= 0 and x + 224 <= 1800 and y + 224 <= 2000:
            assert _mad(p, ref) <= 1.0
    assert inside.tolist() == [True, True, False]
    # The part outside the slide is white.
    assert (patches[2, :, : 112 - 10] == 255).all()


@pytest.mark.realdata
def test_her2st_spot_patches_match_a_pillow_crop(her2st_jpeg: Path, shared_data: Path) -> None:
    import pandas as pd

    spots = pd.read_csv(shared_data / "her2st/data/ST-spotfiles/C2_selection.tsv", sep="\t")
    xy = spots[["pixel_x", "pixel_y"]].to_numpy()[:40]
    slide = open_slide(her2st_jpeg)
    assert slide.vendor == "jpeg" and slide.mpp is None
    patches = slide.read_patches(xy, size=224, n_threads=2)
    Image.MAX_IMAGE_PIXELS = None
    with Image.open(her2st_jpeg) as im:
        for (x, y), patch in zip(xy, patches, strict=True):
            fx, fy = int(np.floor(x)), int(np.floor(y))
            ref = np.asarray(im.crop((fx - 112, fy - 112, fx + 112, fy + 112)).convert("RGB"))
            assert _mad(patch, ref) <= 1.0


def test_resampled_patches_match_pillow_resize(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    base = (rng.random((400, 500, 3)) * 255).astype(np.uint8)
    base = np.asarray(Image.fromarray(base).resize((500, 400), Image.BOX))  # some structure
    path = tmp_path / "img.png"
    Image.fromarray(base).save(path)
    slide = open_slide(path, mpp=0.5)
    # 64 px at 1.0 um/px = 128 source pixels around (250, 200), downsampled by 2.
    patch = slide.read_patches([[250, 200]], size=64, mpp=1.0)[0]
    ref = Image.fromarray(base).resize((64, 64), Image.BILINEAR, box=(186, 136, 314, 264))
    assert _mad(patch, np.asarray(ref)) <= 1.0
    # At the slide's own mpp it is the plain crop.
    same = slide.read_patches([[250, 200]], size=64, mpp=0.5)[0]
    assert np.array_equal(same, base[168:232, 218:282])
    # Resizing by 1.5 (not a power of two) also matches.
    patch = slide.read_patches([[250, 200]], size=50, mpp=0.75)[0]
    ref = Image.fromarray(base).resize((50, 50), Image.BILINEAR, box=(212.5, 162.5, 287.5, 237.5))
    assert _mad(patch, np.asarray(ref)) <= 1.0


def test_out_of_bounds_patches_are_white_and_flagged(tmp_path: Path) -> None:
    img = np.full((100, 120, 3), 30, np.uint8)
    path = tmp_path / "dark.png"
    Image.fromarray(img).save(path)
    slide = open_slide(path)
    patches, inside = slide.read_patches(
        [[60, 50], [0, 0], [1000, 1000]], size=20, return_mask=True
    )
    assert inside.tolist() == [True, False, False]
    assert (patches[0] == 30).all()
    assert (patches[1, :10, :] == 255).all() and (patches[1, 10:, 10:] == 30).all()
    assert (patches[2] == 255).all()


def test_tissue_detection_and_grid(tmp_path: Path) -> None:
    from mclstexp.pp import detect_tissue, grid_centers

    img = np.full((600, 800, 3), 240, np.uint8)
    img[100:400, 200:600] = (190, 90, 170)  # pink tissue
    path = tmp_path / "slide.png"
    Image.fromarray(img).save(path)
    tissue = detect_tissue(path, max_size=200)
    assert tissue.mask.shape == (150, 200)
    assert tissue.fraction == pytest.approx(300 * 400 / (600 * 800), abs=0.02)
    centers = grid_centers(open_slide(path), size=100, tissue=tissue)
    assert len(centers) == 12  # a 4 x 3 grid of 100 px cells covers the pink block
    assert ((centers[:, 0] > 200) & (centers[:, 0] < 600)).all()
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((300, 300, 3), 245, np.uint8)).save(blank)
    from mclstexp.exceptions import NoTissueError

    with pytest.raises(NoTissueError):
        grid_centers(open_slide(blank), size=50)


@pytest.mark.parametrize("path", sorted(MALFORMED.iterdir()), ids=lambda p: p.name)
@pytest.mark.parametrize("backend", ["native", "auto"])
def test_malformed_files_raise_slide_format_error(path: Path, backend: str) -> None:
    with pytest.raises(SlideFormatError):
        slide = open_slide(path, backend=backend)  # type: ignore[arg-type]
        for level, (w, h) in enumerate(slide.level_dimensions):
            slide.read_region((0, 0), level, (min(w, 2048), min(h, 2048)))


def test_native_error_reaches_python_as_slide_format_error() -> None:
    # Straight from the extension: the error funnel's package-exception path.
    with pytest.raises(SlideFormatError, match="IFD chain loops"):
        _native.NativeSlide(str(MALFORMED / "ifd_loop.tif"))


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.svs"):
        open_slide(tmp_path / "nope.svs")
    path = tmp_path / "x.png"
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(path)
    with pytest.raises(ValueError, match="backend"):
        open_slide(path, backend="vips")  # type: ignore[arg-type]
    slide = open_slide(path)
    with pytest.raises(ValueError, match="level"):
        slide.read_region((0, 0), 3, (5, 5))
    with pytest.raises(ValueError, match="mpp"):
        slide.read_patches([[5, 5]], size=4, mpp=1.0)  # no mpp known
    with pytest.raises(ValueError, match="centers"):
        slide.read_patches([[np.nan, 5]], size=4)
    # sweep #33: a negative thread count was accepted silently
    for bad in (-1, 0):
        with pytest.raises(ValueError, match=r"n_threads: must be >= 1"):
            slide.read_patches([[5, 5]], size=4, n_threads=bad)
        with pytest.raises(ValueError, match=r"n_threads: must be >= 1"):
            slide.read_region((0, 0), 0, (5, 5), n_threads=bad)
        with pytest.raises(ValueError, match=r"n_threads: must be >= 1"):
            slide.thumbnail(8, n_threads=bad)


@pytest.mark.realdata
def test_openslide_backend_behind_the_same_interface(cmu: Path) -> None:
    native = open_slide(cmu, backend="native")
    other = open_slide(cmu, backend="openslide")
    assert other.backend == "openslide"
    assert other.level_dimensions == native.level_dimensions
    centers = [[500, 600], [1000.7, 2000.2]]
    a = native.read_patches(centers, size=64)
    b = other.read_patches(centers, size=64)
    assert _mad(a, b) <= 1.0
    a = native.read_patches(centers, size=32, mpp=1.0)
    b = other.read_patches(centers, size=32, mpp=1.0)
    assert _mad(a, b) <= 1.0


@pytest.mark.realdata
def test_read_patches_releases_the_gil(her2st_jpeg: Path) -> None:
    slide = open_slide(her2st_jpeg)
    slide.read_patches([[100, 100]], size=8)  # decode once
    centers = np.random.default_rng(0).uniform(200, 9000, size=(3000, 2))
    done = threading.Event()
    progress = 0

    def work() -> None:
        slide.read_patches(centers, size=224, n_threads=1)
        done.set()

    t = threading.Thread(target=work)
    t.start()
    time.sleep(0.02)
    while not done.is_set():
        progress += 1
    t.join()
    assert progress > 10_000


def test_auto_falls_back_to_openslide_for_unsupported_layouts(tmp_path: Path) -> None:
    img = (np.random.default_rng(0).random((300, 280, 3)) * 255).astype(np.uint8)
    path = tmp_path / "planar.tif"
    tifffile.imwrite(
        path,
        np.ascontiguousarray(img.transpose(2, 0, 1)),
        tile=(64, 64),
        compression="zlib",
        planarconfig="separate",
        photometric="rgb",
    )
    with pytest.raises(SlideFormatError, match="unsupported"):
        open_slide(path, backend="native")
    slide = open_slide(path)
    assert slide.backend == "openslide"
    np.testing.assert_array_equal(slide.read_region((10, 20), 0, (100, 90)), img[20:110, 10:110])
    patches = slide.read_patches([[150, 140]], size=32)
    np.testing.assert_array_equal(patches[0], img[124:156, 134:166])


def test_bigtiff_stripped_lzw_predictor_and_ome_mpp(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    img = np.cumsum(rng.integers(0, 3, size=(200, 150, 3)), axis=1).astype(np.uint8)
    path = tmp_path / "strips.ome.tif"
    tifffile.imwrite(
        path,
        img,
        bigtiff=True,
        rowsperstrip=16,
        compression="lzw",
        predictor=True,
        photometric="rgb",
        metadata={"axes": "YXS", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25},
    )
    slide = open_slide(path, backend="native")
    assert slide.vendor == "ome-tiff" and slide.mpp == pytest.approx(0.25)
    np.testing.assert_array_equal(slide.read_region((0, 0), 0, (150, 200)), img)
    np.testing.assert_array_equal(
        slide.read_region((-5, 190), 0, (20, 20))[:10, 5:], img[190:, :15]
    )


def test_read_patches_into_a_reused_buffer(tmp_path: Path) -> None:
    img = (np.random.default_rng(3).random((120, 100, 3)) * 255).astype(np.uint8)
    path = tmp_path / "r.png"
    Image.fromarray(img).save(path)
    slide = open_slide(path)
    centers = np.array([[50.0, 60.0], [10.0, 10.0], [90.0, 115.0]])
    ref, ref_inside = slide.read_patches(centers, size=16, return_mask=True)
    buf = np.zeros((3, 16, 16, 3), np.uint8)
    got, inside = slide.read_patches(centers, size=16, return_mask=True, out=buf)
    assert got is buf
    np.testing.assert_array_equal(buf, ref)
    np.testing.assert_array_equal(inside, ref_inside)
    with pytest.raises(ValueError, match="out"):
        slide.read_patches(centers, size=16, out=np.zeros((3, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="out"):
        slide.read_patches(centers, size=16, out=np.zeros((3, 16, 16, 3), np.float32))


def test_batch_decodes_each_tile_once_and_keeps_the_callers_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    side, tile, size = 2048, 128, 96
    img = (rng.random((side, side, 3)) * 255).astype(np.uint8)
    path = tmp_path / "tiled.tif"
    tifffile.imwrite(path, img, tile=(tile, tile), compression="jpeg", photometric="rgb")
    centers = rng.uniform(0, side, size=(1500, 2))

    def tiles_of(c: np.ndarray) -> set[tuple[int, int]]:
        x0, y0 = int(np.floor(c[0])) - size // 2, int(np.floor(c[1])) - size // 2
        xs = range(max(x0, 0) // tile, (min(x0 + size, side) - 1) // tile + 1)
        ys = range(max(y0, 0) // tile, (min(y0 + size, side) - 1) // tile + 1)
        return {(tx, ty) for tx in xs for ty in ys}

    per_patch = sum(len(tiles_of(c)) for c in centers)
    distinct = len(set().union(*(tiles_of(c) for c in centers)))
    assert distinct < 0.1 * per_patch
    # A tile cache of half the image: without a tile-ordered visit, a random batch would
    # decode most tiles again and again (about 3,000 decodes here).
    budget = 128 * tile * tile * 3
    for threads in (1, 2):
        slide = open_slide(path, backend="native", cache_bytes=budget)
        batch, inside = slide.read_patches(centers, size=size, return_mask=True, n_threads=threads)
        decodes = slide._reader.tile_decodes()
        if threads == 1:
            assert decodes == distinct
        else:  # two workers may both decode a tile where their runs meet (measured 1.02-1.10x,
            # depending on scheduling); without the tile-ordered visit it would be ~12x
            assert distinct <= decodes <= 1.5 * distinct
    # Patches come back in the caller's order: each equals its own one-patch read.
    one = open_slide(path, backend="native")
    for i in rng.permutation(len(centers))[:60]:
        ref, ok = one.read_patches(centers[i : i + 1], size=size, return_mask=True)
        np.testing.assert_array_equal(batch[i], ref[0])
        assert inside[i] == ok[0]
    # Resampled patches too (a source box of 1.5 x size pixels).
    res = open_slide(path, backend="native", mpp=0.5)
    got = res.read_patches(centers[:40], size=64, mpp=0.75)
    for i in range(0, 40, 7):
        np.testing.assert_array_equal(
            got[i], res.read_patches(centers[i : i + 1], size=64, mpp=0.75)[0]
        )


def test_read_thumbnail_gives_the_image_and_its_scale(tmp_path: Path) -> None:
    from PIL import Image

    from mclstexp.io import read_thumbnail

    path = tmp_path / "he.png"
    rgb = np.zeros((300, 600, 3), np.uint8)
    rgb[:, 300:] = (200, 100, 150)
    Image.fromarray(rgb).save(path)
    image, scale = read_thumbnail(path, max_size=150)
    assert image.shape == (75, 150, 3) and scale == 0.25
    assert tuple(image[40, 120]) == (200, 100, 150) and tuple(image[40, 10]) == (0, 0, 0)
    with pytest.raises(FileNotFoundError):
        read_thumbnail(tmp_path / "none.png")


BAD_CENTRES = {
    "(n, 3)": np.zeros((4, 3)),
    "(n,)": np.zeros(6),
    "(n, 2, 1)": np.zeros((3, 2, 1)),
    "(2, n)": np.zeros((2, 5)),
    "bool": np.ones((3, 2), bool),
    "complex": np.ones((3, 2), complex),
    "str": np.array([["1", "2"]]),
    "object": np.array([[1, None]], dtype=object),
}


@pytest.mark.parametrize("what", list(BAD_CENTRES))
def test_centres_must_be_n_by_2_real_numbers(what: str, tmp_path: Path) -> None:
    """Regression (issue #18, item 4): centres of shape (n, 3) were reshaped into 1.5 n pairs."""
    from mclstexp.pp import tile_slide

    path = tmp_path / "x.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(path)
    centres = BAD_CENTRES[what]
    with pytest.raises(ValueError, match=r"^centers: .*\(n, 2\)"):
        open_slide(path).read_patches(centres, size=4)
    ids = [str(i) for i in range(len(centres))]
    with pytest.raises(ValueError, match=r"^centers: .*\(n, 2\)"):
        tile_slide(path, centres, ids, store=tmp_path / "p.zarr", size=4, progress=False)
    # Integers and lists of numbers are real numbers.
    assert open_slide(path).read_patches(np.array([[5, 6]], np.int32), size=4).shape == (1, 4, 4, 3)
