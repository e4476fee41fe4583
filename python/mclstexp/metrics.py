"""Evaluation metrics: per-gene Pearson correlation, ACG/HEG/HVG summaries, MSE/MAE, depth control.

Everything here follows ``docs/method.md`` §5 and is labelled so a number can never be read out of
context:

* every record names the **target** normalisation its ground truth used (e.g. ``"legacy_gene"`` for
  the original's per-gene normalisation, ``"default"`` for per-spot normalised log1p);
* every record names its **scope**: ``"per-section"`` (the method's protocol: correlations
  across the spots of ONE section) or ``"pooled"`` (all test spots pooled: inflated, never the
  default);
* genes whose correlation is undefined (constant ground truth or constant prediction in that
  section) are never silently averaged: they are NaN and counted (``n_constant_true``,
  ``n_constant_pred``).

The depth-controlled metric is the partial correlation of truth and prediction given a per-spot
covariate (log library size): both are residualised on ``[1, covariate]`` by least squares and then
correlated. A prediction that only encodes depth scores about zero there, whatever its plain PCC.

Examples
--------
>>> import numpy as np
>>> from mclstexp import metrics
>>> rng = np.random.default_rng(0)
>>> y = rng.normal(size=(100, 60))
>>> rec = metrics.evaluate_section(y, y + rng.normal(size=y.shape), genes=[f"g{i}" for i in
...     range(60)], section="S1", target="default")
>>> rec["scope"], rec["target"], round(rec["acg"], 1)
('per-section', 'default', 0.7)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

SCOPE_SECTION = "per-section"
SCOPE_POOLED = "pooled"
PARTIAL_COVARIATE = "log_library_size"

UndefinedPolicy = Literal["exclude", "zero"]

#: Scalar metrics of a record that :func:`aggregate_records` averages (when present).
METRIC_KEYS: tuple[str, ...] = (
    "acg",
    "heg",
    "hvg",
    "mse",
    "mae",
    "partial_acg",
    "partial_heg",
    "partial_hvg",
    "n_genes_used",
    "n_constant_true",
    "n_constant_pred",
    "partial_n_genes_used",
    "partial_n_constant_pred",
)

# Residuals smaller than this fraction of the centred norm count as "explained by the covariate".
_REL_TOL = 1e-9


# --------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# per-gene correlations
# --------------------------------------------------------------------------------------------
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


def align_expression(
    adata_true: Any, adata_pred: Any, *, layer: str | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Dense truth and prediction matrices of two AnnData objects, aligned by spot and gene name.

    Rows follow ``adata_true.obs_names``; columns are ``adata_true``'s genes (all of which the
    prediction must have). Use it before :func:`evaluate_section` so a reordered prediction can
    never be scored against the wrong spots.

    Parameters
    ----------
    adata_true, adata_pred
        Measured and predicted expression of the same section.
    layer
        Layer of ``adata_true`` holding the target (default ``X``); the prediction uses ``X``.

    Returns
    -------
    tuple
        ``(y_true, y_pred, genes)``: float64 ``(n_spots, n_genes)`` twice and the gene names.

    Examples
    --------
    >>> import anndata as ad, numpy as np
    >>> a = ad.AnnData(np.arange(6.0).reshape(3, 2))
    >>> b = a[::-1, ::-1].copy()
    >>> t, p, g = align_expression(a, b)
    >>> bool((t == p).all()), g
    (True, ['0', '1'])
    """
    miss_obs = adata_true.obs_names.difference(adata_pred.obs_names)
    if len(miss_obs):
        raise ValueError(
            f"{len(miss_obs)} spots of adata_true are missing from adata_pred "
            f"(e.g. {list(miss_obs[:3])})"
        )
    miss_var = adata_true.var_names.difference(adata_pred.var_names)
    if len(miss_var):
        raise ValueError(
            f"{len(miss_var)} genes of adata_true are missing from adata_pred "
            f"(e.g. {list(miss_var[:3])}); predict the same gene panel"
        )
    if not (adata_true.obs_names.is_unique and adata_pred.obs_names.is_unique):
        raise ValueError("obs_names must be unique in both objects to align spots")
    if not (adata_true.var_names.is_unique and adata_pred.var_names.is_unique):
        raise ValueError("var_names must be unique in both objects to align genes")
    t = adata_true.layers[layer] if layer is not None else adata_true.X
    pred = adata_pred[adata_true.obs_names, adata_true.var_names]
    return (
        _as_matrix(t, "adata_true"),
        _as_matrix(pred.X, "adata_pred"),
        [str(g) for g in adata_true.var_names],
    )


