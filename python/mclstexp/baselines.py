"""Reference rows for every evaluation: what a number means depends on what trivial predictors get.

Three model-free predictors, fitted on the training sections only and evaluated exactly like the
model (same held-out spots, same targets, same metrics):

* :class:`TrainingMeanBaseline` (``"training_mean"``): every spot gets the training spots' mean.
* :class:`ColourRidgeBaseline` (``"colour_ridge"``): ridge regression from simple colour/texture
  features of the patch (:func:`patch_colour_features`) to expression; the ridge penalty is chosen
  by cross-validation within the training data (by training section when ``groups`` is given).
* :class:`LibrarySizeBaseline` (``"library_size"``): each gene regressed on log library size in the
  training sections, applied to the test spots' depth *predicted* from the same colour features;
  with ``oracle=True`` (``"library_size_oracle"``) their *measured* depth, which a real predictor
  never has. It shows how much of a score is sequencing depth rather than gene-specific signal.

All share ``fit(X, expression, *, log_library_size=None, groups=None)`` and
``predict(X, *, log_library_size=None)`` where ``X`` is either colour features ``(n, F)`` or uint8
patches ``(n, H, W, 3)`` (features are then computed, chunk by chunk).

Examples
--------
>>> import numpy as np
>>> from mclstexp.baselines import TrainingMeanBaseline
>>> b = TrainingMeanBaseline().fit(np.zeros((4, 2)), np.array([[1.0, 2], [3, 4], [1, 2], [3, 4]]))
>>> b.predict(np.zeros((2, 2)))
array([[2., 3.],
       [2., 3.]])
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from mclstexp._validate import dense_matrix

# --------------------------------------------------------------------------------------------
# colour / texture features
# --------------------------------------------------------------------------------------------
_PCTS = (10, 50, 90)
_SAT_TISSUE = 0.15  # saturation above which a pixel is counted as stained tissue
_DARK_GREY = 0.4  # grey level below which a pixel is counted as dark (nuclei-rich)


def _feature_names() -> list[str]:
    names: list[str] = []
    for c in "RGB":
        names += [f"{c}_mean", f"{c}_std"] + [f"{c}_p{q}" for q in _PCTS]
    names += [f"OD{c}_mean" for c in "RGB"] + [f"OD{c}_std" for c in "RGB"]
    names += ["chroma_a", "chroma_b", "S_mean", "S_std", "S_p50", "V_mean", "V_std"]
    names += ["grad_mean", "grad_std", "laplacian_absmean", "tissue_fraction", "dark_fraction"]
    return names


#: Names of the columns returned by :func:`patch_colour_features`.
COLOUR_FEATURE_NAMES: tuple[str, ...] = tuple(_feature_names())

_OD_TABLE = -np.log((np.arange(256, dtype=np.float64) + 1.0) / 256.0)
_LEVELS = np.arange(256, dtype=np.float64)


def _hist_stats(hist: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of ``table[value]`` from per-row histograms over the 256 uint8 values."""
    n = hist.sum(axis=1)
    mean = hist @ table / n
    var = hist @ (table**2) / n - mean**2
    return mean, np.sqrt(np.maximum(var, 0.0))


def _hist_percentiles(hist: np.ndarray, qs: tuple[int, ...]) -> np.ndarray:
    """Inverted-CDF percentiles (value units 0..255) of per-row histograms -> (rows, len(qs))."""
    cdf = np.cumsum(hist, axis=1)
    n = cdf[:, -1:]
    out = np.empty((hist.shape[0], len(qs)))
    for j, q in enumerate(qs):
        out[:, j] = np.argmax(cdf >= (q / 100.0) * n, axis=1)
    return out


