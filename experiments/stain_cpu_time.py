"""CPU seconds per patch, one thread, ours vs torchstain's numpy backend, in one process.

Wall-clock benchmarks on a shared 2-core machine swing with the load; CPU time of a single-threaded
run does much less. A cross-check of the README's speed row "Macenko / Reinhard, 1,000 patches
against torchstain numpy" (measured by ``benches/bench_stain.py``) that a busy machine cannot
inflate. Run from the activated virtual environment (needs ``../shared/data``; prints the path of
the mclstexp build it measured):

    python experiments/stain_cpu_time.py
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _patches(n: int = 300, size: int = 224) -> np.ndarray:
    import openslide

    slide = openslide.OpenSlide(str(DATA / "wsi" / "cmu_small_region.svs"))
    region = np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert("RGB"))
    slide.close()
    tissue = np.all(-np.log((region.astype(np.float32) + 1) / 240) >= 0.15, axis=2)
    rng = np.random.default_rng(0)
    out: list[np.ndarray] = []
    while len(out) < n:
        y = int(rng.integers(0, region.shape[0] - size))
        x = int(rng.integers(0, region.shape[1] - size))
        if tissue[y : y + size, x : x + size].mean() >= 0.3:
            out.append(region[y : y + size, x : x + size])
    return np.stack(out)


def _rate(fn: Callable[[], object], n: int, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return n / best


def main() -> None:
    import torchstain
    from PIL import Image

    import mclstexp
    from mclstexp.pp import StainNormalizer

    print(f"mclstexp build: {Path(mclstexp.__file__).parent}")

    with Image.open(DATA / "images" / "tiatoolbox_target_image.png") as img:
        target = np.asarray(img.convert("RGB"))
    patches = _patches()
    few = patches[:40]
    warnings.simplefilter("ignore")
    for method in ("macenko", "reinhard"):
        ours = StainNormalizer(method, n_threads=1).fit(target)
        rate = _rate(lambda ours=ours: ours.transform(patches), len(patches), 3)
        if method == "macenko":
            ts = torchstain.normalizers.MacenkoNormalizer(backend="numpy")
            ts.fit(target)
            base = _rate(lambda ts=ts: [ts.normalize(p, stains=False) for p in few], len(few), 2)
        else:
            ts = torchstain.normalizers.ReinhardNormalizer(backend="numpy")
            ts.fit(target)
            base = _rate(lambda ts=ts: [ts.normalize(p) for p in few], len(few), 2)
        print(
            f"{method}: mclstexp {rate:.0f} patches per CPU-second (1 thread), "
            f"torchstain-numpy {base:.0f}, ratio {rate / base:.1f}x"
        )


if __name__ == "__main__":
    main()
