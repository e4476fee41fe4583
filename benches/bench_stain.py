"""Stain normalisation and tensor layout conversion, side by side with their baselines.

Run: ``python -m pytest benches/bench_stain.py --benchmark-only -s`` from the activated virtual
environment (a summary table of patches/s and ratios is printed at the end, with the path of the
mclstexp build it measured and the instruction set its kernels ran: ``MCLSTEXP_NO_AVX512=1`` runs
the AVX2 + FMA kernels on an AVX-512 machine). ``python -m`` matters: a bare ``pytest`` can be
another interpreter's entry point (a pyenv shim, say), which then imports another installed build
of mclstexp.
1,000 patches of 224 x 224 cut from real H&E (``../shared/data``; synthetic H&E when absent),
2 threads for everything that can use them.

Baselines: torchstain's numpy and torch backends (Macenko, Reinhard; they go patch by patch, so
their patches/s does not depend on how many are timed: ``MCLSTEXP_BENCH_BASELINE_PATCHES``, 100 by
default, keeps the run to a couple of minutes), and the fastest numpy mean/std conversions we could
write (per-channel lookup table through ``np.take``, single and two threads).
"""

from __future__ import annotations

import itertools
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import mclstexp
from mclstexp import _native
from mclstexp.pp import StainNormalizer, to_tensor_layout
from mclstexp.pp.layout import IMAGENET_MEAN, IMAGENET_STD

N_PATCHES = 1000
SIZE = 224
THREADS = 2
BASELINE_PATCHES = int(os.environ.get("MCLSTEXP_BENCH_BASELINE_PATCHES", "100"))
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

_results: dict[tuple[str, str], float] = {}


def _synthetic_he(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    od = rng.uniform(0, 1.5, (*shape, 1)) * [0.65, 0.70, 0.29]
    od = od + rng.uniform(0, 1, (*shape, 1)) * [0.07, 0.99, 0.11]
    return (240 * np.exp(-od) - 1).clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def target() -> np.ndarray:
    path = DATA / "images" / "tiatoolbox_target_image.png"
    if path.exists():
        from PIL import Image

        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    return _synthetic_he(np.random.default_rng(1), (1000, 1000))


@pytest.fixture(scope="module")
def patches() -> np.ndarray:
    """1,000 tissue patches of 224 x 224 from the CMU slide (or synthetic H&E)."""
    rng = np.random.default_rng(0)
    path = DATA / "wsi" / "cmu_small_region.svs"
    try:
        import openslide

        slide = openslide.OpenSlide(str(path))
        region = np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert("RGB"))
        slide.close()
    except Exception:  # no data or no OpenSlide: synthetic H&E
        return _synthetic_he(rng, (N_PATCHES, SIZE, SIZE))
    od = -np.log((region.astype(np.float32) + 1) / 240)
    tissue = np.all(od >= 0.15, axis=2)
    out = np.empty((N_PATCHES, SIZE, SIZE, 3), np.uint8)
    i = 0
    while i < N_PATCHES:
        y = int(rng.integers(0, region.shape[0] - SIZE))
        x = int(rng.integers(0, region.shape[1] - SIZE))
        if tissue[y : y + SIZE, x : x + SIZE].mean() >= 0.3:
            out[i] = region[y : y + SIZE, x : x + SIZE]
            i += 1
    return out


