"""Per-gene Pearson and partial (depth-controlled) correlation, and their ACG/HEG/HVG summaries.

The partial correlation of truth and prediction given a per-spot covariate (log library size)
residualises both on ``[1, covariate]`` by least squares and then correlates them: a prediction
that only encodes depth scores about zero there, whatever its plain PCC.

Genes whose correlation is undefined (constant truth, or constant prediction in that section) are
NaN and counted; how they enter a mean is the *undefined-prediction policy*
(:func:`policy_values`): ``"exclude"`` leaves constant predictions out, ``"zero"`` scores them 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from mclstexp._validate import dense_matrix
from mclstexp.metrics._checks import _check_pair, _check_policy

__all__ = [
    "GenePCC",
    "UndefinedPolicy",
    "finite_mean",
    "log_library_size",
    "partial_pcc_per_gene",
    "pearson_per_gene",
    "policy_values",
    "summarize_pcc",
    "top_genes",
]

UndefinedPolicy = Literal["exclude", "zero"]

# Residuals smaller than this fraction of the centred norm count as "explained by the covariate".
_REL_TOL = 1e-9


@dataclass(frozen=True)
class GenePCC:
    """Per-gene correlations of one evaluation, with the genes where it is undefined.

    Attributes
    ----------
    pcc
        ``(n_genes,)`` float64; NaN where the correlation is undefined.
    constant_true
        ``(n_genes,)`` bool; ground truth constant over the spots (undefined for every method).
    constant_pred
        ``(n_genes,)`` bool; prediction constant (and truth not), so undefined for this method.
    kind
        ``"pearson"`` or ``"partial"`` (controlling for a per-spot covariate).

    Examples
    --------
    >>> import numpy as np
    >>> r = pearson_per_gene(np.array([[1.0, 2], [2, 2], [3, 2]]), np.array([[1.0, 1], [2, 2],
    ...     [4, 3]]))
    >>> r.n_constant_true, r.n_genes_used
    (1, 1)
    """

    pcc: np.ndarray
    constant_true: np.ndarray
    constant_pred: np.ndarray
    kind: str = "pearson"

    @property
    def defined(self) -> np.ndarray:
        """Genes whose correlation is defined."""
        return ~(self.constant_true | self.constant_pred)

    @property
    def n_constant_true(self) -> int:
        return int(self.constant_true.sum())

    @property
    def n_constant_pred(self) -> int:
        return int(self.constant_pred.sum())

    @property
    def n_constant(self) -> int:
        """Genes excluded because truth or prediction is constant."""
        return int((self.constant_true | self.constant_pred).sum())

    @property
    def n_genes_used(self) -> int:
        return int(self.defined.sum())

    def __len__(self) -> int:
        return int(self.pcc.shape[0])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self.pcc, dtype=dtype)


def _columnwise_pearson(
    a: np.ndarray, b: np.ndarray, const_a: np.ndarray, const_b: np.ndarray
) -> np.ndarray:
    ac = a - a.mean(axis=0)
    bc = b - b.mean(axis=0)
    num = np.einsum("ij,ij->j", ac, bc)
    den = np.sqrt(np.einsum("ij,ij->j", ac, ac) * np.einsum("ij,ij->j", bc, bc))
    bad = const_a | const_b | (den == 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(bad, np.nan, num / np.where(bad, 1.0, den))
    return np.clip(r, -1.0, 1.0)


def pearson_per_gene(y_true: Any, y_pred: Any) -> GenePCC:
    """Pearson correlation of each gene across the spots of one section.

    Parameters
    ----------
    y_true, y_pred
        ``(n_spots, n_genes)`` ground truth and prediction (arrays or scipy sparse), same spot and
        gene order, finite.

    Returns
    -------
    GenePCC
        ``.pcc`` (NaN where truth or prediction is constant), the two constant masks and counts.
        ``np.asarray(result)`` gives the PCC array.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.arange(12.0).reshape(4, 3) ** 2
    >>> np.round(pearson_per_gene(y, y).pcc, 6)
    array([1., 1., 1.])
    """
    t, p = _check_pair(y_true, y_pred)
    const_t = np.ptp(t, axis=0) == 0
    const_p = (np.ptp(p, axis=0) == 0) & ~const_t
    return GenePCC(_columnwise_pearson(t, p, const_t, const_p), const_t, const_p, "pearson")


def _residualise(x: np.ndarray, design: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares residuals of every column of ``x`` on ``design``; plus "explained" mask."""
    beta, *_ = np.linalg.lstsq(design, x, rcond=None)
    resid = x - design @ beta
    centred = np.linalg.norm(x - x.mean(axis=0), axis=0)
    explained = np.linalg.norm(resid, axis=0) <= _REL_TOL * np.maximum(centred, 1e-300)
    # Exact constancy first: a constant column's centred norm is rounding noise, not zero.
    return resid, explained | (np.ptp(x, axis=0) == 0)


