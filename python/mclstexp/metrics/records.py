"""Labelled evaluation records: one held-out section (:func:`evaluate_section`) or pooled sections.

Every record names the **target** normalisation of its ground truth and its **scope**
(``"per-section"``, the method's protocol, or ``"pooled"``), so a number is never read out of
context (``docs/method.md`` §5).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mclstexp._validate import dense_matrix
from mclstexp.metrics._checks import _check_pair, _check_target
from mclstexp.metrics.correlation import (
    UndefinedPolicy,
    partial_pcc_per_gene,
    pearson_per_gene,
    summarize_pcc,
    top_genes,
)
from mclstexp.metrics.error import mae, mse

__all__ = [
    "PARTIAL_COVARIATE",
    "SCOPE_POOLED",
    "SCOPE_SECTION",
    "align_expression",
    "evaluate_section",
    "pooled_pcc",
]

SCOPE_SECTION = "per-section"
SCOPE_POOLED = "pooled"
PARTIAL_COVARIATE = "log_library_size"


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
        dense_matrix(t, "adata_true"),
        dense_matrix(pred.X, "adata_pred"),
        [str(g) for g in adata_true.var_names],
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
    rec["mse"] = mse(t, p)
    rec["mae"] = mae(t, p)
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
    t = np.vstack([dense_matrix(a, "y_true") for a in y_true])
    p = np.vstack([dense_matrix(a, "y_pred") for a in y_pred])
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