# --------------------------------------------------------------------------------------------
# summaries
# --------------------------------------------------------------------------------------------
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
    t = _as_matrix(y_true, "y_true")
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


def _policy_values(res: GenePCC, undefined_pred: UndefinedPolicy) -> np.ndarray:
    vals = np.array(res.pcc, dtype=np.float64, copy=True)
    if undefined_pred == "zero":
        vals[res.constant_pred] = 0.0
    return vals


def _mean_or_nan(v: np.ndarray) -> float:
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
    t = _as_matrix(y_true, "y_true")
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
    vals = _policy_values(res, undefined_pred)
    heg_idx = top_genes(t, by="mean", n_top=n_top)
    hvg_idx = top_genes(t, by="var", n_top=n_top)
    n_used = int(np.isfinite(vals).sum())
    return {
        "acg": _mean_or_nan(vals),
        "heg": _mean_or_nan(vals[heg_idx]),
        "hvg": _mean_or_nan(vals[hvg_idx]),
        "n_genes": len(res),
        "n_genes_used": n_used,
        "n_constant": len(res) - n_used,
        "n_constant_true": res.n_constant_true,
        "n_constant_pred": res.n_constant_pred,
        "heg_n_used": int(np.isfinite(vals[heg_idx]).sum()),
        "hvg_n_used": int(np.isfinite(vals[hvg_idx]).sum()),
        "undefined_pred": undefined_pred,
    }


def mse(y_true: Any, y_pred: Any) -> float:
    """Mean squared error over all (spot, gene) entries.

    Examples
    --------
    >>> import numpy as np
    >>> mse(np.zeros((3, 2)), np.ones((3, 2)))
    1.0
    """
    t, p = _check_pair(y_true, y_pred)
    return float(np.mean((t - p) ** 2))


def mae(y_true: Any, y_pred: Any) -> float:
    """Mean absolute error over all (spot, gene) entries.

    Examples
    --------
    >>> import numpy as np
    >>> mae(np.zeros((3, 2)), np.full((3, 2), -2.0))
    2.0
    """
    t, p = _check_pair(y_true, y_pred)
    return float(np.mean(np.abs(t - p)))


# --------------------------------------------------------------------------------------------
# records
# --------------------------------------------------------------------------------------------
def _check_target(target: str) -> None:
    if not isinstance(target, str) or not target:
        raise ValueError(
            "target must name the ground truth's normalisation (e.g. 'legacy_gene' or 'default')"
        )


