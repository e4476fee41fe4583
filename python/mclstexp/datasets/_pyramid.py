"""Write RGB levels as a tiled, JPEG-compressed pyramidal TIFF that OpenSlide and tifffile read."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

_TILE = 256


def write_pyramid_tiff(
    path: str | os.PathLike[str],
    levels: Sequence[np.ndarray],
    *,
    mpp: float,
    description: dict[str, Any] | None = None,
    quality: int = 90,
) -> None:
    """Write RGB levels as a tiled (256 px), JPEG-compressed pyramidal TIFF, one page per level.

    Level 0 is the full resolution; each further page is a reduced-resolution image
    (``NewSubfileType = 1``). Every page carries its resolution in pixels per centimetre (so readers
    recover the microns per pixel); page 0 also carries ``description`` as JSON in its
    ``ImageDescription`` with ``mpp`` added. Readable by tifffile and OpenSlide (generic TIFF).

    Parameters
    ----------
    path
        Output file.
    levels
        ``(H, W, 3)`` uint8 arrays, largest first.
    mpp
        Microns per pixel of level 0.
    description
        Extra JSON-serialisable metadata for page 0.
    quality
        JPEG quality (1-100).

    Examples
    --------
    >>> import tempfile, numpy as np, tifffile
    >>> p = tempfile.mktemp(suffix=".tif")
    >>> write_pyramid_tiff(p, [np.zeros((512, 512, 3), np.uint8)], mpp=0.5)
    >>> tifffile.TiffFile(p).pages[0].tilewidth
    256
    """
    import tifffile

    desc = json.dumps({"mclstexp": {**(description or {}), "mpp": float(mpp)}}, sort_keys=True)
    with tifffile.TiffWriter(path, bigtiff=False) as tif:
        for i, level in enumerate(levels):
            scale = levels[0].shape[1] / level.shape[1]
            ppcm = 1e4 / (mpp * scale)
            tif.write(
                level,
                tile=(_TILE, _TILE),
                compression="jpeg",
                compressionargs={"level": int(quality)},
                photometric="rgb",
                resolution=(ppcm, ppcm),
                resolutionunit="CENTIMETER",
                subfiletype=0 if i == 0 else 1,
                description=desc if i == 0 else None,
                metadata=None,
                software="mclstexp",
            )