def _covariate_design(covariate: Any, n: int) -> np.ndarray:
    z = np.asarray(covariate, dtype=np.float64)
    if z.ndim == 1:
        z = z[:, None]
    if z.ndim != 2 or z.shape[0] != n:
        raise ValueError(
            f"covariate must have one value per spot ({n}), got shape {np.shape(covariate)}"
        )
    if not np.isfinite(z).all():
        raise ValueError(
            "covariate contains NaN/inf (log of a zero library size?); use log1p(total counts)"
        )
    if (np.ptp(z, axis=0) == 0).any():
        raise ValueError("covariate is constant over the spots; there is nothing to control for")
    return np.column_stack([np.ones(n), z])


def partial_pcc_per_gene(y_true: Any, y_pred: Any, covariate: Any) -> GenePCC:
    """Per-gene partial correlation of truth and prediction controlling for a per-spot covariate.

    Both matrices are residualised on ``[1, covariate]`` by least squares, then correlated per
    gene. With ``covariate`` = log library size this is the depth-controlled PCC: a prediction
    that only tracks sequencing depth scores about zero.

    Parameters
    ----------
    y_true, y_pred
        ``(n_spots, n_genes)`` ground truth and prediction.
    covariate
        ``(n_spots,)`` (or ``(n_spots, k)``) finite, non-constant covariate, e.g.
        :func:`log_library_size`.

    Returns
    -------
    GenePCC
        ``kind="partial"``. A gene is undefined (NaN, counted) where the truth (``constant_true``)
        or the prediction (``constant_pred``) is fully explained by the covariate, which includes
        a prediction that is an exact affine function of it.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=500)
    >>> y = z[:, None] + rng.normal(size=(500, 2))
    >>> r = partial_pcc_per_gene(y, y + 0.1 * rng.normal(size=y.shape), z)
    >>> bool((r.pcc > 0.9).all())
    True
    """
    t, p = _check_pair(y_true, y_pred)
    design = _covariate_design(covariate, t.shape[0])
    rt, expl_t = _residualise(t, design)
    rp, expl_p = _residualise(p, design)
    const_p = expl_p & ~expl_t
    return GenePCC(_columnwise_pearson(rt, rp, expl_t, const_p), expl_t, const_p, "partial")


def log_library_size(counts: Any) -> np.ndarray:
    """``log1p`` of each spot's total counts (the covariate of the depth-controlled metrics).

    Parameters
    ----------
    counts
        ``(n_spots, n_genes)`` raw counts (array or scipy sparse); sum over all genes measured
        (not only the panel) when available, or pass the totals directly as a 1-D array.

    Returns
    -------
    numpy.ndarray
        ``(n_spots,)`` float64; ``log1p`` keeps zero-count spots finite.

    Examples
    --------
    >>> import numpy as np
    >>> log_library_size(np.array([[0, 0], [1, 2]])).round(3)
    array([0.   , 1.386])
    """
    if hasattr(counts, "toarray") and not isinstance(counts, np.ndarray):
        totals = np.asarray(counts.sum(axis=1)).ravel()
    else:
        arr = np.asarray(counts, dtype=np.float64)
        totals = arr if arr.ndim == 1 else arr.sum(axis=1)
    totals = np.asarray(totals, dtype=np.float64)
    if (totals < 0).any() or not np.isfinite(totals).all():
        raise ValueError("counts must be finite and non-negative to compute a library size")
    return np.log1p(totals)


def top_genes(y_true: Any, *, by: Literal["mean", "var"], n_top: int = 50) -> np.ndarray:
    """Indices of the ``n_top`` genes with the highest ground-truth mean (HEG) or variance (HVG).

    Only genes that are not constant in the truth are eligible; ties break by gene order. The
    selection depends on the truth alone, so every method is averaged over the same genes.

    Examples
    --------
    >>> import numpy as np
    >>> top_genes(np.array([[1.0, 5, 3], [2, 5, 4]]), by="mean", n_top=2)
    array([2, 0])
    """
    t = dense_matrix(y_true, "y_true")
    if n_top < 1:
        raise ValueError(f"n_top must be >= 1, got {n_top}")
    if by == "mean":
        stat = t.mean(axis=0)
    elif by == "var":
        stat = t.var(axis=0)
    else:
        raise ValueError(f"by must be 'mean' or 'var', got {by!r}")
    eligible = np.flatnonzero(np.ptp(t, axis=0) > 0)
    order = eligible[np.argsort(-stat[eligible], kind="stable")]
    return order[:n_top]


