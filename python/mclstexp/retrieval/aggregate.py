"""Aggregate the expression of retrieved neighbours into a prediction.

For query ``i`` with neighbours ``j = indices[i, 0..k]`` the prediction is
``y_hat_i = sum_j w_ij * values[j]`` with weights that sum to 1 over the ``k`` neighbours:

``"mean"``
    ``w_ij = 1 / k`` (BLEEP).
``"similarity"``
    ``w_ij = max(s_ij, 0) / sum_j' max(s_ij', 0)`` with ``s_ij = scores[i, j]`` the cosine
    similarity; when no neighbour has a positive similarity the plain mean is used.
``"inverse_l1"`` / ``"inverse_l2"``
    The original mclSTExp weighting: ``w_ij ∝ 1 / d(k_j, q_i)^2`` with ``d`` the L1 (HER2+) or
    L2 (elsewhere) distance between the *raw, unnormalised* query embedding ``q_i``
    (``queries[i]``) and reference embedding ``k_j`` (``reference[j]``), normalised over the
    ``k`` neighbours. It is computed as ``(d_min / d_ij)^2`` normalised, which is the same
    weighting without overflow. Exact duplicates (``d_ij = 0``) are the limit of that weighting:
    the neighbours at distance 0 share the weight equally and the others get 0 (no inf or NaN).

The weighted sum is one sparse ``(Q x N) @ (N x G)`` product, so ``values`` may be a dense
array or a scipy sparse matrix; memory beyond the output is ``O(Q * k)`` (plus, for the
distance weights, a ``chunk x k x dim`` gather bounded to about 64 MiB).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

__all__ = ["METHODS", "aggregate_neighbours", "neighbour_weights"]

METHODS = ("mean", "similarity", "inverse_l1", "inverse_l2")
_GATHER_BYTES = 64 << 20


def _check_2d(x: Any, arg: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{arg}: expected a 2-D array, got shape {a.shape}")
    return a


def _distance_weights(
    indices: npt.NDArray[np.int64], queries: Any, reference: Any, p: int
) -> npt.NDArray[np.float64]:
    if queries is None or reference is None:
        missing = "queries" if queries is None else "reference"
        raise ValueError(
            f"{missing}: required for method='inverse_l{p}' (the raw, unnormalised embeddings)"
        )
    q = _check_2d(queries, "queries")
    ref = _check_2d(reference, "reference")
    n_q, k = indices.shape
    if q.shape[0] != n_q:
        raise ValueError(f"queries: has {q.shape[0]} rows but indices has {n_q}")
    if ref.shape[1] != q.shape[1]:
        raise ValueError(f"reference: has {ref.shape[1]} columns but queries has {q.shape[1]}")
    if indices.size and indices.max() >= ref.shape[0]:
        raise ValueError(f"indices: contains {indices.max()} but reference has {ref.shape[0]} rows")
    for arr, name in ((q, "queries"), (ref, "reference")):
        if arr.dtype.kind not in "fiu":
            raise TypeError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
    dist = np.empty((n_q, k), np.float64)
    chunk = max(1, _GATHER_BYTES // max(1, 8 * k * q.shape[1]))
    for s in range(0, n_q, chunk):
        diff = ref[indices[s : s + chunk]].astype(np.float64) - q[s : s + chunk, None, :]
        if p == 1:
            dist[s : s + chunk] = np.abs(diff).sum(-1)
        else:
            dist[s : s + chunk] = np.sqrt(np.einsum("qkd,qkd->qk", diff, diff))
    if not np.isfinite(dist).all():
        raise ValueError("queries: distances are not finite; check queries/reference for NaN/inf")
    d_min = dist.min(axis=1, keepdims=True)
    zero = d_min[:, 0] == 0
    w = np.empty_like(dist)
    # (d_min / d)^2 is in (0, 1]: the same weights as 1/d^2 once normalised, without overflow.
    ok = ~zero
    w[ok] = (d_min[ok] / dist[ok]) ** 2
    w[zero] = (dist[zero] == 0).astype(np.float64)
    return w / w.sum(axis=1, keepdims=True)


def neighbour_weights(
    indices: npt.ArrayLike,
    scores: npt.ArrayLike,
    *,
    method: str = "mean",
    queries: npt.ArrayLike | None = None,
    reference: npt.ArrayLike | None = None,
) -> npt.NDArray[np.float64]:
    """The ``(Q, k)`` weights :func:`aggregate_neighbours` uses (each row sums to 1).

    Examples
    --------
    >>> import numpy as np
    >>> neighbour_weights(np.array([[0, 1]]), np.array([[0.9, 0.3]]), method="similarity")
    array([[0.75, 0.25]])
    """
    if method not in METHODS:
        raise ValueError(f"method: must be one of {METHODS}, got {method!r}")
    idx = _check_2d(indices, "indices")
    if idx.dtype.kind not in "iu":
        raise TypeError(f"indices: expected integers, got dtype {idx.dtype}")
    if idx.shape[1] == 0:
        raise ValueError("indices: has 0 columns; need k >= 1 neighbours per query")
    if idx.size and idx.min() < 0:
        raise ValueError(f"indices: contains a negative index ({idx.min()})")
    idx = idx.astype(np.int64, copy=False)
    s = _check_2d(scores, "scores").astype(np.float64)
    if s.shape != idx.shape:
        raise ValueError(f"scores: has shape {s.shape} but indices has {idx.shape}")
    if method == "mean":
        return np.full(idx.shape, 1.0 / idx.shape[1])
    if method == "similarity":
        if not np.isfinite(s).all():
            raise ValueError("scores: contains NaN/inf")
        pos = np.clip(s, 0.0, None)
        total = pos.sum(axis=1, keepdims=True)
        uniform = np.full_like(pos, 1.0 / idx.shape[1])
        return np.where(total > 0, pos / np.where(total > 0, total, 1.0), uniform)
    return _distance_weights(idx, queries, reference, 1 if method == "inverse_l1" else 2)


def aggregate_neighbours(
    indices: npt.ArrayLike,
    scores: npt.ArrayLike,
    values: Any,
    *,
    method: str = "mean",
    queries: npt.ArrayLike | None = None,
    reference: npt.ArrayLike | None = None,
) -> np.ndarray:
    """Weighted mean of the neighbours' ``values`` for every query (see the module docs).

    Parameters
    ----------
    indices
        ``(Q, k)`` integer neighbour rows of ``values`` (e.g. from ``ExactIndex.search``).
    scores
        ``(Q, k)`` cosine similarities matching ``indices``.
    values
        ``(N, G)`` reference values (dense array or scipy sparse matrix), e.g. expression.
    method
        ``"mean"``, ``"similarity"``, ``"inverse_l1"`` or ``"inverse_l2"``.
    queries, reference
        ``(Q, D)`` and ``(N, D)`` raw (unnormalised) embeddings, required for the
        ``"inverse_*"`` methods.

    Returns
    -------
    numpy.ndarray
        ``(Q, G)`` predictions; ``float32`` when ``values`` is ``float32``, else ``float64``.

    Examples
    --------
    >>> import numpy as np
    >>> values = np.array([[1.0, 0.0], [0.0, 1.0], [4.0, 4.0]])
    >>> aggregate_neighbours(np.array([[0, 1]]), np.array([[0.9, 0.1]]), values)
    array([[0.5, 0.5]])
    >>> q, ref = np.array([[0.0, 0.0]]), np.array([[1.0, 0.0], [0.0, 2.0], [9.0, 9.0]])
    >>> aggregate_neighbours(np.array([[0, 1]]), np.ones((1, 2)), values,
    ...                      method="inverse_l2", queries=q, reference=ref)
    array([[0.8, 0.2]])
    """
    w = neighbour_weights(indices, scores, method=method, queries=queries, reference=reference)
    idx = np.asarray(indices).astype(np.int64, copy=False)
    if not sp.issparse(values):
        values = np.asarray(values)
        if values.ndim != 2:
            raise ValueError(f"values: expected a 2-D (N, G) array, got shape {values.shape}")
        if values.dtype.kind not in "fiub":
            raise TypeError(f"values: expected a numeric array, got dtype {values.dtype}")
    n = values.shape[0]
    if idx.size and idx.max() >= n:
        raise ValueError(f"indices: contains {idx.max()} but values has {n} rows")
    out_dtype = np.float32 if values.dtype == np.float32 else np.float64
    n_q, k = idx.shape
    weights = sp.csr_matrix((w.ravel(), idx.ravel(), np.arange(0, n_q * k + 1, k)), shape=(n_q, n))
    out = weights @ values
    if sp.issparse(out):
        out = out.toarray()
    return np.asarray(out, dtype=out_dtype)
