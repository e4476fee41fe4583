"""Input validation shared by the metric modules (dense float64 matrices, labels, policies)."""

from __future__ import annotations

from typing import Any

import numpy as np

from mclstexp._validate import dense_matrix


def _check_pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t = dense_matrix(y_true, "y_true")
    p = dense_matrix(y_pred, "y_pred")
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
