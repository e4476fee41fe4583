"""Summary charts: distribution of per-gene PCC per method, and metric per fold x method."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mclstexp.pl._base import METRIC_LABELS, new_figure, save_figure


def pcc_distribution(
    pcc_by_method: Mapping[str, Any],
    *,
    path: str | Path | None = None,
    title: str | None = None,
    dpi: int = 120,
) -> Any:
    """Distribution of per-gene PCC for each method (violin + points), with the mean marked.

    NaN values (genes whose PCC is undefined) are left out of the violin and the mean, and
    counted in the method's label; a method with no defined value is shown as "no defined PCC".

    Parameters
    ----------
    pcc_by_method
        Method name -> per-gene PCC (array or :class:`mclstexp.metrics.GenePCC`).
    path
        Where to write the figure (PNG by default); None to only return it.
    title, dpi
        Figure title (say the section, target and scope) and file resolution.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np
    >>> fig = pcc_distribution({"model": np.array([0.1, 0.3, np.nan]), "mean": np.full(3, np.nan)})
    >>> fig.axes[0].get_ylabel()
    'per-gene PCC'
    """
    if not pcc_by_method:
        raise ValueError("pcc_by_method is empty; pass {method name: per-gene PCC array}")
    names = list(pcc_by_method)
    values = []
    for name in names:
        v = np.asarray(pcc_by_method[name], dtype=np.float64).ravel()
        values.append(v)
    fig = new_figure((max(4.5, 1.6 * len(names) + 2.0), 4.8))
    ax = fig.subplots()
    rng = np.random.default_rng(0)
    labels = []
    for i, (name, v) in enumerate(zip(names, values, strict=True)):
        pos = i + 1
        fin = v[np.isfinite(v)]
        n_nan = int(v.size - fin.size)
        if fin.size >= 3 and np.ptp(fin) > 0:
            parts = ax.violinplot([fin], positions=[pos], widths=0.8, showextrema=False)
            for body in parts["bodies"]:
                body.set_facecolor(f"C{i % 10}")
                body.set_alpha(0.35)
        if fin.size:
            jitter = rng.uniform(-0.12, 0.12, fin.size)
            ax.scatter(pos + jitter, fin, s=4, color=f"C{i % 10}", alpha=0.5, linewidths=0)
            mean = float(fin.mean())
            ax.hlines(mean, pos - 0.3, pos + 0.3, color="black", linewidth=2)
            ax.annotate(
                f"mean {mean:.3f}",
                (pos + 0.32, mean),
                fontsize=8,
                va="center",
            )
        else:
            ax.text(pos, 0.0, "no defined\nPCC", ha="center", va="center", fontsize=8)
        extra = f"\n{n_nan} undefined" if n_nan else ""
        labels.append(f"{name}\n(n={fin.size}){extra}")
    ax.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(1, len(names) + 1), labels, fontsize=9)
    ax.set_xlim(0.4, len(names) + 0.9)
    ax.set_ylim(-1.05, 1.05)
    ax.set_ylabel("per-gene PCC")
    ax.set_title(title or "Per-gene PCC by method (black bar = mean)", fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path, dpi=dpi)
    return fig


def _records_frame(records_table: Any) -> Any:
    import pandas as pd

    if isinstance(records_table, pd.DataFrame):
        return records_table.copy()
    return pd.DataFrame(list(records_table))


def fold_summary(
    records_table: Any,
    *,
    metric: str = "acg",
    target: str | None = None,
    scope: str = "per-section",
    methods: Sequence[str] | None = None,
    path: str | Path | None = None,
    title: str | None = None,
    dpi: int = 120,
) -> Any:
    """Bar chart of one metric per held-out section (fold) and method; error bars = sd over seeds.

    A last group, "all folds", shows the mean and sd over every fold and seed of each method.

    Parameters
    ----------
    records_table
        Records of :func:`mclstexp.metrics.evaluate_section` (list of dicts or DataFrame) with
        ``section``, ``method``, ``target``, ``scope``, the metric, and optionally ``seed``.
    metric
        Column to plot (``acg``, ``heg``, ``hvg``, ``partial_acg``, ``mse``, ...).
    target
        Normalisation target to plot; required when the records hold several.
    scope
        Records of this scope only (``"per-section"`` by default).
    methods
        Methods to show, in this order (default: order of appearance).
    path, title, dpi
        Output file (PNG by default), title, resolution.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> recs = [{"section": s, "method": m, "seed": k, "target": "default",
    ...          "scope": "per-section", "acg": 0.1 * k + (m == "model")}
    ...         for s in ["C2", "C3"] for m in ["model", "colour_ridge"] for k in range(3)]
    >>> fig = fold_summary(recs, metric="acg")
    >>> "C2" in [t.get_text() for t in fig.axes[0].get_xticklabels()]
    True
    """
    df = _records_frame(records_table)
    if df.empty:
        raise ValueError("records_table is empty")
    for col in ("section", "method", metric):
        if col not in df.columns:
            raise ValueError(f"records_table has no column {col!r} (columns: {list(df.columns)})")
    if "scope" in df.columns:
        df = df[df["scope"] == scope]
        if df.empty:
            raise ValueError(f"no records with scope {scope!r}")
    if "target" in df.columns:
        targets = list(dict.fromkeys(df["target"]))
        if target is None:
            if len(targets) > 1:
                raise ValueError(f"records hold several targets {targets}; pass target=")
            target = targets[0]
        df = df[df["target"] == target]
        if df.empty:
            raise ValueError(f"no records with target {target!r} (have {targets})")
    meths = list(methods) if methods is not None else list(dict.fromkeys(df["method"]))
    sections = list(dict.fromkeys(str(s) for s in df["section"]))
    df = df.assign(section=df["section"].astype(str))
    vals = df[metric].astype(float)
    groups = [*sections, "all folds"]

    n_m = max(len(meths), 1)
    width = 0.8 / n_m
    fig = new_figure((float(np.clip(0.35 * len(groups) * n_m + 3.5, 6.0, 14.0)), 4.8))
    ax = fig.subplots()
    x = np.arange(len(groups))
    n_seeds_max = 1
    for j, m in enumerate(meths):
        means, sds = [], []
        for g in groups:
            sel = (df["method"] == m) & ((df["section"] == g) if g != "all folds" else True)
            v = vals[sel].to_numpy()
            n_seeds_max = max(n_seeds_max, v.size if g != "all folds" else 1)
            means.append(float(v.mean()) if v.size else np.nan)
            sds.append(float(v.std(ddof=1)) if v.size > 1 else np.nan)
        pos = x - 0.4 + width * (j + 0.5)
        _bars(ax, pos, np.array(means), np.array(sds), width=width, label=m, color=f"C{j % 10}")
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.axvline(len(sections) - 0.5, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xticks(x, groups)
    ax.set_xlabel("held-out section")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    err_txt = (
        "error bars: sd over seeds (all folds: over folds and seeds)"
        if n_seeds_max > 1
        else "one record per fold, no error bar (all folds: sd over folds)"
    )
    ax.set_title(
        title or f"{metric} by fold and method (target {target}, {scope})\n{err_txt}", fontsize=10
    )
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path, dpi=dpi)
    return fig


def _bars(
    ax: Any, pos: np.ndarray, means: np.ndarray, sds: np.ndarray, *, width: float, **style: Any
) -> None:
    """One method's bars at ``pos``: sd error bars where defined, "n/a" where the mean is NaN."""
    ax.bar(pos, np.nan_to_num(means), width * 0.95, **style)
    has_err = np.isfinite(means) & np.isfinite(sds)  # no bar for a single record
    if has_err.any():
        ax.errorbar(
            pos[has_err],
            means[has_err],
            yerr=sds[has_err],
            fmt="none",
            ecolor="black",
            elinewidth=1,
            capsize=2,
        )
    for p, mv in zip(pos, means, strict=True):
        if not np.isfinite(mv):
            ax.annotate(
                "n/a",
                (p, 0),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=7,
                rotation=90,
            )


__all__ = ["fold_summary", "pcc_distribution"]