def evaluate_section(
    y_true: Any,
    y_pred: Any,
    *,
    genes: Sequence[str],
    section: str,
    target: str,
    log_library_size: Any = None,
    method: str | None = None,
    seed: int | None = None,
    n_top: int = 50,
    undefined_pred: UndefinedPolicy = "exclude",
    per_gene: bool = False,
) -> dict[str, Any]:
    """Evaluate one method on one held-out section: a labelled, JSON-serialisable record.

    Parameters
    ----------
    y_true, y_pred
        ``(n_spots, n_genes)`` ground truth (normalised as ``target``) and prediction.
    genes
        Gene names, one per column.
    section
        Id of the held-out section.
    target
        Name of the normalisation of ``y_true`` (e.g. ``"legacy_gene"``, ``"default"``).
    log_library_size
        ``(n_spots,)`` per-spot log library size of the truth's spots; when given, the record also
        carries the depth-controlled ``partial_acg`` / ``partial_heg`` / ``partial_hvg`` (over
        the same HEG/HVG genes, selected on the truth). A prediction that is an exact function of
        depth (e.g. ``library_size_oracle``) has an undefined partial PCC for every gene: NaN
        with ``partial_n_constant_pred`` = all genes, or 0 with ``undefined_pred="zero"``.
    method, seed
        Labels copied into the record (row label, training seed).
    n_top, undefined_pred
        See :func:`summarize_pcc`.
    per_gene
        Also store the per-gene PCC (``pcc_per_gene``, NaN as ``None``) and the HEG/HVG names.

    Returns
    -------
    dict
        ``section``, ``method``, ``seed``, ``target``, ``scope="per-section"``, ``n_spots``,
        ``n_genes``, ``acg``, ``heg``, ``hvg``, ``n_genes_used``, ``n_constant_true``,
        ``n_constant_pred``, ``mse``, ``mae``, and with ``log_library_size`` the ``partial_*``
        metrics and ``partial_covariate``.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.random.default_rng(1).normal(size=(50, 4))
    >>> r = evaluate_section(y, y, genes=list("abcd"), section="C2", target="default")
    >>> r["acg"], r["mse"], r["scope"]
    (1.0, 0.0, 'per-section')
    """
    _check_target(target)
    t, p = _check_pair(y_true, y_pred)
    gene_names = [str(g) for g in genes]
    if len(gene_names) != t.shape[1]:
        raise ValueError(f"genes has {len(gene_names)} names but the matrices have {t.shape[1]}")
    res = pearson_per_gene(t, p)
    summ = summarize_pcc(res, t, n_top=n_top, undefined_pred=undefined_pred)
    rec: dict[str, Any] = {
        "section": str(section),
        "method": method,
        "seed": seed,
        "target": target,
        "scope": SCOPE_SECTION,
        "n_spots": int(t.shape[0]),
        "n_genes": int(t.shape[1]),
        "n_top": int(n_top),
        "undefined_pred": undefined_pred,
    }
    for key in ("acg", "heg", "hvg", "n_genes_used", "n_constant_true", "n_constant_pred"):
        rec[key] = summ[key]
    rec["mse"] = float(np.mean((t - p) ** 2))
    rec["mae"] = float(np.mean(np.abs(t - p)))
    if log_library_size is not None:
        part = partial_pcc_per_gene(t, p, log_library_size)
        ps = summarize_pcc(part, t, n_top=n_top, undefined_pred=undefined_pred)
        rec["partial_covariate"] = PARTIAL_COVARIATE
        for key in ("acg", "heg", "hvg", "n_genes_used", "n_constant_true", "n_constant_pred"):
            rec[f"partial_{key}"] = ps[key]
    if per_gene:
        rec["pcc_per_gene"] = {
            g: (None if not np.isfinite(v) else float(v))
            for g, v in zip(gene_names, res.pcc, strict=True)
        }
        rec["heg_genes"] = [gene_names[i] for i in top_genes(t, by="mean", n_top=n_top)]
        rec["hvg_genes"] = [gene_names[i] for i in top_genes(t, by="var", n_top=n_top)]
    return rec


