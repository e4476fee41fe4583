"""Thumbnails of large single-level slides in bounded memory (and so tissue detection, --grid).

Regression for issue #18, item 8: ``thumbnail`` decoded the whole level it resampled; a 20000^2
single-level slide took 2.7 GB (and 12 s), a 40000^2 one failed with a "size" error the caller
never passed. Each case runs in a fresh process, whose peak RSS is what is measured.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

tifffile = pytest.importorskip("tifffile")

SIDE = 20_000
TILE = 512
#: Peak RSS allowed for a thumbnail of the slide: the interpreter and its imports (~100 MB), the
#: reader's tile cache (256 MB by default) and a few bands, far below the 1.2 GB of one decoded
#: level (the whole level and its copy took about 2.7 GB before).
LIMIT_MB = 700


def _tile(y: int, x: int) -> np.ndarray:
    """A white slide with a pink disc of 'tissue' in the middle, constant per tile."""
    cy, cx, r = SIDE / 2, SIDE / 2, SIDE / 4
    inside = (y + TILE / 2 - cy) ** 2 + (x + TILE / 2 - cx) ** 2 < r * r
    colour = (200, 120, 170) if inside else (245, 245, 245)
    return np.broadcast_to(np.array(colour, np.uint8), (TILE, TILE, 3))


def _write(path: Path, *, tiled: bool) -> Path:
    if tiled:
        tiles = (_tile(y, x) for y in range(0, SIDE, TILE) for x in range(0, SIDE, TILE))
        tifffile.imwrite(
            path,
            tiles,
            shape=(SIDE, SIDE, 3),
            dtype=np.uint8,
            tile=(TILE, TILE),
            compression="zlib",
            photometric="rgb",
        )
    else:  # stripped: 64 rows per strip, given as zlib-compressed bytes (tifffile takes no
        # iterator of strip arrays)
        rows = 64

        def strips():
            for y in range(0, SIDE, rows):
                strip = np.concatenate([_tile(y, x)[:rows] for x in range(0, SIDE, TILE)], axis=1)
                yield zlib.compress(np.ascontiguousarray(strip[: min(rows, SIDE - y), :SIDE]))

        tifffile.imwrite(
            path,
            strips(),
            shape=(SIDE, SIDE, 3),
            dtype=np.uint8,
            rowsperstrip=rows,
            compression="zlib",
            photometric="rgb",
        )
    return path


@pytest.fixture(scope="module", params=["tiled", "stripped"])
def big_slide(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / f"{request.param}.tif"
    return _write(path, tiled=request.param == "tiled")


# The child's own peak RSS: VmHWM of its memory map (ru_maxrss would also count the pytest
# process the child was spawned from, which Linux carries across exec).
CHILD = """
import json, sys, time
from mclstexp.io import open_slide
from mclstexp.pp import detect_tissue, grid_centers
slide = open_slide(sys.argv[1])
t0 = time.perf_counter()
thumb = slide.thumbnail(1024)
seconds = time.perf_counter() - t0
tissue = detect_tissue(slide)
centers = grid_centers(slide, size=224, min_tissue=0.5)
print(json.dumps({
    "shape": list(thumb.shape),
    "seconds": seconds,
    "fraction": tissue.fraction,
    "n_grid": len(centers),
    "peak_mb": next(
        int(line.split()[1]) / 1024
        for line in open("/proc/self/status")
        if line.startswith("VmHWM:")
    ),
}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")
def test_thumbnail_tissue_and_grid_of_a_large_single_level_slide_in_bounded_memory(
    big_slide: Path,
) -> None:
    with tifffile.TiffFile(big_slide) as tif:
        assert len(tif.pages) == 1 and tif.pages[0].shape == (SIDE, SIDE, 3)
    assert big_slide.stat().st_size < 20 << 20  # small on disk, 1.2 GB decoded
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(big_slide)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{big_slide.name}: {result}")
    assert result["shape"] == [1024, 1024, 3]
    assert 0.15 < result["fraction"] < 0.25  # the disc covers pi / 16 of the slide
    assert result["n_grid"] > 900
    assert result["peak_mb"] < LIMIT_MB, result