@pytest.fixture(scope="module", autouse=True)
def _summary(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or not _results:
        return
    lines: list[str] = []
    write = lines.append
    write("")
    write(
        f"stain/layout summary ({N_PATCHES} patches {SIZE}x{SIZE}, {THREADS} threads, best round)"
    )
    write(f"  mclstexp build: {Path(mclstexp.__file__).parent}")
    write(f"  native SIMD level: {_native.simd_level()} (MCLSTEXP_NO_AVX512 caps it at avx2+fma)")
    for task in ("macenko", "reinhard", "layout"):
        rows = {impl: v for (t, impl), v in _results.items() if t == task}
        if not rows:
            continue
        if task == "layout":
            base_name = max((k for k in rows if k.startswith("numpy")), key=rows.get, default=None)
        else:
            base_name = "torchstain-numpy" if "torchstain-numpy" in rows else None
        base = rows.get(base_name) if base_name else None
        for impl, rate in sorted(rows.items(), key=lambda kv: -kv[1]):
            ratio = f"  {rate / base:7.1f}x vs {base_name}" if base else ""
            write(f"  {task:9s} {impl:22s} {rate:10.0f} patches/s{ratio}")
    if capture is not None:
        with capture.global_and_fixture_disabled():
            for line in lines:
                reporter.write_line(line)
    else:
        for line in lines:
            reporter.write_line(line)


def _record(benchmark, task: str, impl: str, n: int) -> None:  # type: ignore[no-untyped-def]
    best = benchmark.stats.stats.min
    _results[(task, impl)] = n / best
    benchmark.extra_info["patches_per_s"] = n / best


# -- Macenko and Reinhard ---------------------------------------------------------------------


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_mclstexp(benchmark, method: str, target: np.ndarray, patches: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    norm = StainNormalizer(method, n_threads=THREADS).fit(target)
    warnings.simplefilter("ignore")
    benchmark.pedantic(norm.transform, args=(patches,), rounds=3, iterations=1, warmup_rounds=1)
    _record(benchmark, method, "mclstexp", len(patches))


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_torchstain_numpy(benchmark, method: str, target: np.ndarray, patches: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    torchstain = pytest.importorskip("torchstain")
    subset = patches[:BASELINE_PATCHES]
    if method == "macenko":
        norm = torchstain.normalizers.MacenkoNormalizer(backend="numpy")
        norm.fit(target)

        def run() -> None:
            for p in subset:
                norm.normalize(p, stains=False)
    else:
        norm = torchstain.normalizers.ReinhardNormalizer(backend="numpy")
        norm.fit(target)

        def run() -> None:
            for p in subset:
                norm.normalize(p)

    benchmark.pedantic(run, rounds=1, iterations=1)
    _record(benchmark, method, "torchstain-numpy", len(subset))


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_torchstain_torch(benchmark, method: str, target: np.ndarray, patches: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    torchstain = pytest.importorskip("torchstain")
    torch = pytest.importorskip("torch")
    torch.set_num_threads(THREADS)
    subset = [torch.from_numpy(p).permute(2, 0, 1).contiguous() for p in patches[:BASELINE_PATCHES]]
    tgt = torch.from_numpy(target).permute(2, 0, 1).contiguous()
    if method == "macenko":
        norm = torchstain.normalizers.MacenkoNormalizer(backend="torch")
        norm.fit(tgt)

        def run() -> None:
            with torch.inference_mode():
                for p in subset:
                    norm.normalize(p, stains=False)
    else:
        norm = torchstain.normalizers.ReinhardNormalizer(backend="torch")
        norm.fit(tgt)

        def run() -> None:
            with torch.inference_mode():
                for p in subset:
                    norm.normalize(p)

    benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
    _record(benchmark, method, "torchstain-torch", len(subset))


# -- Tensor layout conversion -----------------------------------------------------------------

_MEAN = np.asarray(IMAGENET_MEAN, np.float32)
_STD = np.asarray(IMAGENET_STD, np.float32)
_LUT = ((np.arange(256, dtype=np.float32)[None, :] / 255 - _MEAN[:, None]) / _STD[:, None]).astype(
    np.float32
)


def numpy_naive(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(((x.astype(np.float32) / 255 - _MEAN) / _STD).transpose(0, 3, 1, 2))


def numpy_lut(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Per-channel lookup table with np.take straight into the channels-first output."""
    if out is None:
        out = np.empty((x.shape[0], 3, x.shape[1], x.shape[2]), np.float32)
    for c in range(3):
        np.take(_LUT[c], x[..., c], out=out[:, c], mode="clip")
    return out


def numpy_lut_threads(x: np.ndarray) -> np.ndarray:
    """numpy_lut split over THREADS Python threads (np.take releases the GIL)."""
    out = np.empty((x.shape[0], 3, x.shape[1], x.shape[2]), np.float32)
    bounds = np.linspace(0, len(x), THREADS + 1).astype(int)
    with ThreadPoolExecutor(THREADS) as pool:
        list(
            pool.map(
                lambda ab: numpy_lut(x[ab[0] : ab[1]], out[ab[0] : ab[1]]),
                itertools.pairwise(bounds),
            )
        )
    return out


_LAYOUT_IMPLS = {
    "mclstexp": lambda x: to_tensor_layout(x, _MEAN, _STD, n_threads=THREADS),
    "numpy-naive": numpy_naive,
    "numpy-lut": numpy_lut,
    f"numpy-lut-{THREADS}threads": numpy_lut_threads,
}


@pytest.mark.parametrize("impl", list(_LAYOUT_IMPLS))
def test_layout(benchmark, impl: str, patches: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    fn = _LAYOUT_IMPLS[impl]
    want = numpy_naive(patches[:4])
    np.testing.assert_allclose(fn(patches[:4]), want, rtol=1e-6, atol=1e-6)
    benchmark.pedantic(fn, args=(patches,), rounds=5, iterations=1, warmup_rounds=1)
    _record(benchmark, "layout", impl, len(patches))
