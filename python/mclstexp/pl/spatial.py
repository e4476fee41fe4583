"""Side-by-side spatial maps of measured and predicted expression over the H&E thumbnail."""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mclstexp import _keys
from mclstexp.pl._base import new_figure, save_figure


def _gene_column(adata: Any, gene: str, which: str) -> np.ndarray:
    if gene not in adata.var_names:
        raise ValueError(f"gene {gene!r} is not in {which}.var_names")
    col = adata[:, gene].X
    if hasattr(col, "toarray"):
        col = col.toarray()
    return np.asarray(col, dtype=np.float64).ravel()


def plottable_genes(
    genes: str | Sequence[str], available: Sequence[str], *, where: str = "the predictions"
) -> list[str]:
    """The requested genes that ``available`` has, in request order; a warning names the others
    with the closest available names (``difflib``).

    Parameters
    ----------
    genes
        Gene name(s) asked for (e.g. ``--plot-genes``).
    available
        The gene names there are (``var_names``, a reference's genes).
    where
        What ``available`` belongs to, for the messages.

    Returns
    -------
    list of str
        The known genes, without repeats.

    Raises
    ------
    ValueError
        None of ``genes`` is available (the message names the closest names), or none asked.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as seen:
    ...     warnings.simplefilter("always")
    ...     plottable_genes(["ERBB2", "CD74"], ["CD74", "ERBB3", "EPCAM"])
    ['CD74']
    >>> print(seen[0].message)
    1 gene not in the predictions, not plotted: 'ERBB2' (closest: 'ERBB3')
    """
    asked = [genes] if isinstance(genes, str) else [str(g) for g in genes]
    if not asked:
        raise ValueError("genes is empty; pass at least one gene name")
    names = [str(g) for g in available]
    have = set(names)
    known = list(dict.fromkeys(g for g in asked if g in have))
    unknown = list(dict.fromkeys(g for g in asked if g not in have))

    def described(gene: str) -> str:
        close = difflib.get_close_matches(gene, names, n=3, cutoff=0.6)
        hint = ", ".join(map(repr, close)) if close else "no similar name"
        return f"{gene!r} (closest: {hint})"

    if not known:
        raise ValueError(
            f"none of the genes {asked} is in {where}: {'; '.join(map(described, unknown))}"
        )
    if unknown:
        warnings.warn(
            f"{len(unknown)} gene{'s' if len(unknown) > 1 else ''} not in {where}, not plotted: "
            + "; ".join(map(described, unknown)),
            UserWarning,
            stacklevel=2,
        )
    return known


def _spot_diameter(xy: np.ndarray) -> float:
    """Median nearest-neighbour distance of the spots (their pitch), in plot units."""
    if xy.shape[0] < 2:
        return 1.0
    from scipy.spatial import cKDTree

    d, _ = cKDTree(xy).query(xy, k=2)
    nn = d[:, 1]
    nn = nn[nn > 0]
    return float(np.median(nn)) if nn.size else 1.0


