"""Small valid slides: the fuzz target's seed corpus (fuzz/seeds/, not tracked) and the inputs of
the mutation test ``tests/test_slide_mutations.py``, which imports :func:`seed_files`.

Run from the repository root: ``python fuzz/make_seeds.py``. The malformed regression files in
tests/data/malformed/ are seeds too (see fuzz/README.md).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

OUT = Path(__file__).parent / "seeds"


def seed_files() -> dict[str, bytes]:
    """File name -> bytes of one small valid file per format the native reader handles."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:40]
    img = np.stack([xx * 6, yy * 5, (xx + yy) * 3], -1).astype(np.uint8)
    img = np.clip(img + rng.integers(0, 20, img.shape), 0, 255).astype(np.uint8)
    grey = img[..., 0].copy()
    seeds: dict[str, bytes] = {}

    def tif(name: str, data: np.ndarray, pyramid: bool = False, **kw) -> None:
        buf = io.BytesIO()
        with tifffile.TiffWriter(buf, bigtiff=kw.pop("bigtiff", False)) as tw:
            tw.write(data, **kw)
            if pyramid:
                tw.write(data[::2, ::2], subfiletype=1, **kw)
        seeds[name] = buf.getvalue()

    tif("jpeg_ycbcr_tiled_pyramid.tif", img, True, tile=(16, 16), compression="jpeg")
    tif("jpeg_rgb_tiled.tif", img, tile=(16, 16), compression="jpeg", photometric="rgb")
    tif("lzw_tiled_predictor.tif", img, tile=(16, 16), compression="lzw", predictor=True)
    tif("deflate_stripped.tif", img, compression="zlib", rowsperstrip=10)
    tif("none_stripped_grey.tif", grey, photometric="minisblack", rowsperstrip=7)
    tif("bigtiff_tiled.tif", img, True, tile=(16, 16), compression="zlib", bigtiff=True)
    tif(
        "aperio_like.svs",
        img,
        True,
        tile=(16, 16),
        compression="jpeg",
        photometric="rgb",
        description="Aperio Image Library v12\n40x48 (16x16) JPEG/RGB Q=70|AppMag = 20|MPP = 0.5",
    )
    tif(
        "ome.ome.tif",
        img,
        tile=(16, 16),
        compression="zlib",
        description='<OME><Image><Pixels PhysicalSizeX="0.25" PhysicalSizeY="0.25"></Pixels>'
        "</Image></OME>",
    )
    for fmt, name in (("JPEG", "plain.jpg"), ("PNG", "plain.png")):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format=fmt)
        seeds[name] = buf.getvalue()
    return seeds


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, data in seed_files().items():
        (OUT / name).write_bytes(data)
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
