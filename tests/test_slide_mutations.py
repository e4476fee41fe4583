"""Mutated slides of every format the native reader handles: errors are fine, a panic is a bug.

The valid inputs are generated (``fuzz/make_seeds.py``, the fuzz target's seed corpus), then
mutated the way a fuzzer starts (bit flips, interesting values, truncation, block copies) and
read the way the tiler reads: regions across the edges of every level, plain and resampled
patches, a thumbnail. A Rust panic reaches Python as ``pyo3_runtime.PanicException``, a
``BaseException`` that the ``except Exception`` below does not swallow, so it fails the test.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from mclstexp.io import open_slide

MAKE_SEEDS = Path(__file__).parents[1] / "fuzz" / "make_seeds.py"
MUTATIONS_PER_SEED = 60


def _seed_files() -> dict[str, bytes]:
    spec = importlib.util.spec_from_file_location("make_seeds", MAKE_SEEDS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.seed_files()


SEEDS = _seed_files()


def _mutate(rng: np.random.Generator, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(1 + int(rng.integers(4))):
        if not data:
            break
        i = int(rng.integers(len(data)))
        kind = int(rng.integers(6))
        if kind == 0:
            data[i] ^= 1 << int(rng.integers(8))
        elif kind == 1:
            data[i] = int(rng.choice([0x00, 0xFF, 0x7F, 0x80, 0x01, 0xFE]))
        elif kind == 2:
            word = rng.integers(0, 2**32, dtype=np.uint64).astype("<u4").tobytes()
            end = min(i + 4, len(data))
            data[i:end] = word[: end - i]
        elif kind == 3:
            del data[max(i, 8) :]
        elif kind == 4:
            a, n = int(rng.integers(len(data))), 1 + int(rng.integers(64))
            block = data[a : a + n]
            end = min(i + len(block), len(data))
            data[i:end] = block[: end - i]
        else:
            data[i] = (data[i] + int(rng.integers(16)) - 8) % 256
    return bytes(data)


def _read_like_the_tiler(path: Path) -> None:
    slide = open_slide(path, backend="native", mpp=0.25, cache_bytes=4 << 20)
    dims = slide.level_dimensions
    for level, (w, h) in enumerate(dims[:4]):
        for x, y in ((0, 0), (-7, -5), (w // 2 - 8, h // 2 - 8), (w - 9, h - 9), (w + 3, h + 3)):
            scale = slide.level_downsamples[level]
            slide.read_region((int(x * scale), int(y * scale)), level, (17, 17), n_threads=1)
    w0, h0 = dims[0]
    centers = np.array([[8.0, 8.0], [w0 / 2, h0 / 2], [w0 - 1.0, h0 - 1.0]])
    slide.read_patches(centers, size=12, level=len(dims) - 1, n_threads=1)
    slide.read_patches(centers, size=12, mpp=0.7, n_threads=1)
    if dims[-1][0] * dims[-1][1] <= 1 << 22:
        slide.thumbnail(32, n_threads=1)


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seed_is_a_readable_slide(name: str, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_bytes(SEEDS[name])
    _read_like_the_tiler(path)  # the unmutated seed reads without any error


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_mutated_seeds_raise_errors_never_panic(name: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(sorted(SEEDS).index(name))
    path = tmp_path / name
    errors = 0
    for _ in range(MUTATIONS_PER_SEED):
        path.write_bytes(_mutate(rng, SEEDS[name]))
        try:
            _read_like_the_tiler(path)
        except Exception:  # any error is fine; a PanicException is not an Exception
            errors += 1
    assert errors > 0  # the mutations do reach the reader's error paths
