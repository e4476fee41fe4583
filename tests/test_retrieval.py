"""Exact top-k cosine retrieval: oracle parity (hypothesis), contracts, errors, GIL, persistence."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mclstexp import _native
from mclstexp.retrieval import ExactIndex, topk_cosine

TOL = 1e-5


def oracle_scores(queries: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Float64 cosine of every query with every reference row; zero rows score 0."""

    def norm(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32).astype(np.float64)
        n = np.linalg.norm(x, axis=1, keepdims=True)
        return np.divide(x, n, out=np.zeros_like(x), where=n > 0)

    return norm(queries) @ norm(reference).T


def check_against_oracle(
    scores: np.ndarray, indices: np.ndarray, queries: np.ndarray, reference: np.ndarray, k: int
) -> None:
    """Returned scores are the oracle's for those indices, the i-th is the oracle's i-th best,
    well-separated ranks carry the oracle's index, and identical rows come lower index first."""
    assert scores.dtype == np.float32 and indices.dtype == np.int64
    assert scores.shape == indices.shape == (len(queries), k)
    full = oracle_scores(queries, reference)
    ref32 = np.asarray(reference, np.float32)
    for qi in range(len(queries)):
        s = full[qi]
        order = np.lexsort((np.arange(len(s)), -s))
        idx, sc = indices[qi], scores[qi].astype(np.float64)
        assert len(set(idx.tolist())) == k, "an index is returned twice"
        np.testing.assert_allclose(sc, s[idx], atol=TOL, rtol=0)
        np.testing.assert_allclose(s[idx], s[order[:k]], atol=2 * TOL, rtol=0)
        assert np.all(np.diff(sc) <= 0), "not sorted best first"
        gaps = -np.diff(s[order])
        for i in range(k):
            lo = gaps[i - 1] if i > 0 else np.inf
            hi = gaps[i] if i < len(gaps) else np.inf
            if lo > 2 * TOL and hi > 2 * TOL:
                assert idx[i] == order[i], f"query {qi} rank {i}"
        for i, j in enumerate(idx):
            same = np.flatnonzero((ref32[:j] == ref32[j]).all(axis=1))
            for lower in same:
                pos = np.flatnonzero(idx == lower)
                assert len(pos) == 1 and pos[0] < i, f"duplicate {lower} of {j} not before it"


def unit_floats() -> st.SearchStrategy[float]:
    return st.floats(-1, 1, width=32, allow_nan=False)


@st.composite
def problems(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int]:
    n = draw(st.integers(1, 60))
    d = draw(st.integers(1, 24))
    q = draw(st.integers(1, 14))
    reference = draw(arrays(np.float32, (n, d), elements=unit_floats()))
    queries = draw(arrays(np.float32, (q, d), elements=unit_floats()))
    k = draw(st.integers(1, n))
    return queries, reference, k


@st.composite
def adversarial(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int]:
    """Few distinct directions: exact duplicates, scaled copies (cosine ties) and
    near-duplicates (one ulp-scale perturbation)."""
    d = draw(st.integers(1, 12))
    base = draw(arrays(np.float32, (draw(st.integers(1, 4)), d), elements=unit_floats()))
    picks = draw(st.lists(st.integers(0, len(base) - 1), min_size=1, max_size=50))
    kinds = draw(
        st.lists(
            st.sampled_from(["dup", "scaled", "near"]), min_size=len(picks), max_size=len(picks)
        )
    )
    rows = []
    for p, kind in zip(picks, kinds, strict=True):
        row = base[p].copy()
        if kind == "scaled":
            row = row * np.float32(3.0)
        elif kind == "near":
            row = np.nextafter(row, np.float32(2.0))
        rows.append(row)
    reference = np.stack(rows).astype(np.float32)
    queries = np.concatenate([base, draw(arrays(np.float32, (3, d), elements=unit_floats()))])
    k = draw(st.integers(1, len(reference)))
    return queries, reference, k


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(), st.integers(1, 3))
def test_random_data_matches_float64_oracle(problem, n_threads) -> None:
    queries, reference, k = problem
    scores, indices = topk_cosine(queries, reference, k, n_threads=n_threads)
    check_against_oracle(scores, indices, queries, reference, k)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(adversarial())
def test_duplicates_ties_and_near_duplicates_match_oracle(problem) -> None:
    queries, reference, k = problem
    scores, indices = ExactIndex(reference, n_threads=2).search(queries, k)
    check_against_oracle(scores, indices, queries, reference, k)


