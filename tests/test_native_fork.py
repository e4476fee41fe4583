"""Every kind of native call works again in a child forked after the parent made it.

PyTorch DataLoader workers and ``multiprocessing`` fork: a child inherits the parent's memory
but none of its threads, so a thread pool the parent started is dead in the child. The native
core runs every parallel loop on its own process-local pool, which it rebuilds after a fork; a
loop that slipped onto rayon's global pool instead hangs the child forever (issue #18, item 1:
the retrieval module's input check did). Each case below runs in the parent first (the module
fixture warms every kind of call), then in a forked child under a timeout, which must give the
parent's result.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mclstexp import _native

tifffile = pytest.importorskip("tifffile")

N_THREADS = 2
CHILD_TIMEOUT_S = 30


def _digest(*arrays: Any) -> str:
    h = hashlib.sha1()
    for a in arrays:
        if a is not None:
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _he_pixels(n: int, seed: int) -> np.ndarray:
    """H&E-like RGB pixels: two stains with random concentrations, every tenth pixel background."""
    rng = np.random.default_rng(seed)
    stains = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11]])
    conc = rng.random((n, 2)) * np.array([1.5, 1.0])
    rgb = np.clip(240.0 * np.exp(-conc @ stains) - 1.0, 0, 255).astype(np.uint8)
    rgb[::10] = (236, 238, 235)
    return rgb


class Inputs:
    """Small inputs for every kind of native call, and the parent's results."""

    def __init__(self, slide_path: Path) -> None:
        rng = np.random.default_rng(0)
        self.reference = rng.standard_normal((3000, 16)).astype(np.float32)
        self.queries = self.reference[:37] + 0.01
        self.pixels = _he_pixels(20_000, 1)
        self.patches = _he_pixels(4 * 32 * 32, 2).reshape(4, 32, 32, 3)
        self.slide_path = slide_path
        self.centers = rng.uniform(16, 240, size=(12, 2))
        n = len(self.patches)
        self.jitter = (
            rng.uniform(0.8, 1.2, n),
            rng.uniform(0.8, 1.2, n),
            rng.uniform(0.8, 1.2, n),
            rng.random(n) < 0.5,
            rng.uniform(-180, 180, n),
        )


def _index_build(x: Inputs) -> str:
    index = _native._ExactIndex(x.reference.shape[1])
    index.add(x.reference, n_threads=N_THREADS)
    return str(len(index))


def _search(x: Inputs) -> str:
    index = _native._ExactIndex(x.reference.shape[1])
    index.add(x.reference, n_threads=N_THREADS)
    return _digest(*index.search(x.queries, 5, n_threads=N_THREADS))


def _topk(x: Inputs) -> str:
    return _digest(*_native.topk_cosine(x.queries, x.reference, 5, n_threads=N_THREADS))


def _macenko(x: Inputs) -> str:
    matrix, max_conc = _native.stain_macenko_fit(x.pixels)
    out, skipped, conc = _native.stain_macenko_transform(
        x.patches, matrix, max_conc, concentrations=True, n_threads=N_THREADS
    )
    return _digest(np.array(matrix), out, skipped, conc)


def _reinhard(x: Inputs) -> str:
    mean, std = _native.stain_reinhard_fit(x.pixels)
    out, skipped = _native.stain_reinhard_transform(x.patches, mean, std, n_threads=N_THREADS)
    return _digest(np.array(mean), out, skipped)


def _read_patches(x: Inputs) -> str:
    slide = _native.NativeSlide(str(x.slide_path))
    patches, inside = slide.read_patches(x.centers, size=32, n_threads=N_THREADS)
    return _digest(patches, inside)


def _thumbnail(x: Inputs) -> str:
    slide = _native.NativeSlide(str(x.slide_path))
    return _digest(slide.thumbnail(64, n_threads=N_THREADS))


def _augment(x: Inputs) -> str:
    u8 = _native.augment_patches_uint8(x.patches, *x.jitter, n_threads=N_THREADS)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    t = _native.augment_patches_tensor(x.patches, *x.jitter, mean, std, n_threads=N_THREADS)
    return _digest(u8, t)


def _normalize(x: Inputs) -> str:
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    t = _native.normalize_to_tensor_layout(x.patches, mean, std, n_threads=N_THREADS)
    back = _native.normalize_from_tensor_layout(t, mean, std, n_threads=N_THREADS)
    return _digest(t, back)


CASES: dict[str, Callable[[Inputs], str]] = {
    "index_build": _index_build,
    "search": _search,
    "topk_cosine": _topk,
    "macenko": _macenko,
    "reinhard": _reinhard,
    "read_patches": _read_patches,
    "thumbnail": _thumbnail,
    "augment": _augment,
    "normalize": _normalize,
}


@pytest.fixture(scope="module")
def warmed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Inputs, dict[str, str]]:
    """The inputs, and every case's result in this (the parent) process: all pools are warm."""
    path = tmp_path_factory.mktemp("fork") / "tiled.tif"
    image = _he_pixels(256 * 256, 3).reshape(256, 256, 3)
    tifffile.imwrite(path, image, tile=(64, 64), compression="jpeg", photometric="rgb")
    inputs = Inputs(path)
    return inputs, {name: case(inputs) for name, case in CASES.items()}


def _child(name: str, inputs: Inputs, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    queue.put(CASES[name](inputs))


@pytest.mark.parametrize("name", list(CASES))
def test_native_call_works_in_a_forked_child(
    name: str, warmed: tuple[Inputs, dict[str, str]]
) -> None:
    inputs, expected = warmed
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child, args=(name, inputs, queue))
    child.start()
    child.join(timeout=CHILD_TIMEOUT_S)
    if child.is_alive():
        child.kill()
        child.join()
        pytest.fail(f"{name}: the forked child hung (a parallel loop outside the process pool?)")
    assert child.exitcode == 0
    assert queue.get(timeout=5) == expected[name]