def pooled_pcc(
    y_true: Sequence[Any],
    y_pred: Sequence[Any],
    *,
    target: str,
    method: str | None = None,
    seed: int | None = None,
    n_top: int = 50,
    undefined_pred: UndefinedPolicy = "exclude",
) -> dict[str, Any]:
    """PCC with the spots of several sections POOLED into one correlation (labelled "pooled").

    Pooling mixes between-section differences into every gene's correlation and inflates it
    (method.md §5); it is reported only for comparison with publications that pooled, never as
    the default. Use :func:`evaluate_section` per section for the method's protocol.

    Parameters
    ----------
    y_true, y_pred
        Sequences of ``(n_spots_s, n_genes)`` matrices, one per section, same genes.
    target, method, seed, n_top, undefined_pred
        As in :func:`evaluate_section`.

    Returns
    -------
    dict
        ``scope="pooled"``, ``n_sections``, ``n_spots``, ``acg``, ``heg``, ``hvg`` and counts.

    Examples
    --------
    >>> import numpy as np
    >>> y = [np.random.default_rng(s).normal(size=(20, 3)) for s in range(2)]
    >>> pooled_pcc(y, y, target="default")["scope"]
    'pooled'
    """
    _check_target(target)
    if isinstance(y_true, np.ndarray) or isinstance(y_pred, np.ndarray):
        raise TypeError("pooled_pcc takes sequences of per-section matrices (e.g. lists)")
    if len(y_true) != len(y_pred) or len(y_true) == 0:
        raise ValueError("y_true and y_pred must be non-empty sequences of equal length")
    t = np.vstack([_as_matrix(a, "y_true") for a in y_true])
    p = np.vstack([_as_matrix(a, "y_pred") for a in y_pred])
    summ = summarize_pcc(pearson_per_gene(t, p), t, n_top=n_top, undefined_pred=undefined_pred)
    rec: dict[str, Any] = {
        "section": "pooled",
        "method": method,
        "seed": seed,
        "target": target,
        "scope": SCOPE_POOLED,
        "n_sections": len(y_true),
        "n_spots": int(t.shape[0]),
        "n_genes": int(t.shape[1]),
        "n_top": int(n_top),
    }
    rec.update({k: summ[k] for k in ("acg", "heg", "hvg", "n_genes_used", "n_constant_true")})
    rec["n_constant_pred"] = summ["n_constant_pred"]
    rec["undefined_pred"] = undefined_pred
    return rec


