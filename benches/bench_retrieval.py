"""Top-k cosine retrieval, every installed backend side by side (pytest-benchmark).

Run: ``pytest benches/bench_retrieval.py --benchmark-only --benchmark-group-by=param:shape``.
The larger grid and the plot are ``mclstexp bench retrieval``.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from mclstexp.retrieval import make_index
from mclstexp.retrieval.backends import BACKENDS

DIM, K, THREADS = 256, 50, 2
SHAPES = {"N=20000,Q=1000": (20_000, 1_000), "N=200000,Q=32": (200_000, 32)}


def installed(backend: str) -> bool:
    return backend in ("native", "numpy") or importlib.util.find_spec(backend) is not None


@pytest.fixture(scope="module", params=list(SHAPES))
def shape(request: pytest.FixtureRequest) -> tuple[str, np.ndarray, np.ndarray]:
    n, q = SHAPES[request.param]
    rng = np.random.default_rng(0)
    return (
        request.param,
        rng.standard_normal((n, DIM), dtype=np.float32),
        rng.standard_normal((q, DIM), dtype=np.float32),
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_search(benchmark, backend: str, shape) -> None:
    name, reference, queries = shape
    if not installed(backend):
        pytest.skip(f"{backend} not installed")
    if backend in ("hnswlib", "usearch") and len(reference) > 50_000:
        pytest.skip("graph build too slow for a benchmark at this N")
    if backend == "faiss":
        import faiss

        faiss.omp_set_num_threads(THREADS)
    from threadpoolctl import threadpool_limits

    index = make_index(reference, backend=backend, n_threads=THREADS)
    benchmark.group = name
    benchmark.extra_info["gflop"] = 2 * len(reference) * len(queries) * DIM / 1e9
    with threadpool_limits(THREADS):
        _scores, indices = benchmark.pedantic(
            index.search, args=(queries, K), rounds=3, iterations=1, warmup_rounds=0
        )
    assert indices.shape == (len(queries), K)