def _chunk_features(x: np.ndarray) -> np.ndarray:
    """Features of one uint8 chunk (m, H, W, 3) -> float64 (m, F)."""
    m = x.shape[0]
    planes = np.ascontiguousarray(np.moveaxis(x, 3, 0))  # (3, m, H, W) uint8
    npx = x.shape[1] * x.shape[2]
    # One histogram per (patch, channel): mean/std/percentiles of RGB and optical density exactly.
    offsets = ((np.arange(m)[:, None] * 3 + np.arange(3)[None, :]) * 256).T  # (3, m)
    idx = planes.reshape(3, m, npx).astype(np.intp) + offsets[:, :, None]
    hist = np.bincount(idx.ravel(), minlength=m * 3 * 256).reshape(m * 3, 256).astype(np.float64)
    mean, std = _hist_stats(hist, _LEVELS / 255.0)
    pct = _hist_percentiles(hist, _PCTS) / 255.0
    od_mean, od_std = _hist_stats(hist, _OD_TABLE)
    rgb_feats = np.concatenate([mean[:, None], std[:, None], pct], axis=1).reshape(m, 3 * 5)
    od_feats = np.concatenate([od_mean.reshape(m, 3), od_std.reshape(m, 3)], axis=1)

    r8, g8, b8 = planes[0].reshape(m, npx), planes[1].reshape(m, npx), planes[2].reshape(m, npx)
    max8 = np.maximum(np.maximum(r8, g8), b8)
    delta8 = max8 - np.minimum(np.minimum(r8, g8), b8)  # uint8, no overflow (max >= min)
    maxf = max8.astype(np.float32)
    sat = delta8.astype(np.float32) / np.maximum(maxf, np.float32(1.0))
    inv_v = np.float32(1.0) / np.maximum(maxf, np.float32(1.0))  # 1 / (V * 255)
    rf, gf, bf = (c.astype(np.float32) for c in (r8, g8, b8))
    # Opponent chroma over value: saturation-weighted hue direction (pink eosin vs purple
    # haematoxylin), a smooth stand-in for s * (cos h, sin h) of the HSV hue angle.
    chroma_a = ((rf - np.float32(0.5) * (gf + bf)) * inv_v).mean(axis=1)
    chroma_b = ((np.float32(0.8660254) * (gf - bf)) * inv_v).mean(axis=1)
    sat_q = np.minimum((sat * np.float32(255.0) + np.float32(0.5)).astype(np.intp), 255)
    sat_hist = np.bincount(
        (sat_q + (np.arange(m) * 256)[:, None]).ravel(), minlength=m * 256
    ).reshape(m, 256)
    s_p50 = _hist_percentiles(sat_hist.astype(np.float64), (50,))[:, 0] / 255.0
    v_mean = maxf.mean(axis=1) / 255.0
    v_std = maxf.std(axis=1) / 255.0
    hsv_feats = np.stack(
        [chroma_a, chroma_b, sat.mean(1), sat.std(1), s_p50, v_mean, v_std], axis=1
    )

    grey = (
        (np.float32(0.299 / 255) * rf + np.float32(0.587 / 255) * gf) + np.float32(0.114 / 255) * bf
    ).reshape(x.shape[:3])
    gx = grey[:, :-1, 1:] - grey[:, :-1, :-1]
    gy = grey[:, 1:, :-1] - grey[:, :-1, :-1]
    grad = np.sqrt(gx * gx + gy * gy).reshape(m, -1)
    lap = (
        4.0 * grey[:, 1:-1, 1:-1]
        - grey[:, :-2, 1:-1]
        - grey[:, 2:, 1:-1]
        - grey[:, 1:-1, :-2]
        - grey[:, 1:-1, 2:]
    )
    lap_abs = np.abs(lap).reshape(m, -1).mean(axis=1)
    tissue = (sat > _SAT_TISSUE).sum(axis=1) / npx
    dark = (grey.reshape(m, -1) < _DARK_GREY).sum(axis=1) / npx
    tex_feats = np.stack([grad.mean(1), grad.std(1), lap_abs, tissue, dark], axis=1)
    return np.concatenate([rgb_feats, od_feats, hsv_feats, tex_feats], axis=1)