def spatial_expression(
    adata_true: Any,
    adata_pred: Any,
    genes: str | Sequence[str],
    *,
    image: np.ndarray | None = None,
    scale: float = 1.0,
    path: str | Path | None = None,
    title: str | None = None,
    cmap: str = "viridis",
    dpi: int = 120,
) -> Any:
    """Measured vs predicted expression of chosen genes, spot by spot, over the H&E thumbnail.

    One row per gene: measured (left) and predicted (right), drawn as discs at
    ``obsm["spatial"] * scale`` with one colour scale per gene shared by both panels (1st-99th
    percentile of the two together), a colour bar, and the gene's PCC across the spots in the
    title. Headless (no pyplot); nothing is shown.

    Parameters
    ----------
    adata_true
        Measured expression (``X``, same normalisation as the prediction) with
        ``obsm["spatial"]`` full-resolution pixel centres (x = column, y = row).
    adata_pred
        Predicted expression; its ``obs_names`` must cover ``adata_true``'s (rows are aligned
        by name).
    genes
        One gene name or a list of them (present in both ``var_names``; others are left out with
        a warning naming the closest names, see :func:`plottable_genes`).
    image
        Optional ``(h, w, 3)`` thumbnail of the section drawn underneath (uint8 or float in
        [0, 1]); ``scale`` maps full-resolution pixels to its pixels.
    scale
        Factor from ``obsm["spatial"]`` to thumbnail pixels (e.g. 1/16 for a 16x thumbnail).
    path
        Where to write the figure (PNG unless the suffix says otherwise); None to only return it.
    title, cmap, dpi
        Figure title (default: the section from ``uns``), colour map, resolution of the file.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import anndata as ad, numpy as np
    >>> xy = np.array([[x, y] for x in range(10) for y in range(10)], float) * 100
    >>> a = ad.AnnData(np.random.default_rng(0).random((100, 2)), obsm={"spatial": xy})
    >>> a.var_names = ["G1", "G2"]
    >>> fig = spatial_expression(a, a, ["G1"])
    >>> len(fig.axes) >= 2
    True
    """
    from matplotlib.colors import Normalize

    both = [g for g in adata_true.var_names if g in set(adata_pred.var_names)]
    genes = plottable_genes(genes, both, where="both adata_true and adata_pred")
    gene_list, xy, diam, (x0, x1, y0, y1) = _map_inputs(adata_true, "adata_true", genes, scale)
    missing = adata_true.obs_names.difference(adata_pred.obs_names)
    if len(missing):
        raise ValueError(
            f"{len(missing)} spots of adata_true are missing from adata_pred "
            f"(e.g. {list(missing[:3])}); predict the same section's spots"
        )
    pred = adata_pred[adata_true.obs_names]
    if image is not None:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] not in (3, 4):
            raise ValueError(f"image must be (h, w, 3) RGB, got shape {image.shape}")

    aspect = (y1 - y0) / max(x1 - x0, 1e-9)
    panel_w = 3.6
    panel_h = float(np.clip(panel_w * aspect, 2.0, 6.0))
    fig = new_figure((2 * panel_w + 1.0, len(gene_list) * (panel_h + 0.5) + 0.5))
    axes = fig.subplots(len(gene_list), 2, squeeze=False)

    from mclstexp.metrics import pearson_per_gene

    for row, gene in enumerate(gene_list):
        vt = _gene_column(adata_true, gene, "adata_true")
        vp = _gene_column(pred, gene, "adata_pred")
        both = np.concatenate([vt, vp])
        finite = both[np.isfinite(both)]
        lo, hi = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        norm = Normalize(vmin=lo, vmax=hi)
        if np.isfinite(vt).all() and np.isfinite(vp).all() and vt.size >= 3:
            r = float(pearson_per_gene(vt[:, None], vp[:, None]).pcc[0])
        else:
            r = float("nan")
        pcc_txt = f"PCC = {r:.3f}" if np.isfinite(r) else "PCC undefined (constant)"
        coll = None
        for col, (vals, label) in enumerate(((vt, "measured"), (vp, f"predicted, {pcc_txt}"))):
            ax = axes[row, col]
            coll = _draw_spots(ax, xy, vals, diam, norm, cmap, image, (x0, x1, y0, y1))
            ax.set_title(f"{gene}: {label}", fontsize=10)
        cb = fig.colorbar(coll, ax=list(axes[row]), shrink=0.85, pad=0.02)
        cb.set_label(f"{gene} expression", fontsize=9)

    if title is None:
        section = _keys.section_id(adata_true, default="")
        title = "Measured vs predicted expression" + (f", section {section}" if section else "")
    fig.suptitle(title, fontsize=12)
    save_figure(fig, path, dpi=dpi)
    return fig