def test_exact_ties_go_to_the_lower_index() -> None:
    reference = np.array([[1, 0], [0, 1], [2, 0], [1, 0], [0, 3]], np.float32)
    scores, indices = topk_cosine(np.array([[1.0, 0.0], [0.0, 1.0]]), reference, 5)
    assert indices.tolist() == [[0, 2, 3, 1, 4], [1, 4, 0, 2, 3]]
    assert scores[0].tolist() == [1, 1, 1, 0, 0]


def test_d1_and_k_equals_n_and_many_query_blocks() -> None:
    rng = np.random.default_rng(1)
    reference = rng.standard_normal((300, 1)).astype(np.float32)
    queries = rng.standard_normal((7, 1)).astype(np.float32)
    check_against_oracle(*topk_cosine(queries, reference, 300), queries, reference, 300)
    # More query blocks than threads (the query-parallel path) and a partial last panel.
    reference = rng.standard_normal((501, 16)).astype(np.float32)
    queries = rng.standard_normal((1000, 16)).astype(np.float32)
    scores, indices = topk_cosine(queries, reference, 7, n_threads=2)
    check_against_oracle(scores, indices, queries, reference, 7)
    one = topk_cosine(queries, reference, 7, n_threads=1)
    np.testing.assert_array_equal(one[1], indices)
    np.testing.assert_array_equal(one[0], scores)


def test_zero_vectors_score_zero_not_nan() -> None:
    reference = np.array([[0, 0, 0], [1, 0, 0], [-1, 0, 0]], np.float32)
    scores, indices = topk_cosine(np.zeros((1, 3)), reference, 3)
    assert scores.tolist() == [[0, 0, 0]] and indices.tolist() == [[0, 1, 2]]
    scores, indices = topk_cosine(np.array([[5.0, 0, 0]]), reference, 3)
    assert scores.tolist() == [[1, 0, -1]] and indices.tolist() == [[1, 0, 2]]


def test_any_real_dtype_is_converted_and_results_are_owned() -> None:
    ref64 = np.arange(12, dtype=np.float64).reshape(4, 3)
    ints = np.arange(12, dtype=np.int32).reshape(4, 3)
    a = topk_cosine(ref64[:2], ref64, 2)
    b = topk_cosine(ints[:2], ints, 2)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0], b[0])
    # Non-contiguous input works too.
    c = topk_cosine(np.asfortranarray(ref64[:2]), ref64[:, :][::1], 2)
    np.testing.assert_array_equal(a[1], c[1])
    assert a[0].flags.owndata or a[0].base is not None


GOOD = np.eye(3, dtype=np.float32)


@pytest.mark.parametrize(
    ("call", "exc", "arg"),
    [
        (lambda: ExactIndex(np.ones(3)), ValueError, "reference"),
        (lambda: ExactIndex(np.ones((0, 3))), ValueError, "reference"),
        (lambda: ExactIndex(np.ones((3, 0))), ValueError, "reference"),
        (lambda: ExactIndex(np.array([[1.0, np.nan]])), ValueError, "reference"),
        (lambda: ExactIndex(np.array([["a", "b"]])), TypeError, "reference"),
        (lambda: ExactIndex(GOOD, metric="l2"), ValueError, "metric"),
        (lambda: ExactIndex(GOOD, n_threads=0), ValueError, "n_threads"),
        (lambda: ExactIndex(GOOD).search(np.ones((2, 4)), 1), ValueError, "queries"),
        (lambda: ExactIndex(GOOD).search(np.ones((0, 3)), 1), ValueError, "queries"),
        (lambda: ExactIndex(GOOD).search(np.ones((1, 3, 1)), 1), ValueError, "queries"),
        (lambda: ExactIndex(GOOD).search(np.array([[1, np.inf, 0]]), 1), ValueError, "queries"),
        (lambda: ExactIndex(GOOD).search(GOOD, 0), ValueError, "k"),
        (lambda: ExactIndex(GOOD).search(GOOD, 4), ValueError, "k"),
        (lambda: ExactIndex(GOOD).search(GOOD, 1.5), TypeError, "k"),
        (lambda: ExactIndex(GOOD).search(GOOD, 1, n_threads=0), ValueError, "n_threads"),
        (lambda: ExactIndex(GOOD).add(np.ones((2, 2))), ValueError, "reference"),
        (lambda: topk_cosine(np.ones((1, 2)), GOOD, 1), ValueError, "queries"),
        (lambda: topk_cosine(GOOD, GOOD, -1), ValueError, "k"),
        (lambda: topk_cosine(GOOD, np.array([[1e39, 0, 0]]), 1), ValueError, "reference"),
    ],
)
def test_bad_input_names_the_argument(call, exc, arg) -> None:
    with pytest.raises(exc, match=rf"^{arg}:"):
        call()


