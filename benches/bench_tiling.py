"""Tiling speed: native reader vs openslide-python vs pyvips, side by side, 2 threads.

Workloads on a 30,000 x 30,000 JPEG-tiled (256 px tiles) pyramidal TIFF, generated once from real
her2st tissue tiles (or synthetic texture when ../shared/data is absent) and cached under
``/tmp/mclstexp-bench/``:

- ``random``: 5,000 random 224 px level-0 patches (uint8 RGB arrays), read four ways by the
  native reader: one ``read_patches`` call for all 5,000 (the batch visits them in tile order and
  decodes each tile about once), 512-patch batches (as a cache writer reads), and a per-patch
  loop on 2 Python threads (one-patch calls, like the baselines; only the tile cache can reuse
  work); against openslide ``read_region`` and a pyvips region per patch, each on 2 threads.
- ``grid``: every 224 px cell of a level-0 grid over the whole slide (17,689 patches), native in
  512-patch batches vs pyvips.

Every reader starts each round cold (cache cleared or slide reopened); rounds are interleaved
(the machine's load drifts) and the best round of each reader counts. Tables with patches/s,
tile decodes (native) and ratios are printed. Run either way (release build first:
``maturin develop --release``)::

    pytest benches/bench_tiling.py --benchmark-only -s   # prints the tables
    python benches/bench_tiling.py                       # the same tables
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
def native_reader(path: Path, batch: int | None = 512) -> Callable[[np.ndarray], int]:
    """Native ``read_patches`` in batches of ``batch`` patches (``None``: one call for all),
    into one reused output buffer, as the cache writer does."""
    from mclstexp.io import open_slide

    slide = open_slide(path, backend="native")
    buffers: dict[int, np.ndarray] = {}

    def run(centers: np.ndarray) -> int:
        slide._reader.clear_cache()  # cold tile cache each round
        step = len(centers) if batch is None else batch
        if step not in buffers:
            buffers.clear()
            buffers[step] = np.empty((step, PATCH, PATCH, 3), np.uint8)
        n = 0
        for a in range(0, len(centers), step):
            part = centers[a : a + step]
            out = buffers[step][: len(part)]
            n += len(slide.read_patches(part, size=PATCH, n_threads=THREADS, out=out))
        return n

    run.decodes = lambda: slide._reader.tile_decodes()  # type: ignore[attr-defined]
    return run


def native_per_patch_reader(path: Path) -> Callable[[np.ndarray], int]:
    """One-patch ``read_patches`` calls from 2 Python threads (no batch reuse)."""
    from mclstexp.io import open_slide

    slide = open_slide(path, backend="native")

    def run(centers: np.ndarray) -> int:
        slide._reader.clear_cache()

        def one(c: np.ndarray) -> np.ndarray:
            return slide.read_patches(c[None], size=PATCH, n_threads=1)

        with ThreadPoolExecutor(THREADS) as ex:
            return sum(1 for _ in ex.map(one, centers, chunksize=64))

    run.decodes = lambda: slide._reader.tile_decodes()  # type: ignore[attr-defined]
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


# --- side-by-side comparison ----------------------------------------------------------------
RANDOM_READERS = {
    "native, one call": lambda p: native_reader(p, batch=None),
    "native, 512/call": lambda p: native_reader(p, batch=512),
    "native, per patch": native_per_patch_reader,
    "openslide": openslide_reader,
    "pyvips": pyvips_reader,
}
GRID_READERS = {
    "native, 512/call": lambda p: native_reader(p, batch=512),
    "pyvips": pyvips_reader,
}


def compare(
    path: Path, workload: str, centers: np.ndarray, makers: dict, rounds: int
) -> list[tuple[str, float, float | None]]:
    """Interleaved rounds of every reader on ``centers``; returns (reader, best patches/s,
    tile decodes per round or None) and prints a table with the native/baseline ratios."""
    readers = {name: make(path) for name, make in makers.items()}
    readers = {name: run for name, run in readers.items() if run is not None}
    best = dict.fromkeys(readers, 0.0)
    decodes: dict[str, float | None] = {}
    for _ in range(rounds):
        for name, run in readers.items():
            before = run.decodes() if hasattr(run, "decodes") else None
            t0 = time.perf_counter()
            n = run(centers)
            dt = time.perf_counter() - t0
            assert n == len(centers)
            best[name] = max(best[name], n / dt)
            if before is not None:
                decodes[name] = run.decodes() - before
    rows = [(name, best[name], decodes.get(name)) for name in readers]
    baselines = [b for b in ("openslide", "pyvips") if b in best]
    print(
        f"\n{workload}: {len(centers)} patches of {PATCH} px, {THREADS} threads, best of {rounds}"
    )
    head = f"{'reader':20s} {'patches/s':>10s} {'decodes':>8s}"
    print(head + "".join(f" {'x ' + b:>12s}" for b in baselines))
    for name, rate, dec in rows:
        line = f"{name:20s} {rate:10.0f} {'' if dec is None else int(dec):>8}"
        if name.startswith("native"):
            line += "".join(f" {rate / best[b]:11.2f}x" for b in baselines)
        print(line)
    sys.stdout.flush()
    return rows


# --- pytest-benchmark ------------------------------------------------------------------------
try:
    import pytest
except ImportError:  # script mode without pytest
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture(scope="module")
    def slide_path() -> Path:
        return bench_slide()

    def _record(benchmark, rows: list[tuple[str, float, float | None]]) -> None:
        rates = {name: rate for name, rate, _ in rows}
        for name, rate, dec in rows:
            benchmark.extra_info[f"{name} patches/s"] = round(rate, 1)
            if dec is not None:
                benchmark.extra_info[f"{name} decodes"] = int(dec)
            for b in ("openslide", "pyvips"):
                if name.startswith("native") and b in rates:
                    benchmark.extra_info[f"{name} / {b}"] = round(rate / rates[b], 3)

    def test_random_patches(benchmark, slide_path: Path) -> None:
        """Benchmark time = one interleaved round of every reader; see the printed table."""
        centers = random_centers()
        rows: list = []
        benchmark.pedantic(
            lambda: rows.extend(compare(slide_path, "random", centers, RANDOM_READERS, 2)),
            rounds=1,
            iterations=1,
        )
        _record(benchmark, rows)

    def test_grid_tiling(benchmark, slide_path: Path) -> None:
        """Whole-slide grid, native vs pyvips (one round each, interleaved)."""
        centers = grid_centers()
        rows: list = []
        benchmark.pedantic(
            lambda: rows.extend(
                compare(slide_path, "grid (whole slide)", centers, GRID_READERS, 1)
            ),
            rounds=1,
            iterations=1,
        )
        _record(benchmark, rows)


# --- script mode -----------------------------------------------------------------------------
def main(rounds: int = 2) -> None:
    """Print the side-by-side tables of both workloads."""
    t = time.perf_counter()
    path = bench_slide()
    print(
        f"slide: {path} ({path.stat().st_size / 2**20:.0f} MiB, ready in "
        f"{time.perf_counter() - t:.1f} s)"
    )
    compare(path, "random", random_centers(), RANDOM_READERS, rounds)
    compare(path, "grid (whole slide)", grid_centers(), GRID_READERS, max(1, rounds - 1))


if __name__ == "__main__":
    main()
