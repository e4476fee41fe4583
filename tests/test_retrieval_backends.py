"""Backends behind one interface, and neighbour aggregation against explicit oracles."""

from __future__ import annotations

import builtins
import importlib.util

import numpy as np
import pytest
import scipy.sparse as sp

from mclstexp.retrieval import ExactIndex, aggregate_neighbours, make_index
from mclstexp.retrieval.aggregate import neighbour_weights
from mclstexp.retrieval.backends import BACKENDS

EXACT = ("native", "numpy", "torch", "faiss")


def available(name: str) -> bool:
    module = {"native": "numpy", "numpy": "numpy"}.get(name, name)
    return importlib.util.find_spec(module) is not None


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    # Clustered data (as embeddings are) so approximate graphs reach high recall.
    centres = rng.standard_normal((12, 24))
    reference = centres[rng.integers(0, 12, 600)] + 0.3 * rng.standard_normal((600, 24))
    queries = centres[rng.integers(0, 12, 40)] + 0.3 * rng.standard_normal((40, 24))
    return queries.astype(np.float32), reference.astype(np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_has_the_same_interface(backend, data) -> None:
    if not available(backend):
        pytest.skip(f"{backend} is not installed")
    queries, reference = data
    index = make_index(reference[:500], backend=backend, n_threads=2)
    index.add(reference[500:])
    assert len(index) == 600
    scores, indices = index.search(queries, 10)
    assert scores.dtype == np.float32 and indices.dtype == np.int64
    assert scores.shape == indices.shape == (40, 10)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    exact_s, exact_i = ExactIndex(reference).search(queries, 10)
    if backend in EXACT:
        np.testing.assert_allclose(scores, exact_s, atol=1e-5)
        np.testing.assert_array_equal(indices, exact_i)
    else:
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(indices, exact_i, strict=True)])
        assert recall > 0.9
    with pytest.raises(ValueError, match=r"^k:"):
        index.search(queries, 0)
    with pytest.raises(ValueError, match=r"^queries:"):
        index.search(queries[:, :5], 3)


def test_faiss_and_native_give_identical_neighbours_where_faiss_is_exact() -> None:
    pytest.importorskip("faiss")
    rng = np.random.default_rng(8)
    reference = rng.standard_normal((2000, 48)).astype(np.float32)
    queries = rng.standard_normal((40, 48)).astype(np.float32)  # >= 20: faiss uses its BLAS path
    faiss_s, faiss_i = make_index(reference, backend="faiss").search(queries, 10)
    native_s, native_i = make_index(reference, backend="native").search(queries, 10)
    # This seed has no near-tie among the 11 best of any query (checked with the exact numpy
    # backend), so both exact engines must return identical neighbour lists.
    top11 = make_index(reference, backend="numpy").search(queries, 11)[0]
    assert (-np.diff(top11, axis=1)).min() > 2e-5
    np.testing.assert_array_equal(native_i, faiss_i)
    np.testing.assert_allclose(native_s, faiss_s, atol=1e-5)


def test_numpy_backend_breaks_ties_by_lower_index() -> None:
    reference = np.array([[1, 0], [0, 1], [1, 0], [2, 0]], np.float32)
    _, indices = make_index(reference, backend="numpy").search(np.array([[1.0, 0.0]]), 3)
    assert indices.tolist() == [[0, 2, 3]]


