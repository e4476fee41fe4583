"""The reference rows: training mean, colour ridge, library size (and its oracle)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, TypeVar

import numpy as np

from mclstexp.baselines.ridge import (
    DEFAULT_ALPHAS,
    _as_depth,
    _as_expression,
    _as_features,
    _n_rows,
    _Ridge,
)

__all__ = [
    "Baseline",
    "ColourRidgeBaseline",
    "LibrarySizeBaseline",
    "TrainingMeanBaseline",
    "reference_baselines",
]


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


_R = TypeVar("_R", bound="FeatureRidge")


class FeatureRidge(Baseline):
    """A ridge from per-spot features to expression whose penalty is chosen by cross-validation
    on the training spots (whole training sections with ``groups``); a subclass says what its
    features are (``_features``) and builds ``self._ridge``."""

    _ridge: _Ridge

    @staticmethod
    @abstractmethod
    def _features(X: Any) -> np.ndarray:
        """``X`` as the float ``(n, F)`` features the ridge reads."""

    @property
    def alpha_(self) -> float:
        """The penalty chosen by cross-validation."""
        self._check_fitted()
        return self._ridge.alpha_

    def fit(
        self: _R, X: Any, expression: Any, *, log_library_size: Any = None, groups: Any = None
    ) -> _R:
        """Fit on the training spots' features; ``groups`` (their training section) makes the
        penalty's cross-validation hold out whole sections."""
        x = self._features(X)
        y = _as_expression(expression, "expression", x.shape[0])
        g = None if groups is None else np.asarray(groups).ravel()
        if g is not None and g.shape[0] != x.shape[0]:
            raise ValueError(f"groups has {g.shape[0]} entries but X has {x.shape[0]} spots")
        self._ridge.fit(x, y, g)
        self.fitted_ = True
        return self

    def predict(self, X: Any, *, log_library_size: Any = None) -> np.ndarray:
        """Predict from features; ``log_library_size`` is never read."""
        self._check_fitted()
        return self._ridge.predict(self._features(X))


class ColourRidgeBaseline(FeatureRidge):
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

    @staticmethod
    def _features(X: Any) -> np.ndarray:
        return _as_features(X)


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
