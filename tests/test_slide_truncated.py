"""A truncated or corrupt JPEG stream is a SlideFormatError naming the file, never garbage pixels.

Regression for issue #18, item 2: a her2st JPEG cut to 70 % (``head -c``) tiled without error; the
patches below the cut were grey padding and marked in bounds. Pillow refuses every file here.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from mclstexp.cli.tile import main as tile_main
from mclstexp.exceptions import SlideFormatError
from mclstexp.io import open_slide

Image = pytest.importorskip("PIL.Image")
tifffile = pytest.importorskip("tifffile")


def _jpeg_bytes(width: int = 400, height: int = 300, **save: object) -> bytes:
    """A JPEG of a textured image (so its entropy-coded data is long)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack([(xx * 0.6) % 256, (yy * 0.8) % 256, ((xx + yy) * 0.3) % 256], -1)
    img = np.clip(img + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=90, **save)
    return buf.getvalue()


def _pillow_refuses(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            im.load()
    except OSError:
        return True
    return False


CUTS = {"30%": 0.3, "70%": 0.7, "99.9%": 0.999}


@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
@pytest.mark.parametrize("cut", [*CUTS, "no EOI"])
def test_a_truncated_plain_jpeg_is_refused_naming_the_file(
    tmp_path: Path, cut: str, progressive: bool
) -> None:
    data = _jpeg_bytes(progressive=progressive)
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[:-2] if cut == "no EOI" else data[: int(len(data) * CUTS[cut])])
    assert _pillow_refuses(path)
    slide = open_slide(path)
    with pytest.raises(SlideFormatError, match=r"cut\.jpg.*(truncated|corrupt)"):
        slide.read_patches([[200, 280]], size=16)


def test_an_intact_jpeg_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "ok.jpg"
    path.write_bytes(_jpeg_bytes())
    with Image.open(path) as im:
        expected = np.asarray(im.convert("RGB"))
    got = open_slide(path).read_region((0, 0), 0, (400, 300))
    assert np.abs(got.astype(int) - expected.astype(int)).mean() < 1.0


def test_a_truncated_jpeg_tile_of_a_tiff_is_refused(tmp_path: Path) -> None:
    """The same check for the JPEG tiles of a TIFF: a tile whose byte count cuts its stream."""
    image = np.asarray(Image.open(io.BytesIO(_jpeg_bytes(256, 256))).convert("RGB"))
    path = tmp_path / "tiles.tif"
    tifffile.imwrite(path, image, tile=(128, 128), compression="jpeg", photometric="rgb")
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        count_tag = page.tags["TileByteCounts"]
        counts, where = list(page.databytecounts), count_tag.valueoffset
    raw = bytearray(path.read_bytes())
    counts[3] = counts[3] * 7 // 10  # the last tile loses 30 % of its stream
    raw[where : where + 4 * len(counts)] = np.asarray(counts, "<u4").tobytes()
    path.write_bytes(bytes(raw))
    slide = open_slide(path)
    slide.read_region((0, 0), 0, (128, 128))  # intact tiles still read
    with pytest.raises(SlideFormatError, match=r"tiles\.tif.*tile 3"):
        slide.read_region((128, 128), 0, (128, 128))


@pytest.mark.realdata
def test_a_her2st_jpeg_cut_to_70_percent_does_not_tile(shared_data: Path, tmp_path: Path) -> None:
    """The issue's reproduction: ``head -c`` 70 % of a her2st JPEG, then ``mclstexp-tile``."""
    src = next((shared_data / "her2st/data/ST-imgs/C/C2").glob("*.jpg"))
    spots = shared_data / "her2st/data/ST-spotfiles/C2_selection.tsv"
    data = src.read_bytes()
    cut = tmp_path / "C2.jpg"
    cut.write_bytes(data[: int(len(data) * 0.7)])
    with pytest.raises(SlideFormatError, match=r"C2\.jpg"):
        open_slide(cut).read_patches([[100, 100]], size=32)
    out = tmp_path / "p.zarr"
    assert tile_main([str(cut), "--spots", str(spots), "--out", str(out), "--quiet"]) == 2