def _map_inputs(
    adata: Any, name: str, genes: str | Sequence[str], scale: float
) -> tuple[list[str], np.ndarray, float, tuple[float, float, float, float]]:
    """Validate map arguments; return genes, scaled spot centres, spot diameter and axis limits."""
    gene_list = [genes] if isinstance(genes, str) else [str(g) for g in genes]
    if not gene_list:
        raise ValueError("genes is empty; pass at least one gene name")
    if _keys.SPATIAL not in adata.obsm:
        raise ValueError(f'{name} has no obsm["{_keys.SPATIAL}"] (spot pixel centres)')
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale}")
    xy = np.asarray(adata.obsm[_keys.SPATIAL], dtype=np.float64)[:, :2] * scale
    diam = _spot_diameter(xy)
    pad = 1.5 * diam
    limits = (
        xy[:, 0].min() - pad,
        xy[:, 0].max() + pad,
        xy[:, 1].min() - pad,
        xy[:, 1].max() + pad,
    )
    return gene_list, xy, diam, limits


def _draw_spots(
    ax: Any,
    xy: np.ndarray,
    values: np.ndarray,
    diam: float,
    norm: Any,
    cmap: str,
    image: np.ndarray | None,
    limits: tuple[float, float, float, float],
) -> Any:
    """One map panel: the H&E thumbnail (if any) under spots coloured by ``values``."""
    from matplotlib.collections import EllipseCollection

    if image is not None:
        ax.imshow(image, interpolation="antialiased")
    coll = EllipseCollection(
        widths=np.full(len(xy), 0.9 * diam),
        heights=np.full(len(xy), 0.9 * diam),
        angles=np.zeros(len(xy)),
        units="xy",
        offsets=xy,
        offset_transform=ax.transData,
        cmap=cmap,
        norm=norm,
        edgecolors="none",
    )
    coll.set_array(np.ma.masked_invalid(values))
    ax.add_collection(coll)
    x0, x1, y0, y1 = limits
    ax.set_xlim(x0, x1)
    ax.set_ylim(y1, y0)  # image convention: y grows downwards
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    return coll


def spatial_prediction(
    adata_pred: Any,
    genes: str | Sequence[str],
    *,
    image: np.ndarray | None = None,
    scale: float = 1.0,
    path: str | Path | None = None,
    title: str | None = None,
    cmap: str = "viridis",
    dpi: int = 120,
) -> Any:
    """Predicted expression of chosen genes over the H&E thumbnail (no measurement needed).

    For dense prediction on a slide without expression (``mclstexp predict --grid``): one panel
    per gene, every patch of the tissue grid coloured by its predicted value.

    Parameters
    ----------
    adata_pred
        Predictions with ``obsm["spatial"]`` (full-resolution pixel centres).
    genes
        Gene name(s) to draw; unknown ones are left out with a warning naming the closest names
        (:func:`plottable_genes`).
    image, scale
        Optional RGB thumbnail and its scale relative to full resolution.
    path
        Where to write the PNG (None: only return the figure).

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> spatial_prediction(pred, ["ERBB2"], path="erbb2.png")  # doctest: +SKIP
    """
    from matplotlib.colors import Normalize

    genes = plottable_genes(genes, adata_pred.var_names, where="adata_pred")
    gene_list, xy, diam, limits = _map_inputs(adata_pred, "adata_pred", genes, scale)
    aspect = (limits[3] - limits[2]) / max(limits[1] - limits[0], 1e-9)
    ncols = min(len(gene_list), 3)
    nrows = -(-len(gene_list) // ncols)
    panel_w = 4.0
    panel_h = float(np.clip(panel_w * aspect, 2.0, 6.0))
    fig = new_figure((ncols * (panel_w + 0.8), nrows * (panel_h + 0.6) + 0.5))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.ravel()[len(gene_list) :]:
        ax.set_axis_off()
    for ax, gene in zip(axes.ravel(), gene_list, strict=False):
        vals = _gene_column(adata_pred, gene, "adata_pred")
        finite = vals[np.isfinite(vals)]
        lo, hi = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        coll = _draw_spots(ax, xy, vals, diam, Normalize(vmin=lo, vmax=hi), cmap, image, limits)
        ax.set_title(f"{gene}: predicted", fontsize=10)
        fig.colorbar(coll, ax=ax, shrink=0.85, pad=0.02).set_label(f"{gene} expression", fontsize=9)
    fig.suptitle(title or "Predicted expression", fontsize=12)
    save_figure(fig, path, dpi=dpi)
    return fig