def test_native_layer_reports_bad_arguments_too() -> None:
    with pytest.raises(ValueError, match=r"^k:"):
        _native.topk_cosine(GOOD, GOOD, 0)
    with pytest.raises(ValueError, match=r"^queries:"):
        _native.topk_cosine(np.ones((1, 2), np.float32), GOOD, 1)
    with pytest.raises(ValueError, match=r"^queries:.*NaN"):
        _native.topk_cosine(np.full((1, 3), np.nan, np.float32), GOOD, 1)


def test_add_appends_with_continuing_indices() -> None:
    rng = np.random.default_rng(2)
    data = rng.standard_normal((80, 10)).astype(np.float32)
    index = ExactIndex(data[:33])
    index.add(data[33:])
    assert len(index) == 80 and index.dim == 10
    queries = rng.standard_normal((5, 10))
    got = index.search(queries, 80)
    want = topk_cosine(queries, data, 80)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])
    assert "n_rows=80" in repr(index)


def test_save_load_round_trip_and_documented_format(tmp_path) -> None:
    rng = np.random.default_rng(3)
    data = rng.standard_normal((45, 6)).astype(np.float32)
    index = ExactIndex(data[:20])
    index.add(data[20:])
    path = tmp_path / "ref.mclidx"
    index.save(path)
    raw = path.read_bytes()
    assert raw[:8] == b"MCLSTIDX" and len(raw) == 32 + 4 * 45 * 6
    rows = np.fromfile(path, "<f4", offset=32).reshape(45, 6)
    expected = data / np.linalg.norm(data, axis=1, keepdims=True)
    np.testing.assert_allclose(rows, expected, atol=1e-6)
    loaded = ExactIndex.load(str(path))
    queries = rng.standard_normal((9, 6))
    for a, b in zip(index.search(queries, 10), loaded.search(queries, 10), strict=True):
        np.testing.assert_array_equal(a, b)


def test_corrupt_or_missing_index_files_raise_oserror_naming_the_file(tmp_path) -> None:
    path = tmp_path / "ref.mclidx"
    ExactIndex(GOOD).save(path)
    good = path.read_bytes()
    path.write_bytes(good[:-3])
    with pytest.raises(OSError, match="truncated or corrupt") as info:
        ExactIndex.load(path)
    assert info.value.filename == str(path)
    huge = bytearray(good)
    huge[16:24] = (2**62).to_bytes(8, "little")
    path.write_bytes(bytes(huge))
    with pytest.raises(OSError, match="truncated or corrupt"):
        ExactIndex.load(path)
    path.write_bytes(b"PK\x03\x04 not an index at all, just bytes")
    with pytest.raises(OSError, match="magic"):
        ExactIndex.load(path)
    nan = bytearray(good)
    nan[32:36] = np.float32(np.nan).tobytes()
    path.write_bytes(bytes(nan))
    with pytest.raises(OSError, match="non-finite"):
        ExactIndex.load(path)
    with pytest.raises(FileNotFoundError):
        ExactIndex.load(tmp_path / "missing.mclidx")


def test_gil_is_released_during_search() -> None:
    rng = np.random.default_rng(4)
    index = ExactIndex(rng.standard_normal((60_000, 64)).astype(np.float32), n_threads=1)
    queries = rng.standard_normal((600, 64)).astype(np.float32)
    done = threading.Event()
    elapsed = []

    def search() -> None:
        t0 = time.perf_counter()
        index.search(queries, 10)
        elapsed.append(time.perf_counter() - t0)
        done.set()

    worker = threading.Thread(target=search)
    progress = 0
    worker.start()
    while not done.is_set():
        progress += 1
    worker.join()
    # With the GIL held during the search this loop could only run between bytecode switches.
    assert elapsed[0] > 0.02
    assert progress > 10_000


def test_add_while_searching_waits_instead_of_failing() -> None:
    """Regression (issue #18, item 10): ``add`` during a ``search`` on another thread (both
    release the GIL) raised ``RuntimeError: Already borrowed``; now ``add`` waits for the
    searches and searches run alongside each other."""
    rng = np.random.default_rng(0)
    ref = rng.random((100_000, 32), dtype=np.float32)
    index = ExactIndex(ref)
    errors: list[BaseException] = []
    results: list[int] = []

    def search() -> None:
        try:
            for _ in range(4):
                _, idx = index.search(ref[:500], 5)
                results.append(int(idx[0, 0]))
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=search) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(4):
            index.add(ref[:1000])
    except BaseException as err:
        errors.append(err)
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(index) == 104_000 and len(results) == 8
    assert set(results) <= {0, 100_000, 101_000, 102_000, 103_000}  # row 0, or one of its copies