def patch_colour_features(patches: Any, *, chunk_size: int = 32) -> np.ndarray:
    """Simple colour and texture features of H&E patches (the colour-ridge baseline's input).

    Per RGB channel: mean, std, 10/50/90th percentiles; per channel optical density
    ``-log((I+1)/256)``: mean, std; opponent chroma over value (a saturation-weighted hue
    direction, 2 values); HSV saturation mean/std/median and value mean/std; grey-level
    gradient magnitude mean/std, mean absolute Laplacian; fraction of saturated (tissue) and of
    dark pixels. 33 features in all (:data:`COLOUR_FEATURE_NAMES`).

    Parameters
    ----------
    patches
        uint8 ``(n, H, W, 3)`` RGB patches: a numpy array or anything sliceable along the first
        axis with ``shape`` and ``dtype`` (e.g. a zarr array); it is read ``chunk_size`` patches
        at a time, so a large cache streams without being loaded at once.
    chunk_size
        Patches per chunk; working memory is about 90 bytes per pixel of a chunk (about
        140 MB for 32 patches of 224 x 224).

    Returns
    -------
    numpy.ndarray
        ``(n, 33)`` float32.

    Examples
    --------
    >>> import numpy as np
    >>> f = patch_colour_features(np.full((2, 8, 8, 3), 255, dtype=np.uint8))
    >>> f.shape, float(f[0, 0])
    ((2, 33), 1.0)
    """
    shape = tuple(getattr(patches, "shape", ()))
    if len(shape) != 4 or shape[3] != 3:
        raise ValueError(
            f"patches must be uint8 RGB of shape (n, H, W, 3) (channels last), got shape {shape}"
        )
    if np.dtype(getattr(patches, "dtype", None)) != np.uint8:
        raise ValueError(
            f"patches must be uint8 (0..255), got dtype {getattr(patches, 'dtype', None)}; "
            "convert with (x * 255).round().astype(np.uint8) for floats in [0, 1]"
        )
    if shape[1] < 3 or shape[2] < 3:
        raise ValueError(f"patches must be at least 3 x 3 pixels, got {shape[1]} x {shape[2]}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    n = shape[0]
    out = np.empty((n, len(COLOUR_FEATURE_NAMES)), dtype=np.float32)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        chunk = np.ascontiguousarray(np.asarray(patches[start:stop]), dtype=np.uint8)
        out[start:stop] = _chunk_features(chunk)
    return out


# --------------------------------------------------------------------------------------------
# ridge with a cross-validated penalty
# --------------------------------------------------------------------------------------------
DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-3, 4, 15))


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
    """Multi-output ridge on standardised features; one penalty chosen by CV (squared error)."""

    def __init__(self, alphas: tuple[float, ...], n_folds: int, seed: int) -> None:
        if len(alphas) == 0 or min(alphas) < 0:
            raise ValueError(
                f"alphas must be a non-empty list of non-negative values, got {alphas}"
            )
        if n_folds < 2:
            raise ValueError(f"n_folds must be >= 2, got {n_folds}")
        self.alphas = tuple(float(a) for a in alphas)
        self.n_folds = n_folds
        self.seed = seed

    @staticmethod
    def _solve(x: np.ndarray, y: np.ndarray, alphas: tuple[float, ...]) -> list[Any]:
        mu, sd = x.mean(0), x.std(0)
        sd = np.where(sd > 0, sd, 1.0)
        xs = (x - mu) / sd
        ym = y.mean(0)
        u, s, vt = np.linalg.svd(xs, full_matrices=False)
        uty = u.T @ (y - ym)
        out = []
        for a in alphas:
            d = s / (s**2 + a) if a > 0 else np.where(s > 1e-10 * s.max(), 1.0 / s, 0.0)
            out.append((mu, sd, ym, vt.T @ (d[:, None] * uty)))
        return out

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
                for j, (mu, sd, ym, w) in enumerate(self._solve(x[tr], y[tr], self.alphas)):
                    pred = ((x[va] - mu) / sd) @ w + ym
                    err[j] += ((pred - y[va]) ** 2).sum()
            self.cv_mse_ = err / (n * y.shape[1])
            self.alpha_ = self.alphas[int(np.argmin(self.cv_mse_))]
        self.mu_, self.sd_, self.ym_, self.w_ = self._solve(x, y, (self.alpha_,))[0]
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        if x.shape[1] != self.mu_.shape[0]:
            raise ValueError(
                f"X has {x.shape[1]} features but the model was fitted on {len(self.mu_)}"
            )
        return ((x - self.mu_) / self.sd_) @ self.w_ + self.ym_


