"""Ridge regression with a penalty chosen by cross-validation, and the input checks of the rows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mclstexp._validate import dense_matrix
from mclstexp.baselines.colour import patch_colour_features

__all__ = ["DEFAULT_ALPHAS", "svd_ridge_weights"]

DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-3, 4, 15))


def svd_ridge_weights(
    xs: np.ndarray, yc: np.ndarray, penalties: Sequence[float]
) -> list[np.ndarray]:
    """Ridge weights ``[D, G]`` of centred targets ``yc [N, G]`` on prepared features
    ``xs [N, D]``, one per penalty, from one SVD: ``argmin ||xs W - yc||^2 + p ||W||^2``
    (``p = 0``: the minimum-norm least-squares solution).

    Examples
    --------
    >>> xs = np.eye(3); yc = np.array([[1.0], [2.0], [3.0]])
    >>> [w.ravel().tolist() for w in svd_ridge_weights(xs, yc, (0.0, 1.0))]
    [[1.0, 2.0, 3.0], [0.5, 1.0, 1.5]]
    """
    u, s, vt = np.linalg.svd(xs, full_matrices=False)
    uty = u.T @ yc
    out = []
    for p in penalties:
        d = s / (s**2 + p) if p > 0 else np.where(s > 1e-10 * s.max(), 1.0 / s, 0.0)
        out.append(vt.T @ (d[:, None] * uty))
    return out


def _as_expression(y: Any, name: str, n: int | None = None) -> np.ndarray:
    arr = dense_matrix(np.asarray(y)[:, None] if np.ndim(y) == 1 else y, name)
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} rows but X has {n} spots")
    return arr


def _as_depth(z: Any, n: int, name: str = "log_library_size") -> np.ndarray:
    arr = np.asarray(z, dtype=np.float64).ravel()
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} values but there are {n} spots")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN/inf (log of zero?); use log1p(total counts)")
    return arr


def _as_features(x: Any) -> np.ndarray:
    """Features ``(n, F)`` as given, or computed from uint8 patches ``(n, H, W, 3)``."""
    ndim = len(getattr(x, "shape", np.shape(x)))
    if ndim == 4:
        return patch_colour_features(x).astype(np.float64)
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(
            f"X must be features (n_spots, n_features) or uint8 patches (n, H, W, 3), got shape "
            f"{arr.shape}"
        )
    if not np.isfinite(arr).all():
        raise ValueError("X (features) contains NaN or infinite values")
    return arr


def _n_rows(x: Any) -> int:
    shape = getattr(x, "shape", None)
    if shape is None:
        return len(x)
    return int(shape[0])


class _Ridge:
    """Multi-output ridge on standardised features; one penalty chosen by CV (squared error).

    ``prepare(x_train)`` (optional) returns a transform fitted on training rows only; it is
    refitted inside every CV fold and on all rows for the final model, and applied before the
    ridge (the linear probe's scaler + PCA). ``standardize=False`` only centres the (transformed)
    features.
    """

    def __init__(
        self,
        alphas: tuple[float, ...],
        n_folds: int,
        seed: int,
        *,
        standardize: bool = True,
        prepare: Callable[[np.ndarray], Callable[[np.ndarray], np.ndarray]] | None = None,
    ) -> None:
        if len(alphas) == 0 or min(alphas) < 0:
            raise ValueError(
                f"alphas must be a non-empty list of non-negative values, got {alphas}"
            )
        if n_folds < 2:
            raise ValueError(f"n_folds must be >= 2, got {n_folds}")
        self.alphas = tuple(float(a) for a in alphas)
        self.n_folds = n_folds
        self.seed = seed
        self.standardize = standardize
        self.prepare = prepare

    def _solve(self, x: np.ndarray, y: np.ndarray, alphas: tuple[float, ...]) -> list[Any]:
        mu, sd = x.mean(0), x.std(0)
        sd = np.where(sd > 0, sd, 1.0) if self.standardize else np.ones_like(sd)
        xs = (x - mu) / sd
        ym = y.mean(0)
        return [(mu, sd, ym, w) for w in svd_ridge_weights(xs, y - ym, alphas)]

    def _folds(self, n: int, groups: np.ndarray | None) -> list[tuple[np.ndarray, np.ndarray]]:
        if groups is not None:
            uniq = np.unique(groups)
            if uniq.size >= 2:
                # Whole groups (training sections) per fold: leave-one-group-out up to n_folds.
                k = min(self.n_folds, uniq.size)
                rng = np.random.default_rng(self.seed)
                fold_of = dict(zip(rng.permutation(uniq), np.arange(uniq.size) % k, strict=True))
                f = np.array([fold_of[g] for g in groups])
                return [(np.flatnonzero(f != i), np.flatnonzero(f == i)) for i in range(k)]
        k = min(self.n_folds, n)
        perm = np.random.default_rng(self.seed).permutation(n)
        f = np.empty(n, dtype=np.int64)
        f[perm] = np.arange(n) % k
        return [(np.flatnonzero(f != i), np.flatnonzero(f == i)) for i in range(k)]

    def fit(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray | None) -> _Ridge:
        n = x.shape[0]
        if n < 4:
            raise ValueError(f"need at least 4 training spots to fit a ridge, got {n}")
        if len(self.alphas) == 1:
            self.alpha_ = self.alphas[0]
            self.cv_mse_ = np.full(1, np.nan)
        else:
            err = np.zeros(len(self.alphas))
            for tr, va in self._folds(n, groups):
                transform = self._fit_transform(x[tr])
                xtr, xva = transform(x[tr]), transform(x[va])
                for j, (mu, sd, ym, w) in enumerate(self._solve(xtr, y[tr], self.alphas)):
                    pred = ((xva - mu) / sd) @ w + ym
                    err[j] += ((pred - y[va]) ** 2).sum()
            self.cv_mse_ = err / (n * y.shape[1])
            self.alpha_ = self.alphas[int(np.argmin(self.cv_mse_))]
        self.transform_ = self._fit_transform(x)
        xt = self.transform_(x)
        self.n_inputs_ = x.shape[1]
        self.mu_, self.sd_, self.ym_, self.w_ = self._solve(xt, y, (self.alpha_,))[0]
        return self

    def _fit_transform(self, x: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        if self.prepare is None:
            return lambda z: z
        return self.prepare(x)

    def predict(self, x: np.ndarray) -> np.ndarray:
        if x.shape[1] != self.n_inputs_:
            raise ValueError(
                f"X has {x.shape[1]} features but the model was fitted on {self.n_inputs_}"
            )
        return ((self.transform_(x) - self.mu_) / self.sd_) @ self.w_ + self.ym_