def test_unknown_backend_and_missing_library_errors(monkeypatch) -> None:
    with pytest.raises(ValueError, match=r"^backend:"):
        make_index(np.eye(2), backend="annoy")
    real_import = builtins.__import__

    def no_faiss(name, *args, **kwargs):
        if name == "faiss":
            raise ImportError("No module named 'faiss'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_faiss)
    monkeypatch.delitem(__import__("sys").modules, "faiss", raising=False)
    with pytest.raises(ImportError, match=r"mclstexp\[faiss\]"):
        make_index(np.eye(2), backend="faiss")


def test_backends_module_does_not_import_optional_libraries() -> None:
    import subprocess
    import sys

    code = (
        "import sys, numpy as np; from mclstexp.retrieval import make_index;"
        "make_index(np.eye(3), backend='native').search(np.eye(3), 1);"
        "print(sorted(m for m in ('faiss', 'hnswlib', 'usearch', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- aggregation ---------------------------------------------------------------------------------


def loop_oracle(indices, scores, values, method, queries=None, reference=None):
    out = np.zeros((len(indices), values.shape[1]))
    for i, (idx, sc) in enumerate(zip(indices, scores, strict=True)):
        if method == "mean":
            w = np.ones(len(idx))
        elif method == "similarity":
            w = np.maximum(sc.astype(np.float64), 0)
            if w.sum() == 0:
                w = np.ones(len(idx))
        else:
            p = 1 if method == "inverse_l1" else 2
            d = np.array([np.linalg.norm(reference[j] - queries[i], ord=p) for j in idx])
            w = 1.0 / d**2
        w = w / w.sum()
        out[i] = sum(wj * values[j] for wj, j in zip(w, idx, strict=True))
    return out


@pytest.mark.parametrize("method", ["mean", "similarity", "inverse_l1", "inverse_l2"])
def test_aggregation_matches_a_loop_oracle(method) -> None:
    rng = np.random.default_rng(6)
    reference = rng.standard_normal((50, 8)) * 3
    queries = rng.standard_normal((12, 8)) * 3
    values = rng.poisson(2.0, (50, 7)).astype(np.float64)
    scores, indices = ExactIndex(reference).search(queries, 9)
    got = aggregate_neighbours(
        indices, scores, values, method=method, queries=queries, reference=reference
    )
    want = loop_oracle(indices, scores, values, method, queries, reference)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    sparse = aggregate_neighbours(
        indices,
        scores,
        sp.csr_matrix(values.astype(np.float32)),
        method=method,
        queries=queries,
        reference=reference,
    )
    assert sparse.dtype == np.float32
    np.testing.assert_allclose(sparse, want, rtol=1e-5)


@pytest.mark.parametrize("method", ["inverse_l1", "inverse_l2"])
def test_exact_duplicates_share_the_weight_without_inf_or_nan(method) -> None:
    reference = np.array([[1.0, 2.0], [1.0, 2.0], [5.0, 5.0], [1.0, 2.000001]])
    queries = np.array([[1.0, 2.0], [1e-200, 0.0]])
    indices = np.array([[0, 1, 2, 3], [0, 1, 2, 3]])
    w = neighbour_weights(
        indices, np.ones((2, 4)), method=method, queries=queries, reference=reference
    )
    assert np.isfinite(w).all()
    assert w[0].tolist() == [0.5, 0.5, 0.0, 0.0]
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    # A tiny but nonzero distance is handled without overflow either.
    w = neighbour_weights(
        np.array([[0, 1]]),
        np.ones((1, 2)),
        method=method,
        queries=np.array([[0.0, 0.0]]),
        reference=np.array([[1e-300, 0.0], [1.0, 0.0]]),
    )
    np.testing.assert_allclose(w, [[1.0, 0.0]])


def test_similarity_weights_are_documented_formula() -> None:
    w = neighbour_weights(
        np.array([[0, 1, 2], [0, 1, 2]]),
        np.array([[0.6, 0.2, -0.5], [-1, -1, 0]]),
        method="similarity",
    )
    np.testing.assert_allclose(w, [[0.75, 0.25, 0.0], [1 / 3, 1 / 3, 1 / 3]])


@pytest.mark.parametrize(
    ("kwargs", "exc", "arg"),
    [
        ({"method": "median"}, ValueError, "method"),
        ({"method": "inverse_l2"}, ValueError, "queries"),
        ({"method": "inverse_l1", "queries": np.ones((2, 3))}, ValueError, "reference"),
        (
            {"method": "inverse_l2", "queries": np.ones((1, 3)), "reference": np.ones((4, 3))},
            ValueError,
            "queries",
        ),
        ({"indices": np.array([[0, 9], [1, 2]])}, ValueError, "indices"),
        ({"indices": np.array([[0, -1], [1, 2]])}, ValueError, "indices"),
        ({"indices": np.array([[0.0, 1.0], [1.0, 2.0]])}, TypeError, "indices"),
        ({"scores": np.ones((2, 3))}, ValueError, "scores"),
        ({"values": np.ones(4)}, ValueError, "values"),
    ],
)
def test_aggregation_bad_input_names_the_argument(kwargs, exc, arg) -> None:
    args = {
        "indices": np.array([[0, 1], [1, 2]]),
        "scores": np.ones((2, 2)),
        "values": np.ones((4, 3)),
    }
    args.update(kwargs)
    indices, scores, values = args.pop("indices"), args.pop("scores"), args.pop("values")
    with pytest.raises(exc, match=rf"^{arg}:"):
        aggregate_neighbours(indices, scores, values, **args)