# --------------------------------------------------------------------------------------------
# baselines
# --------------------------------------------------------------------------------------------
class Baseline(ABC):
    """Common interface of the reference rows.

    Attributes
    ----------
    name
        Row label in result tables.
    needs_log_library_size
        What :meth:`fit` / :meth:`predict` read from ``log_library_size``: ``"never"``, ``"fit"``
        or ``"fit+predict"`` (the oracle).
    """

    name: str = "baseline"
    needs_log_library_size: str = "never"

    @abstractmethod
    def fit(
        self,
        X: Any,
        expression: Any,
        *,
        log_library_size: Any = None,
        groups: Any = None,
    ) -> Baseline:
        """Fit on the training spots (all training sections stacked)."""

    @abstractmethod
    def predict(self, X: Any, *, log_library_size: Any = None) -> np.ndarray:
        """Predict ``(n_spots, n_genes)`` float64 expression for the test spots."""

    def _check_fitted(self) -> None:
        if not getattr(self, "fitted_", False):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() first")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class TrainingMeanBaseline(Baseline):
    """Predict the training spots' mean expression for every spot.

    Its per-gene PCC is undefined (the prediction is constant over the spots): the metrics report
    it as NaN with every gene counted in ``n_constant_pred``; its MSE/MAE are the reference.

    Examples
    --------
    >>> import numpy as np
    >>> TrainingMeanBaseline().fit(None, np.eye(2)).predict(np.zeros((3, 1))).shape
    (3, 2)
    """

    name = "training_mean"

    def fit(
        self, X: Any, expression: Any, *, log_library_size: Any = None, groups: Any = None
    ) -> TrainingMeanBaseline:
        y = _as_expression(expression, "expression")
        if X is not None and _n_rows(X) != y.shape[0]:
            raise ValueError(f"X has {_n_rows(X)} spots but expression has {y.shape[0]}")
        self.mean_ = y.mean(axis=0)
        self.fitted_ = True
        return self

    def predict(self, X: Any, *, log_library_size: Any = None) -> np.ndarray:
        """``X`` only sets the number of spots (features, patches or any sized sequence)."""
        self._check_fitted()
        return np.tile(self.mean_, (_n_rows(X), 1))


class ColourRidgeBaseline(Baseline):
    """Ridge regression from patch colour/texture features to expression.

    Parameters
    ----------
    alphas
        Candidate penalties (on standardised features); one is chosen by cross-validation on the
        training data only (never the held-out section), minimising mean squared error.
    n_folds
        CV folds when ``groups`` is not given (shuffled, ``seed``); with ``groups`` (the training
        section of each spot) whole sections are held out (up to ``n_folds`` folds).
    seed
        Fold assignment seed.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 5))
    >>> y = x @ rng.normal(size=(5, 3))
    >>> b = ColourRidgeBaseline().fit(x, y)
    >>> float(np.abs(b.predict(x) - y).max()) < 0.05
    True
    """

    name = "colour_ridge"

    def __init__(
        self, *, alphas: tuple[float, ...] = DEFAULT_ALPHAS, n_folds: int = 5, seed: int = 0
    ) -> None:
        self._ridge = _Ridge(tuple(alphas), n_folds, seed)

    @property
    def alpha_(self) -> float:
        """The penalty chosen by cross-validation."""
        self._check_fitted()
        return self._ridge.alpha_

    def fit(
        self, X: Any, expression: Any, *, log_library_size: Any = None, groups: Any = None
    ) -> ColourRidgeBaseline:
        x = _as_features(X)
        y = _as_expression(expression, "expression", x.shape[0])
        g = None if groups is None else np.asarray(groups).ravel()
        if g is not None and g.shape[0] != x.shape[0]:
            raise ValueError(f"groups has {g.shape[0]} entries but X has {x.shape[0]} spots")
        self._ridge.fit(x, y, g)
        self.fitted_ = True
        return self

    def predict(self, X: Any, *, log_library_size: Any = None) -> np.ndarray:
        """Predict from features/patches; ``log_library_size`` is never read."""
        self._check_fitted()
        return self._ridge.predict(_as_features(X))


