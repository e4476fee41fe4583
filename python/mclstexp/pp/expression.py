"""Expression normalisation: library size + log, guarded against zero-count spots and genes.

Three flavours (see the method notes, sections 2 and 7):

``"default"``
    Per spot, normalise the total over *all* genes of the source file (``obs["library_size"]``) to
    ``target_sum`` (1e4), take the natural ``log1p``, then keep the panel genes. One normalisation
    for model input, training target and reference values alike.
``"legacy_spot"``
    The original code's model input: per spot over the *panel* genes,
    ``log10(1 + 1e4 * c / sum_panel(c))``.
``"legacy_gene"``
    The original code's ground truth and reference values: the same formula applied per *gene*
    within the section, ``log10(1 + 1e4 * c / sum_spots(c))`` (it divides by the gene's total).

A spot (or, for ``"legacy_gene"``, a gene) whose denominator is zero gets zeros, never NaN, and a
:class:`mclstexp.exceptions.DataWarning` says how many and which.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from mclstexp import _keys as K
from mclstexp.exceptions import DataWarning

Flavor = Literal["default", "legacy_spot", "legacy_gene"]
FLAVORS: tuple[str, ...] = ("default", "legacy_spot", "legacy_gene")


def _section_name(adata: AnnData) -> str:
    section = K.section_id(adata, default="")
    return f"section {section!r}" if section else "the AnnData"


def _as_csr(x: Any) -> sp.csr_matrix:
    if sp.issparse(x):
        return sp.csr_matrix(x, dtype=np.float64)
    return sp.csr_matrix(np.asarray(x, dtype=np.float64))


def _check_counts(counts: sp.csr_matrix, where: str) -> None:
    data = counts.data
    if data.size == 0:
        return
    if not np.all(np.isfinite(data)):
        raise ValueError(
            f"{where}: the counts contain NaN or infinite values; pass raw UMI counts "
            "(adata.X or adata.layers['counts'])"
        )
    if data.min() < 0:
        raise ValueError(
            f"{where}: the counts contain negative values (min {data.min():g}); pass raw, "
            "non-negative UMI counts, not already normalised or scaled data"
        )


def _gene_index(adata: AnnData, genes: Sequence[str] | None, where: str) -> np.ndarray:
    if genes is None:
        return np.arange(adata.n_vars)
    if isinstance(genes, str):
        raise TypeError("genes: expected a sequence of gene names, got a single string")
    genes = [str(g) for g in genes]
    if len(genes) == 0:
        raise ValueError("genes: the gene list is empty")
    seen: set[str] = set()
    dupes = [g for g in genes if g in seen or seen.add(g)]  # type: ignore[func-returns-value]
    if dupes:
        raise ValueError(f"genes: duplicated gene names {dupes[:10]}; pass each gene once")
    if not adata.var_names.is_unique:
        raise ValueError(
            f"{where}: var_names are not unique; call adata.var_names_make_unique() first"
        )
    index = adata.var_names.get_indexer(genes)
    missing = [g for g, i in zip(genes, index, strict=True) if i < 0]
    if missing:
        raise ValueError(
            f"{where}: {len(missing)} of {len(genes)} requested genes are absent "
            f"(e.g. {missing[:10]}); choose genes present in every section, e.g. with "
            "mclstexp.pp.select_genes([...])"
        )
    return index


def _warn_zero(n: int, total: int, what: str, ids: Any, where: str, why: str) -> None:
    if n == 0:
        return
    shown = ", ".join(map(str, ids[:5])) + (", ..." if n > 5 else "")
    warnings.warn(
        f"{where}: {n} of {total} {what} have zero counts {why}; their normalised expression "
        f"is set to 0 instead of NaN ({shown})",
        DataWarning,
        stacklevel=4,  # normalize_expression -> _apply_flavor -> here
    )


def normalize_expression(
    adata: AnnData,
    *,
    genes: Sequence[str] | None = None,
    flavor: Flavor = "default",
    target_sum: float = 1e4,
    copy: bool = True,
) -> AnnData | None:
    """Normalise raw counts for library size, log-transform, and restrict to a gene panel.

    Parameters
    ----------
    adata
        A section with raw counts in ``X`` (or in ``layers["counts"]`` when ``X`` was already
        normalised). ``obs["library_size"]`` (total counts over all genes of the source file) is
        used when present, else computed from all of ``adata``'s genes before subsetting.
    genes
        The panel, in the order wanted for the output columns (all genes when ``None``). Every gene
        must be present; missing genes raise ``ValueError`` naming them.
    flavor
        ``"default"``: per spot, normalise the all-gene total to ``target_sum``, natural ``log1p``,
        then subset. ``"legacy_spot"``: per spot over the panel genes,
        ``log10(1 + target_sum * c / sum_panel(c))`` (the original's model input).
        ``"legacy_gene"``: the same formula per gene within the section (the original's ground
        truth and reference values).
    target_sum
        The library size each spot (or gene) is scaled to.
    copy
        Return a new AnnData (``True``), or modify ``adata`` in place and return ``None``.

    Returns
    -------
    AnnData or None
        ``X`` dense float32 normalised expression of ``genes``; ``layers["counts"]`` the raw counts
        of those genes (CSR float32); ``obs["library_size"]`` kept or added; the flavour, constants
        and the number of zero-count spots/genes recorded in ``uns["mclstexp"]["normalization"]``.

    Warns
    -----
    DataWarning
        When spots (or genes, for ``"legacy_gene"``) have zero counts in the denominator; their
        values are set to 0.

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> a = ad.AnnData(np.array([[1.0, 3.0], [2.0, 2.0]], dtype=np.float32))
    >>> b = normalize_expression(a)
    >>> bool(np.allclose(b.X[0], np.log1p([2500.0, 7500.0])))
    True
    """
    if flavor not in FLAVORS:
        raise ValueError(f"flavor: expected one of {FLAVORS}, got {flavor!r}")
    if not (np.isfinite(target_sum) and target_sum > 0):
        raise ValueError(f"target_sum: expected a positive number, got {target_sum!r}")
    where = _section_name(adata)
    if not copy and adata.is_view:
        raise ValueError(
            f"copy: {where} is a view of another AnnData and cannot be changed in place; "
            "pass copy=True (the default) or adata.copy()"
        )
    raw = adata.layers.get(K.LAYER_COUNTS, adata.X)
    if raw is None:
        raise ValueError(f"{where}: adata.X is empty; pass an AnnData with raw counts")
    counts = _as_csr(raw)
    _check_counts(counts, where)
    idx = _gene_index(adata, genes, where)

    library = _library_size(adata, counts, where)
    sub = counts[:, idx]
    out, info = _apply_flavor(adata, sub.toarray(), library, idx, flavor, target_sum, where)

    new = AnnData(
        X=out.astype(np.float32),
        obs=adata.obs.copy(),
        var=adata.var.iloc[idx].copy(),
        obsm={k: np.array(v, copy=True) for k, v in adata.obsm.items()},
        layers={K.LAYER_COUNTS: sp.csr_matrix(sub, dtype=np.float32)},
        uns=_copy_uns(adata.uns),
    )
    new.obs[K.LIBRARY_SIZE] = library
    meta = dict(new.uns.get(K.UNS, {}))
    meta[K.UNS_NORMALIZATION] = info
    new.uns[K.UNS] = meta
    if copy:
        return new
    adata._init_as_actual(
        X=new.X,
        obs=new.obs,
        var=new.var,
        uns=new.uns,
        obsm=new.obsm,
        varm={},
        obsp=dict(adata.obsp.items()),
        varp={},
        layers=new.layers,
    )
    return None


def _library_size(adata: AnnData, counts: sp.csr_matrix, where: str) -> np.ndarray:
    """``obs["library_size"]`` when present (checked), else the spots' totals over all genes."""
    if K.LIBRARY_SIZE not in adata.obs:
        return np.asarray(counts.sum(axis=1)).ravel()
    library = np.asarray(adata.obs[K.LIBRARY_SIZE], dtype=np.float64)
    if not np.all(np.isfinite(library)) or library.min(initial=0.0) < 0:
        raise ValueError(
            f"{where}: obs['{K.LIBRARY_SIZE}'] has negative or non-finite values; drop the "
            "column to have it recomputed from the counts"
        )
    return library


def _scale(denom: np.ndarray, target_sum: float) -> tuple[np.ndarray, np.ndarray]:
    """``target_sum / denom`` where the denominator is positive, else 0; and where it is 0."""
    ok = denom > 0
    scale = np.zeros_like(denom)
    scale[ok] = target_sum / denom[ok]
    return scale, np.flatnonzero(~ok)


def _apply_flavor(
    adata: AnnData,
    dense: np.ndarray,
    library: np.ndarray,
    idx: np.ndarray,
    flavor: str,
    target_sum: float,
    where: str,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The normalised panel ``dense`` (spots x panel genes) and what was done, per ``flavor``."""
    info: dict[str, Any] = {"flavor": flavor, "target_sum": float(target_sum)}
    spots = np.asarray(adata.obs_names)
    if flavor == "default":
        scale, zero = _scale(library, target_sum)
        out = np.log1p(dense * scale[:, None])
        info["log"] = "natural log1p"
        info["denominator"] = "library_size (all genes of the source file)"
        info["n_zero_spots"] = int(zero.size)
        _warn_zero(zero.size, adata.n_obs, "spots", spots[zero], where, "over all genes")
    elif flavor == "legacy_spot":
        scale, zero = _scale(dense.sum(axis=1), target_sum)
        out = np.log10(1.0 + dense * scale[:, None])
        info["log"] = "log10(1 + x)"
        info["denominator"] = "per-spot total over the panel genes"
        info["n_zero_spots"] = int(zero.size)
        _warn_zero(zero.size, adata.n_obs, "spots", spots[zero], where, "over the panel genes")
    else:
        scale, zero = _scale(dense.sum(axis=0), target_sum)
        out = np.log10(1.0 + dense * scale[None, :])
        info["log"] = "log10(1 + x)"
        info["denominator"] = "per-gene total over the section's spots"
        info["n_zero_genes"] = int(zero.size)
        names = np.asarray(adata.var_names)[idx]
        _warn_zero(zero.size, idx.size, "genes", names[zero], where, "over the section's spots")
    return out, info


def _copy_uns(uns: Any) -> dict[str, Any]:
    import copy

    return copy.deepcopy(dict(uns))
