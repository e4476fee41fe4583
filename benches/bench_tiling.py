"""Tiling speed: native reader vs openslide-python vs pyvips, side by side, 2 threads.

Workloads on a 30,000 x 30,000 JPEG-tiled (256 px tiles) pyramidal TIFF, generated once from real
her2st tissue tiles (or synthetic texture when ../shared/data is absent) and cached under
``/tmp/mclstexp-bench/``:

- ``random``: 5,000 random 224 px level-0 patches (uint8 RGB arrays).
- ``grid``: every 224 px cell of a level-0 grid over the whole slide (17,689 patches).

Run either way (the build must be a release build: ``maturin develop --release``)::

    pytest benches/bench_tiling.py --benchmark-only      # pytest-benchmark tables
    python benches/bench_tiling.py                       # one table with patches/s and ratios
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

SIDE = 30_000
TILE = 256
PATCH = 224
N_RANDOM = 5_000
THREADS = 2
CACHE_DIR = Path(os.environ.get("MCLSTEXP_BENCH_DIR", "/tmp/mclstexp-bench"))
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _source_tiles(n: int = 48) -> list[np.ndarray]:
    """Real H&E tiles from a her2st section (tissue only), else synthetic texture."""
    rng = np.random.default_rng(0)
    jpgs = sorted((SHARED / "her2st/data/ST-imgs/C/C2").glob("*.jpg"))
    if jpgs:
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = None
        with Image.open(jpgs[0]) as im:
            im.draft("RGB", (im.width // 2, im.height // 2))
            img = np.asarray(im.convert("RGB"))
        tiles = []
        for _ in range(5000):
            y, x = rng.integers(0, img.shape[0] - TILE), rng.integers(0, img.shape[1] - TILE)
            t = img[y : y + TILE, x : x + TILE]
            sat = (t.max(-1).astype(int) - t.min(-1)).mean()
            if sat > 40:
                tiles.append(np.ascontiguousarray(t))
            if len(tiles) == n:
                return tiles
    yy, xx = np.mgrid[0:TILE, 0:TILE]
    return [
        np.clip(
            np.stack(
                [
                    200 + 40 * np.sin(xx / (5 + i)),
                    120 + 60 * np.cos(yy / (7 + i)),
                    180 + 30 * np.sin((xx + yy) / 9),
                ],
                -1,
            )
            + rng.normal(0, 12, (TILE, TILE, 3)),
            0,
            255,
        ).astype(np.uint8)
        for i in range(n)
    ]


def bench_slide() -> Path:
    """The benchmark slide, generated on first use (about a minute) and cached."""
    import tifffile

    path = CACHE_DIR / f"pyramid_{SIDE}_jpeg{TILE}.tif"
    if path.exists():
        return path
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tiles = _source_tiles()
    tmp = path.with_suffix(".partial")

    def tile_iter(side: int) -> Iterator[np.ndarray]:
        n = -(-side // TILE)
        for i in range(n * n):
            t = tiles[(i * 7919) % len(tiles)]
            yield t[::-1] if i % 3 == 0 else (t[:, ::-1] if i % 3 == 1 else t)

    with tifffile.TiffWriter(tmp, bigtiff=True) as tw:
        side, first = SIDE, True
        while side >= 1024:
            tw.write(
                tile_iter(side),
                shape=(side, side, 3),
                dtype=np.uint8,
                tile=(TILE, TILE),
                compression="jpeg",
                compressionargs={"level": 85},
                photometric="rgb",
                subfiletype=0 if first else 1,
            )
            side, first = side // 2, False
    tmp.rename(path)
    return path


def random_centers(n: int = N_RANDOM, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(PATCH, SIDE - PATCH, size=(n, 2)).astype(np.float64)


def grid_centers() -> np.ndarray:
    k = SIDE // PATCH
    g = (np.arange(k) * PATCH + PATCH // 2).astype(np.float64)
    yy, xx = np.meshgrid(g, g, indexing="ij")
    return np.stack([xx.ravel(), yy.ravel()], axis=1)


# --- the three readers -----------------------------------------------------------------------
def native_reader(path: Path) -> Callable[[np.ndarray], int]:
    from mclstexp.io import open_slide

    slide = open_slide(path, backend="native")
    batch = 512
    buffer = np.empty((batch, PATCH, PATCH, 3), np.uint8)  # reused, as the cache writer does

    def run(centers: np.ndarray) -> int:
        slide._reader.clear_cache()  # cold tile cache each round
        n = 0
        for a in range(0, len(centers), batch):
            part = centers[a : a + batch]
            out = buffer[: len(part)]
            n += len(slide.read_patches(part, size=PATCH, n_threads=THREADS, out=out))
        return n

    return run


def openslide_reader(path: Path) -> Callable[[np.ndarray], int]:
    import openslide

    def run(centers: np.ndarray) -> int:
        osr = openslide.OpenSlide(str(path))
        half = PATCH // 2

        def one(c: np.ndarray) -> np.ndarray:
            img = osr.read_region((int(c[0]) - half, int(c[1]) - half), 0, (PATCH, PATCH))
            return np.asarray(img)[..., :3]

        with ThreadPoolExecutor(THREADS) as ex:
            n = sum(1 for _ in ex.map(one, centers, chunksize=64))
        osr.close()
        return n

    return run


def pyvips_reader(path: Path) -> Callable[[np.ndarray], int] | None:
    try:
        import pyvips
    except (ImportError, OSError):
        return None

    def run(centers: np.ndarray) -> int:
        image = pyvips.Image.new_from_file(str(path), access="random")
        local = threading.local()
        half = PATCH // 2

        def one(c: np.ndarray) -> np.ndarray:
            if not hasattr(local, "region"):
                local.region = pyvips.Region.new(image)
            buf = local.region.fetch(int(c[0]) - half, int(c[1]) - half, PATCH, PATCH)
            return np.frombuffer(buf, np.uint8).reshape(PATCH, PATCH, 3)

        with ThreadPoolExecutor(THREADS) as ex:
            return sum(1 for _ in ex.map(one, centers, chunksize=64))

    return run


# --- pytest-benchmark ------------------------------------------------------------------------
try:
    import pytest
except ImportError:  # script mode without pytest
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture(scope="module")
    def slide_path() -> Path:
        return bench_slide()

    @pytest.mark.parametrize("reader", ["native", "openslide", "pyvips"])
    def test_random_patches(benchmark, slide_path: Path, reader: str) -> None:
        run = {"native": native_reader, "openslide": openslide_reader, "pyvips": pyvips_reader}[
            reader
        ](slide_path)
        if run is None:
            pytest.skip("pyvips is not importable (pip install pyvips pyvips-binary)")
        centers = random_centers()
        n = benchmark.pedantic(run, args=(centers,), rounds=2, iterations=1, warmup_rounds=0)
        assert n == N_RANDOM
        benchmark.extra_info["patches_per_s"] = N_RANDOM / benchmark.stats.stats.min

    @pytest.mark.parametrize("reader", ["native", "pyvips"])
    def test_grid_tiling(benchmark, slide_path: Path, reader: str) -> None:
        run = {"native": native_reader, "pyvips": pyvips_reader}[reader](slide_path)
        if run is None:
            pytest.skip("pyvips is not importable (pip install pyvips pyvips-binary)")
        centers = grid_centers()
        n = benchmark.pedantic(run, args=(centers,), rounds=1, iterations=1, warmup_rounds=0)
        assert n == len(centers)
        benchmark.extra_info["patches_per_s"] = n / benchmark.stats.stats.min


# --- script mode -----------------------------------------------------------------------------
def main(rounds: int = 3) -> None:
    """Time every reader on each workload, rounds interleaved (the machine's load drifts), and
    print the best patches/s of each with its ratio to the native reader."""
    t = time.perf_counter()
    path = bench_slide()
    print(
        f"slide: {path} ({path.stat().st_size / 2**20:.0f} MiB, ready in "
        f"{time.perf_counter() - t:.1f} s); {THREADS} threads; best of {rounds} interleaved rounds"
    )
    readers = {
        "native": native_reader(path),
        "openslide": openslide_reader(path),
        "pyvips": pyvips_reader(path),
    }
    if readers["pyvips"] is None:
        print("pyvips: not importable, skipped (pip install pyvips pyvips-binary)")
    rows = []
    for workload, centers, names in (
        ("random 5000 x 224px", random_centers(), ["native", "openslide", "pyvips"]),
        ("grid 224px (whole slide)", grid_centers(), ["native", "pyvips"]),
    ):
        names = [m for m in names if readers[m] is not None]
        best = dict.fromkeys(names, 0.0)
        for _ in range(rounds if workload.startswith("random") else max(1, rounds - 1)):
            for name in names:
                run = readers[name]
                assert run is not None
                t0 = time.perf_counter()
                run(centers)
                best[name] = max(best[name], len(centers) / (time.perf_counter() - t0))
        for name in names:
            rows.append((workload, name, best[name], best["native"] / best[name]))
    print(f"{'workload':28s} {'reader':10s} {'patches/s':>10s} {'native/x':>9s}")
    for workload, name, rate, ratio in rows:
        print(f"{workload:28s} {name:10s} {rate:10.0f} {ratio:8.2f}x")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