class LibrarySizeBaseline(Baseline):
    """Each gene as a linear function of log library size (a pure sequencing-depth predictor).

    ``fit`` regresses every gene on ``[1, log_library_size]`` over the training spots. ``predict``
    applies it to the test spots' depth: by default the depth PREDICTED from colour features by a
    ridge fitted on the training spots (a legitimate image-only predictor); with ``oracle=True``
    their MEASURED depth (``name="library_size_oracle"``), which no image model has: an upper
    bound on what depth alone explains.

    Parameters
    ----------
    oracle
        Use the test spots' measured log library size at prediction.
    alphas, n_folds, seed
        Ridge settings of the depth-from-features model (see :class:`ColourRidgeBaseline`).

    Examples
    --------
    >>> import numpy as np
    >>> z = np.linspace(0, 1, 50)
    >>> y = np.outer(z, [1.0, -2.0]) + 3
    >>> b = LibrarySizeBaseline(oracle=True).fit(None, y, log_library_size=z)
    >>> b.name, bool(np.allclose(b.predict(None, log_library_size=z), y))
    ('library_size_oracle', True)
    """

    def __init__(
        self,
        *,
        oracle: bool = False,
        alphas: tuple[float, ...] = DEFAULT_ALPHAS,
        n_folds: int = 5,
        seed: int = 0,
    ) -> None:
        self.oracle = bool(oracle)
        self.name = "library_size_oracle" if self.oracle else "library_size"
        self.needs_log_library_size = "fit+predict" if self.oracle else "fit"
        self._depth = None if self.oracle else _Ridge(tuple(alphas), n_folds, seed)

    def fit(
        self, X: Any, expression: Any, *, log_library_size: Any = None, groups: Any = None
    ) -> LibrarySizeBaseline:
        if log_library_size is None:
            raise ValueError(
                f"{self.name} needs log_library_size of the training spots "
                "(mclstexp.metrics.log_library_size(counts))"
            )
        y = _as_expression(expression, "expression")
        z = _as_depth(log_library_size, y.shape[0])
        if np.ptp(z) == 0:
            raise ValueError("log_library_size is constant over the training spots")
        design = np.column_stack([np.ones_like(z), z])
        self.coef_, *_ = np.linalg.lstsq(design, y, rcond=None)  # (2, G): intercept, slope
        if self._depth is not None:
            if X is None:
                raise ValueError(
                    "library_size predicts the test depth from colour features: pass X "
                    "(features or patches), or use LibrarySizeBaseline(oracle=True)"
                )
            x = _as_features(X)
            if x.shape[0] != y.shape[0]:
                raise ValueError(f"X has {x.shape[0]} spots but expression has {y.shape[0]}")
            g = None if groups is None else np.asarray(groups).ravel()
            self._depth.fit(x, z[:, None], g)
        self.fitted_ = True
        return self

    def predict_depth(self, X: Any) -> np.ndarray:
        """Log library size predicted from colour features (non-oracle only)."""
        self._check_fitted()
        if self._depth is None:
            raise ValueError(
                "the oracle baseline does not predict depth; it reads the measured one"
            )
        return self._depth.predict(_as_features(X))[:, 0]

    def predict(self, X: Any, *, log_library_size: Any = None) -> np.ndarray:
        """Oracle: reads ``log_library_size`` (measured). Otherwise predicts depth from ``X`` and
        never reads ``log_library_size``."""
        self._check_fitted()
        if self.oracle:
            if log_library_size is None:
                raise ValueError(
                    "library_size_oracle needs the test spots' measured log_library_size"
                )
            z = _as_depth(log_library_size, np.asarray(log_library_size).size)
        else:
            z = self.predict_depth(X)
        return self.coef_[0] + np.outer(z, self.coef_[1])


def reference_baselines(*, include_oracle: bool = True, seed: int = 0) -> list[Baseline]:
    """The reference rows of every evaluation, unfitted, in table order.

    Examples
    --------
    >>> [b.name for b in reference_baselines()]
    ['training_mean', 'colour_ridge', 'library_size', 'library_size_oracle']
    """
    rows: list[Baseline] = [
        TrainingMeanBaseline(),
        ColourRidgeBaseline(seed=seed),
        LibrarySizeBaseline(seed=seed),
    ]
    if include_oracle:
        rows.append(LibrarySizeBaseline(oracle=True, seed=seed))
    return rows


__all__ = [
    "COLOUR_FEATURE_NAMES",
    "DEFAULT_ALPHAS",
    "Baseline",
    "ColourRidgeBaseline",
    "LibrarySizeBaseline",
    "TrainingMeanBaseline",
    "patch_colour_features",
    "reference_baselines",
]