def policy_values(res: GenePCC, undefined_pred: UndefinedPolicy = "exclude") -> np.ndarray:
    """Per-gene values as a mean should see them under an undefined-prediction policy.

    Parameters
    ----------
    res
        Result of :func:`pearson_per_gene` or :func:`partial_pcc_per_gene`.
    undefined_pred
        ``"exclude"``: genes with a constant prediction stay NaN (left out of
        :func:`finite_mean`). ``"zero"``: they score 0, so predicting a constant on a hard gene
        cannot raise the mean. Genes with a constant truth stay NaN under both policies.

    Returns
    -------
    numpy.ndarray
        ``(n_genes,)`` float64, a new array (``res`` is not modified).

    Examples
    --------
    >>> import numpy as np
    >>> y = np.array([[1.0, 2, 0], [2, 4, 0], [3, 5, 0]])
    >>> res = pearson_per_gene(y, np.array([[1.0, 1, 0], [2, 1, 0], [3, 1, 0]]))
    >>> policy_values(res, "exclude").tolist()
    [1.0, nan, nan]
    >>> policy_values(res, "zero").tolist()
    [1.0, 0.0, nan]
    """
    _check_policy(undefined_pred)
    vals = np.array(res.pcc, dtype=np.float64, copy=True)
    if undefined_pred == "zero":
        vals[res.constant_pred] = 0.0
    return vals


def finite_mean(values: np.ndarray) -> float:
    """Mean of the finite entries of ``values``; NaN when there are none (never a warning).

    Parameters
    ----------
    values
        1-D array of per-gene values, NaN where undefined (e.g. :func:`policy_values`).

    Returns
    -------
    float
        The mean over finite entries, or ``nan``.

    Examples
    --------
    >>> import numpy as np
    >>> round(finite_mean(np.array([0.2, np.nan, 0.4])), 6)
    0.3
    >>> finite_mean(np.array([np.nan]))
    nan
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def summarize_pcc(
    pcc: GenePCC | np.ndarray,
    y_true: Any,
    *,
    n_top: int = 50,
    undefined_pred: UndefinedPolicy = "exclude",
) -> dict[str, Any]:
    """ACG / HEG / HVG summaries of per-gene correlations (method.md §5).

    Parameters
    ----------
    pcc
        Result of :func:`pearson_per_gene` / :func:`partial_pcc_per_gene`, or a plain array (then
        NaN entries of genes with non-constant truth count as constant predictions).
    y_true
        ``(n_spots, n_genes)`` ground truth of the SAME section; it selects the HEG/HVG genes.
    n_top
        Genes in the HEG and HVG sets (50 in the method).
    undefined_pred
        ``"exclude"`` (default): genes with a constant prediction are left out of the means and
        counted in ``n_constant_pred``. ``"zero"``: they score 0, so a method cannot raise its
        mean by predicting constants on hard genes. Genes with constant truth are always excluded.

    Returns
    -------
    dict
        ``acg`` (mean over all genes with a defined value), ``heg`` (mean over the ``n_top`` genes
        of highest truth mean), ``hvg`` (highest truth variance), ``n_genes``, ``n_genes_used``,
        ``n_constant`` (excluded genes), ``n_constant_true``, ``n_constant_pred``,
        ``heg_n_used``, ``hvg_n_used``, ``undefined_pred``.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.array([[1.0, 2, 0], [2, 4, 0], [3, 5, 0]])
    >>> s = summarize_pcc(pearson_per_gene(y, y), y, n_top=1)
    >>> s["acg"], s["n_constant"]
    (1.0, 1)
    """
    _check_policy(undefined_pred)
    t = dense_matrix(y_true, "y_true")
    if isinstance(pcc, GenePCC):
        res = pcc
    else:
        arr = np.asarray(pcc, dtype=np.float64)
        if arr.ndim != 1:
            raise ValueError(f"pcc must be 1-D (one value per gene), got shape {arr.shape}")
        const_t = np.ptp(t, axis=0) == 0
        res = GenePCC(arr, const_t, np.isnan(arr) & ~const_t)
    if len(res) != t.shape[1]:
        raise ValueError(
            f"pcc has {len(res)} genes but y_true has {t.shape[1]}; pass the same section's truth"
        )
    vals = policy_values(res, undefined_pred)
    heg_idx = top_genes(t, by="mean", n_top=n_top)
    hvg_idx = top_genes(t, by="var", n_top=n_top)
    n_used = int(np.isfinite(vals).sum())
    return {
        "acg": finite_mean(vals),
        "heg": finite_mean(vals[heg_idx]),
        "hvg": finite_mean(vals[hvg_idx]),
        "n_genes": len(res),
        "n_genes_used": n_used,
        "n_constant": len(res) - n_used,
        "n_constant_true": res.n_constant_true,
        "n_constant_pred": res.n_constant_pred,
        "heg_n_used": int(np.isfinite(vals[heg_idx]).sum()),
        "hvg_n_used": int(np.isfinite(vals[hvg_idx]).sum()),
        "undefined_pred": undefined_pred,
    }
