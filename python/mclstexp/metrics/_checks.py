"""Input validation shared by the metric modules (dense float64 matrices, labels, policies)."""

from __future__ import annotations

from typing import Any

import numpy as np


def _as_matrix(x: Any, name: str) -> np.ndarray:
    """Dense float64 (n_spots, n_genes) copy of an array / scipy sparse matrix, validated."""
    if hasattr(x, "toarray") and not isinstance(x, np.ndarray):
        x = x.toarray()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n_spots, n_genes) matrix, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values; clean or impute them first")
    return arr


def _check_pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t = _as_matrix(y_true, "y_true")
    p = _as_matrix(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(
            f"y_true and y_pred must have the same (n_spots, n_genes) shape, got {t.shape} and "
            f"{p.shape}; align spots (obs_names) and genes (var_names) first"
        )
    if t.shape[0] < 3:
        raise ValueError(f"need at least 3 spots to correlate, got {t.shape[0]}")
    return t, p


def _check_policy(undefined_pred: str) -> None:
    if undefined_pred not in ("exclude", "zero"):
        raise ValueError(f"undefined_pred must be 'exclude' or 'zero', got {undefined_pred!r}")


def _check_target(target: str) -> None:
    if not isinstance(target, str) or not target:
        raise ValueError(
            "target must name the ground truth's normalisation (e.g. 'legacy_gene' or 'default')"
        )
