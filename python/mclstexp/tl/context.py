"""Spatial context of a prediction: mix each spot's prediction with its grid neighbours'.

Expression is smooth over the tissue at the scale of a few spots, and a prediction read from one
patch is noisy; the held-out section's own images (never its expression) give every spot a
neighbourhood. With context weight ``c``::

    context(pred)[i] = (1 - c) * pred[i] + c * mean(pred[j] for j in neighbours(i))

``neighbours(i)`` are the spots of the same section whose centre lies within ``radius`` times
the section's median nearest-neighbour distance of spot ``i`` (``radius`` 1.2: the 4 direct
neighbours of a square ST grid, the 6 of a Visium hexagonal grid; the diagonals at 1.41 are
out). A spot without neighbours keeps its own prediction. ``c`` is chosen per fold on the
training sections only, like K and the heads (:func:`choose_context`); ``c = 0`` is always a
candidate, so context is used only where it helps the inner folds.

Context uses no expression of the predicted section, only its spot layout, so it is a legal
input at prediction time; but it helps any per-spot predictor, so a row with context must be
compared with a reference row given the same context (``colour_ridge+context``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from mclstexp import _keys

__all__ = [
    "section_coords",
    "sections_coords",
    "DEFAULT_CONTEXTS",
    "NEIGHBOUR_RADIUS",
    "choose_context",
    "neighbour_mean",
    "with_context",
]

#: Candidate context weights (0: the spot's own prediction only).
DEFAULT_CONTEXTS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75)
#: Neighbour radius, in units of the section's median nearest-neighbour distance.
NEIGHBOUR_RADIUS = 1.2


def section_coords(adata: Any) -> np.ndarray:
    """A section's spot centres ``[n, 2]``: ``obsm["spatial"]`` (pixels), else the array
    coordinates ``obs["array_col"]``, ``obs["array_row"]``.

    Examples
    --------
    >>> import anndata, pandas as pd
    >>> a = anndata.AnnData(np.zeros((2, 1)), obs=pd.DataFrame(
    ...     {"array_row": [0, 1], "array_col": [3, 3]}, index=["a", "b"]))
    >>> section_coords(a).tolist()
    [[3.0, 0.0], [3.0, 1.0]]
    """
    if _keys.SPATIAL in adata.obsm:
        return _as_coords(adata.obsm[_keys.SPATIAL], adata.n_obs)
    if _keys.ARRAY_ROW in adata.obs and _keys.ARRAY_COL in adata.obs:
        cols = [_keys.ARRAY_COL, _keys.ARRAY_ROW]
        return _as_coords(adata.obs[cols].to_numpy(dtype=np.float64), adata.n_obs)
    raise ValueError(
        f"section {_keys.section_id(adata)!r}: no spot centres (obsm['{_keys.SPATIAL}'] or "
        f"obs['{_keys.ARRAY_ROW}'] / obs['{_keys.ARRAY_COL}']); context needs them"
    )


def sections_coords(sections: Sequence[Any]) -> dict[str, np.ndarray] | None:
    """Section id -> spot centres (:func:`section_coords`) of every section, or ``None`` when
    one of them has none (then no row uses context)."""
    try:
        return {_keys.section_id(a): section_coords(a) for a in sections}
    except (KeyError, ValueError):
        return None


def _as_coords(coords: Any, n: int) -> np.ndarray:
    xy = np.asarray(coords, dtype=np.float64)
    if xy.ndim != 2 or xy.shape != (n, 2):
        raise ValueError(f"coords: expected shape ({n}, 2) (one centre per spot), got {xy.shape}")
    if not np.isfinite(xy).all():
        raise ValueError("coords: spot centres must be finite")
    return xy


def neighbour_mean(values: Any, coords: Any, *, radius: float = NEIGHBOUR_RADIUS) -> np.ndarray:
    """Mean of ``values [n, G]`` over each spot's grid neighbours (see the module docstring).

    Neighbours are found with a k-d tree (``scipy.spatial.cKDTree``).

    Examples
    --------
    >>> xy = np.array([[0, 0], [1, 0], [2, 0], [9, 9]], float)  # a row of 3 and an island
    >>> neighbour_mean(np.array([[1.0], [2.0], [3.0], [7.0]]), xy).ravel().tolist()
    [2.0, 2.0, 2.0, 7.0]
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"values: expected shape (n_spots, n_genes), got {v.shape}")
    xy = _as_coords(coords, v.shape[0])
    if v.shape[0] < 2:
        return v.copy()
    r = radius * _median_nn_distance(xy)
    if not r > 0:
        return v.copy()
    i, j = _pairs_within(xy, r)
    out = v.copy()
    if len(i) == 0:
        return out
    sums = np.zeros_like(v)
    np.add.at(sums, i, v[j])
    counts = np.bincount(i, minlength=v.shape[0]).astype(np.float64)
    has = counts > 0
    out[has] = sums[has] / counts[has, None]
    return out


