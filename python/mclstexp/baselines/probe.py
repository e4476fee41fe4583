"""The linear probe: HEST-Benchmark's readout of a frozen encoder's features.

Whenever a run uses a frozen encoder, its table gets the row ``probe[<encoder>]``: the same
features the model's head sees, the same folds, HEST's protocol (Jaume et al., HEST-1k,
``src/hest/bench/benchmark.py`` and ``trainer.py``): standardise the features and reduce them
to 256 principal components fitted on the training spots, then a ridge regression to
expression. It separates "how good is the encoder" from "how good is contrastive retrieval".

Three differences from HEST, to keep the held-out section out of every choice, the numbers
comparable with the other rows, and one dead feature from ruling a fold:

- HEST fixes the penalty (``alpha = 100 / (n_components * n_genes)``); here it is chosen by
  cross-validation over the training sections (whole sections per fold, the scaler and PCA
  refitted inside each fold), never on the held-out one;
- HEST fits no intercept (its Pearson correlations are unaffected, its squared errors are);
  here the ridge has one, like the colour ridge;
- a feature whose standard deviation over the training spots is below 1/1000 of the median
  feature's is treated as constant and left out (HEST's ``StandardScaler`` divides by any non-zero
  one). A frozen network has such nearly dead channels; scaled by their tiny training spread, a
  held-out section where one wakes up gets standardised values in the thousands and wild
  predictions (seen on the synthetic data with the ``cpu`` preset's random ResNet-18: one fold's
  probe MSE went from 1.45 to 4.1).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np

from mclstexp.baselines.ridge import _Ridge
from mclstexp.baselines.rows import FeatureRidge

__all__ = ["PROBE_ALPHAS", "LinearProbeBaseline"]

#: A feature whose training standard deviation is below this fraction of the median feature's
#: counts as constant (see the module docstring).
_CONSTANT = 1e-3
#: Candidate penalties on the (unscaled) principal components: from no shrinkage (HEST's fixed
#: penalty is about 0.008 for 256 components and 50 genes) to a constant prediction.
PROBE_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-2, 6, 17))


def _probe_features(x: Any) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"X must be encoder features (n_spots, n_features), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("X (encoder features) contains NaN or infinite values")
    return arr


class _ScalerPCA:
    """``StandardScaler`` then ``PCA(n_components)`` fitted on training rows (numpy SVD),
    remembered by the rows' content: the same training rows (another target) reuse the fit."""

    def __init__(self, n_components: int) -> None:
        self.n_components = int(n_components)
        self._fits: dict[str, Callable[[np.ndarray], np.ndarray]] = {}

    def __call__(self, x: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        digest = hashlib.sha256(np.ascontiguousarray(x).view(np.uint8)).hexdigest()
        digest += str(x.shape)
        if digest not in self._fits:
            if len(self._fits) > 16:
                self._fits.clear()
            self._fits[digest] = self._fit(x)
        return self._fits[digest]

    def _fit(self, x: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        mu, sd = x.mean(0), x.std(0)
        keep = sd > _CONSTANT * float(np.median(sd))
        if not keep.any():
            keep = sd >= sd.max()
        mu, sd = mu[keep], np.where(sd[keep] > 0, sd[keep], 1.0)
        z = (x[:, keep] - mu) / sd
        _, s, vt = np.linalg.svd(z, full_matrices=False)
        k = max(1, min(self.n_components, int((s > 1e-10 * max(s.max(), 1e-300)).sum())))
        components = vt[:k].T  # (F, k)

        def transform(features: np.ndarray) -> np.ndarray:
            return ((features[:, keep] - mu) / sd) @ components

        return transform


class LinearProbeBaseline(FeatureRidge):
    """Ridge on the first ``n_components`` principal components of standardised encoder
    features (HEST-Benchmark's linear probe; see the module docstring).

    Parameters
    ----------
    encoder
        The encoder's name, for the row label ``probe[<encoder>]``.
    n_components
        Principal components kept (256 in HEST; fewer when there are fewer spots or features).
    alphas, n_folds, seed
        Ridge penalties and the cross-validation over the training sections (``groups``) that
        chooses one of them (see :class:`mclstexp.baselines.ColourRidgeBaseline`).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(300, 3))  # what the features encode
    >>> x = z @ rng.normal(size=(3, 40)) + 0.1 * rng.normal(size=(300, 40))
    >>> y = z @ rng.normal(size=(3, 2))
    >>> probe = LinearProbeBaseline("demo", n_components=10)
    >>> probe.fit(x, y, groups=np.repeat([0, 1, 2], 100)).name
    'probe[demo]'
    >>> float(np.corrcoef(probe.predict(x)[:, 0], y[:, 0])[0, 1]) > 0.9
    True
    """

    def __init__(
        self,
        encoder: str = "encoder",
        *,
        n_components: int = 256,
        alphas: tuple[float, ...] = PROBE_ALPHAS,
        n_folds: int = 5,
        seed: int = 0,
    ) -> None:
        if n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        self.encoder = str(encoder)
        self.name = f"probe[{self.encoder}]"
        self.n_components = int(n_components)
        self._ridge = _Ridge(
            tuple(alphas), n_folds, seed, standardize=False, prepare=_ScalerPCA(n_components)
        )

    @staticmethod
    def _features(X: Any) -> np.ndarray:
        return _probe_features(X)