def _label(v: Any) -> str:
    """Seed/section label: ``3.0`` (pandas upcast next to a missing value) -> ``"3"``."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def aggregate_records(
    records: Iterable[Mapping[str, Any]] | Any,
    *,
    by: Sequence[str] = ("method", "target", "scope"),
    metrics: Sequence[str] = METRIC_KEYS,
) -> Any:
    """Mean and sd of every metric over the records of each group (sections and seeds).

    ``target`` and ``scope`` are always part of the grouping, so normalisations and per-section vs
    pooled numbers are never mixed. A NaN in any record of a group makes that group's mean NaN
    (nothing is silently dropped); ``sd`` uses ``ddof=1`` (NaN for a single record).

    Parameters
    ----------
    records
        Records from :func:`evaluate_section` (list of dicts or a pandas DataFrame).
    by
        Grouping columns (missing ones are filled with ``None``).
    metrics
        Metric columns to aggregate (those absent from every record are skipped).

    Returns
    -------
    pandas.DataFrame
        One row per group: the ``by`` columns, ``n_records``, ``sections``, ``seeds`` and
        ``<metric>_mean``, ``<metric>_sd`` per metric.

    Examples
    --------
    >>> recs = [{"method": "m", "target": "default", "scope": "per-section", "section": s,
    ...          "acg": a} for s, a in [("A", 0.1), ("B", 0.3)]]
    >>> df = aggregate_records(recs)
    >>> round(float(df["acg_mean"].iloc[0]), 3), int(df["n_records"].iloc[0])
    (0.2, 2)
    """
    import pandas as pd

    df = records.copy() if isinstance(records, pd.DataFrame) else pd.DataFrame(list(records))
    if df.empty:
        raise ValueError("records is empty; nothing to aggregate")
    keys = list(dict.fromkeys([*by, "target", "scope"]))
    for k in keys:
        if k not in df.columns:
            df[k] = None
    present = [m for m in metrics if m in df.columns]
    rows = []
    for group, sub in df.groupby(keys, dropna=False, sort=False):
        row: dict[str, Any] = dict(zip(keys, group, strict=True))
        row["n_records"] = len(sub)
        if "section" in sub.columns:
            row["sections"] = ",".join(dict.fromkeys(str(s) for s in sub["section"]))
        if "seed" in sub.columns:
            row["seeds"] = ",".join(dict.fromkeys(_label(s) for s in sub["seed"] if _label(s)))
        for m in present:
            v = pd.to_numeric(sub[m], errors="coerce").to_numpy(dtype=np.float64)
            row[f"{m}_mean"] = float(v.mean())
            row[f"{m}_sd"] = float(v.std(ddof=1)) if v.size > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# spatial domains
# --------------------------------------------------------------------------------------------
def spatial_domains_ari(
    pred_expression: Any,
    labels: Any,
    *,
    n_components: int = 9,
    seed: int = 0,
    drop: Sequence[str] = ("undetermined",),
    n_init: int = 10,
) -> dict[str, Any]:
    """Spatial domains from predicted expression vs pathologist labels (method.md §5).

    Spots labelled ``"undetermined"`` (or missing) are dropped; the predicted expression is reduced
    by PCA to ``n_components`` and clustered by KMeans with K = number of label classes
    (k-means++, ``random_state=seed``); the clusters are compared with the labels.

    Parameters
    ----------
    pred_expression
        ``(n_spots, n_genes)`` predicted expression (array, sparse or AnnData: its ``X``).
    labels
        ``(n_spots,)`` region labels.
    n_components, seed, drop, n_init
        PCA size, random seed, labels to drop (case-insensitive), KMeans restarts.

    Returns
    -------
    dict
        ``ari``, ``nmi``, ``n_spots`` (kept), ``n_dropped``, ``n_classes``, ``n_components``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.repeat(np.eye(3) * 10, 20, axis=0) + np.random.default_rng(0).normal(size=(60, 3))
    >>> spatial_domains_ari(x, np.repeat(["a", "b", "c"], 20))["ari"]
    1.0
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    x_in = pred_expression.X if hasattr(pred_expression, "obs_names") else pred_expression
    x = _as_matrix(x_in, "pred_expression")
    lab = np.asarray(labels, dtype=object).ravel()
    if lab.shape[0] != x.shape[0]:
        raise ValueError(
            f"labels has {lab.shape[0]} entries but pred_expression {x.shape[0]} spots"
        )
    drop_set = {d.lower() for d in drop}
    keep = np.array(
        [
            not (v is None or (isinstance(v, float) and np.isnan(v)) or str(v).lower() in drop_set)
            for v in lab
        ],
        dtype=bool,
    )
    lab_k = lab[keep].astype(str)
    classes = np.unique(lab_k)
    if classes.size < 2:
        raise ValueError(
            f"need at least 2 label classes after dropping {list(drop)}, got {classes}"
        )
    xk = x[keep]
    n_comp = int(min(n_components, xk.shape[0], xk.shape[1]))
    emb = PCA(n_components=n_comp, random_state=seed).fit_transform(xk)
    km = KMeans(n_clusters=classes.size, init="k-means++", n_init=n_init, random_state=seed)
    clusters = km.fit_predict(emb)
    return {
        "ari": float(adjusted_rand_score(lab_k, clusters)),
        "nmi": float(normalized_mutual_info_score(lab_k, clusters)),
        "n_spots": int(keep.sum()),
        "n_dropped": int((~keep).sum()),
        "n_classes": int(classes.size),
        "n_components": n_comp,
    }


__all__ = [
    "METRIC_KEYS",
    "SCOPE_POOLED",
    "SCOPE_SECTION",
    "GenePCC",
    "aggregate_records",
    "align_expression",
    "evaluate_section",
    "log_library_size",
    "mae",
    "mse",
    "partial_pcc_per_gene",
    "pearson_per_gene",
    "pooled_pcc",
    "spatial_domains_ari",
    "summarize_pcc",
    "top_genes",
]
