"""HEST-Benchmark's probe and metric exactly as published, labelled ``hest-probe``.

Everything here follows ``src/hest/bench/benchmark.py`` (``predict_single_split``,
``merge_fold_results``), ``src/hest/bench/trainer.py`` (``train_test_reg``) and
``src/hest/bench/st_dataset.py`` (``load_adata``, ``normalize_adata``) of
github.com/mahmoodlab/HEST at commit afd42c3 (Sept 2025; ``BenchmarkConfig`` defaults):

- targets: ``log1p`` of the raw counts of the task's genes (``normalize=True`` applies
  ``sc.pp.log1p`` only: no library-size normalisation), spots aligned to the patch barcodes;
- features: ``Pipeline([StandardScaler(), PCA(n_components=256, random_state=seed)])`` fitted on
  the training spots of the split, applied to the test spots, then cast to float32
  (``torch.Tensor``); ``seed = 1`` (``BenchmarkConfig.seed``);
- probe: ``Ridge(solver="lsqr", alpha=100 / (n_components * n_genes), fit_intercept=False,
  max_iter=1000, random_state=seed)``. The alpha is fixed by that formula in ``train_test_reg``
  whatever ``--alpha`` says (the argument is overwritten; 100 / (256 * 50) = 0.0078125);
- metric: ``scipy.stats.pearsonr`` per gene over the pooled test spots of a split, mean over
  genes (``pearson_mean``); per task the mean and ``np.std`` (ddof 0) of the split means; the
  leaderboard's "Average" is the mean over tasks of the task means (``benchmark_grid``).

One deviation, recorded in every result as ``pca_components``: HEST asks for 256 components
always, which scikit-learn refuses when the features (or training spots) are fewer; here the
count is ``min(256, n_features, n_train_spots)`` (the alpha formula uses that count). With
encoders of 256 or more dimensions on real tasks nothing changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mclstexp.baselines import Baseline

__all__ = [
    "HEST_LATENT_DIM",
    "HEST_SEED",
    "HestProbe",
    "hest_pearson",
    "hest_split_summary",
    "hest_target",
]

#: PCA components of HEST-Benchmark's probe (``BenchmarkConfig.latent_dim``).
HEST_LATENT_DIM = 256
#: HEST-Benchmark's default seed (``BenchmarkConfig.seed``): PCA and ridge random states.
HEST_SEED = 1


def hest_target(counts: Any) -> np.ndarray:
    """HEST's regression target: ``log1p`` of raw counts (spots x task genes), float64.

    Examples
    --------
    >>> hest_target(np.array([[0.0, np.e - 1]]))
    array([[0., 1.]])
    """
    import scipy.sparse as sp

    x = counts.toarray() if sp.issparse(counts) else np.asarray(counts)
    return np.log1p(x.astype(np.float64))


class HestProbe(Baseline):
    """HEST-Benchmark's linear probe (module docstring): scaler, PCA, fixed-alpha ridge.

    Parameters
    ----------
    latent_dim
        PCA components asked for (HEST: 256; capped by the data, see ``pca_components_``).
    seed
        Random state of the PCA and the ridge (HEST: 1).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(300, 20)).astype(np.float32)
    >>> y = np.log1p(rng.poisson(np.exp(x[:, :3]), size=(300, 3)))
    >>> probe = HestProbe().fit(x, y)
    >>> probe.pca_components_, round(probe.alpha_, 6)
    (20, 1.666667)
    """

    name = "hest-probe"

    def __init__(self, *, latent_dim: int = HEST_LATENT_DIM, seed: int = HEST_SEED) -> None:
        self.latent_dim = int(latent_dim)
        self.seed = int(seed)

    def fit(
        self, X: Any, expression: Any, *, log_library_size: Any = None, groups: Any = None
    ) -> HestProbe:
        from sklearn.decomposition import PCA
        from sklearn.linear_model import Ridge
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        x = np.asarray(X)
        y = np.asarray(expression, dtype=np.float64)
        if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
            raise ValueError(f"X {x.shape} and expression {y.shape}: expected (n, F) and (n, G)")
        self.pca_components_ = min(self.latent_dim, x.shape[1], x.shape[0])
        self.pipe_ = Pipeline(
            [
                ("scaler", StandardScaler()),
                ("PCA", PCA(n_components=self.pca_components_, random_state=self.seed)),
            ]
        )
        z = np.asarray(self.pipe_.fit_transform(x), dtype=np.float32)  # torch.Tensor(...)
        self.alpha_ = 100 / (z.shape[1] * y.shape[1])
        self.ridge_ = Ridge(
            solver="lsqr",
            alpha=self.alpha_,
            random_state=self.seed,
            fit_intercept=False,
            max_iter=1000,
        ).fit(z, y)
        self.fitted_ = True
        return self

    def predict(self, X: Any, *, log_library_size: Any = None) -> np.ndarray:
        self._check_fitted()
        z = np.asarray(self.pipe_.transform(np.asarray(X)), dtype=np.float32)
        return np.asarray(self.ridge_.predict(z), dtype=np.float64)


def hest_pearson(y_true: Any, y_pred: Any, genes: Sequence[str]) -> dict[str, Any]:
    """HEST's per-split score: ``scipy.stats.pearsonr`` per gene over the pooled test spots.

    Returns ``pearson_corrs`` (``{"name", "pearson_corr"}`` per gene, NaN kept as HEST keeps
    it), ``pearson_mean`` and ``pearson_std`` (``np.mean`` / ``np.std`` over genes: a NaN gene
    makes them NaN, as in HEST), and ``n_undefined`` (genes whose truth or prediction is
    constant, NaN there).

    Examples
    --------
    >>> t = np.array([[1.0, 0.0], [2.0, 1.0], [3.0, 5.0]])
    >>> round(hest_pearson(t, t, ["A", "B"])["pearson_mean"], 12)
    1.0
    """
    import warnings

    from scipy.stats import pearsonr

    truth = np.asarray(y_true, dtype=np.float64)
    pred = np.asarray(y_pred, dtype=np.float64)
    if truth.shape != pred.shape or truth.shape[1] != len(genes):
        raise ValueError(f"y_true {truth.shape}, y_pred {pred.shape}, {len(genes)} genes")
    corrs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on constant input and returns NaN
        for j in range(truth.shape[1]):
            corrs.append(float(pearsonr(truth[:, j], pred[:, j])[0]))
    values = np.array(corrs)
    return {
        "pearson_corrs": [
            {"name": str(g), "pearson_corr": c} for g, c in zip(genes, corrs, strict=True)
        ],
        "pearson_mean": float(np.mean(values)),
        "pearson_std": float(np.std(values)),
        "n_undefined": int(np.isnan(values).sum()),
    }


def hest_split_summary(split_means: Sequence[float]) -> dict[str, Any]:
    """HEST's per-task summary (``merge_fold_results``): mean and ``np.std`` (ddof 0) of the
    splits' ``pearson_mean``.

    Examples
    --------
    >>> round(hest_split_summary([0.2, 0.4])["pearson_std"], 12)
    0.1
    """
    values = np.asarray(list(split_means), dtype=np.float64)
    return {
        "pearson_mean": float(np.mean(values)),
        "pearson_std": float(np.std(values)),
        "mean_per_split": [float(v) for v in values],
    }