def _median_nn_distance(xy: np.ndarray) -> float:
    """Median distance of a spot to its nearest other spot."""
    from scipy.spatial import cKDTree

    d, _ = cKDTree(xy).query(xy, k=2)
    return float(np.median(d[:, 1]))


def _pairs_within(xy: np.ndarray, r: float) -> tuple[np.ndarray, np.ndarray]:
    """Every ordered pair ``(i, j)``, ``i != j``, of spots whose centres are closer than ``r``."""
    from scipy.spatial import cKDTree

    pairs = cKDTree(xy).query_pairs(r, output_type="ndarray").reshape(-1, 2)
    i, j = pairs[:, 0], pairs[:, 1]
    return np.concatenate([i, j]), np.concatenate([j, i])


def with_context(values: Any, coords: Any, weight: float) -> np.ndarray:
    """``(1 - weight) * values + weight * neighbour_mean(values, coords)`` (float32).

    Examples
    --------
    >>> xy = np.array([[0, 0], [1, 0], [2, 0]], float)
    >>> with_context(np.array([[0.0], [4.0], [0.0]]), xy, 0.5).ravel().tolist()
    [2.0, 2.0, 2.0]
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight: must be in [0, 1], got {weight}")
    v = np.asarray(values, dtype=np.float64)
    if weight == 0.0:
        _as_coords(coords, v.shape[0])
        return v.astype(np.float32)
    return ((1.0 - weight) * v + weight * neighbour_mean(v, coords)).astype(np.float32)


def choose_context(
    inner: Mapping[str, tuple[np.ndarray, np.ndarray]],
    coords: Mapping[str, Any],
    score: Callable[[np.ndarray, np.ndarray], float],
    *,
    weights: Sequence[float] = DEFAULT_CONTEXTS,
) -> tuple[float, dict[float, float]]:
    """The context weight with the best mean inner-fold score (ties: the smaller weight).

    Parameters
    ----------
    inner
        Training section id -> ``(truth, prediction)`` of that section by a predictor fitted on
        the *other* training sections.
    coords
        Section id -> ``[n, 2]`` spot centres of that section.
    score
        ``score(truth, prediction)``, larger is better (e.g. the mean per-gene PCC).
    weights
        Candidate weights in [0, 1].

    Returns
    -------
    (weight, scores)
        The chosen weight and candidate -> mean score over the inner folds.

    Examples
    --------
    >>> xy = np.array([[i, 0] for i in range(40)], float)
    >>> truth = np.repeat(np.arange(8.0), 5)[:, None]  # smooth along the row
    >>> noisy = truth + np.random.default_rng(0).normal(0, 1, truth.shape)
    >>> corr = lambda t, p: float(np.corrcoef(t[:, 0], p[:, 0])[0, 1])
    >>> w, _ = choose_context({"S1": (truth, noisy)}, {"S1": xy}, corr)
    >>> w > 0
    True
    """
    grid = sorted({float(w) for w in weights})
    if not grid or grid[0] < 0 or grid[-1] > 1:
        raise ValueError(f"weights: need values in [0, 1], got {list(weights)}")
    if not inner:
        raise ValueError("inner: need at least one inner fold")
    per: dict[float, list[float]] = {w: [] for w in grid}
    for name, (truth, pred) in inner.items():
        nb = neighbour_mean(pred, coords[name])
        p = np.asarray(pred, dtype=np.float64)
        for w in grid:
            per[w].append(score(truth, ((1.0 - w) * p + w * nb).astype(np.float32)))
    scores = {w: float(np.nanmean(v)) for w, v in per.items()}
    best = max(grid, key=lambda w: (scores[w], -w))
    return best, scores
