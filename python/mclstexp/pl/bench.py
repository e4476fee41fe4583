"""Benchmark charts: retrieval throughput per backend, fidelity metrics per method and target,
the HEST benchmark per task and method."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mclstexp.pl._base import new_figure, save_figure

#: (column, label) of the fidelity chart's rows.
FIDELITY_PANELS: tuple[tuple[str, str], ...] = (
    ("acg", "PCC-ACG"),
    ("partial_acg", "partial PCC-ACG | depth"),
    ("heg", "PCC-HEG"),
)


def retrieval_throughput(
    records: Sequence[Mapping[str, Any]],
    *,
    approximate: Sequence[str] = (),
    path: str | Path | None = None,
    dpi: int = 110,
) -> Any:
    """Queries/s against reference size ``N`` for every backend (log-log), one panel per ``Q``.

    Parameters
    ----------
    records
        Records of :func:`mclstexp.workflow.bench_retrieval.run_suite`: ``backend``, ``N``, ``Q``,
        ``qps``, ``dim``, ``k``, ``threads``. Backends are drawn in order of first appearance.
    approximate
        Backends drawn dashed (approximate search, e.g. ``("hnswlib", "usearch")``).
    path, dpi
        Output file (PNG by default; None to only return the figure) and resolution.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> recs = [{"backend": b, "N": n, "Q": 8, "qps": n / 10, "dim": 16, "k": 5, "threads": 2}
    ...         for b in ("native", "hnswlib") for n in (100, 1000)]
    >>> fig = retrieval_throughput(recs, approximate=["hnswlib"])
    >>> [line.get_linestyle() for line in fig.axes[0].get_lines()]
    ['-', '--']
    """
    if not records:
        raise ValueError("records is empty; run the benchmark first")
    qs = sorted({r["Q"] for r in records})
    backends = list(dict.fromkeys(r["backend"] for r in records))
    fig = new_figure((5.5 * len(qs), 4.2))
    axes = fig.subplots(1, len(qs), squeeze=False)
    for ax, q in zip(axes[0], qs, strict=True):
        for backend in backends:
            pts = sorted(
                (r["N"], r["qps"]) for r in records if r["backend"] == backend and r["Q"] == q
            )
            if pts:
                xs, ys = zip(*pts, strict=True)
                style = "--" if backend in approximate else "-"
                ax.plot(xs, ys, marker="o", label=backend, linestyle=style)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("reference size N")
        ax.set_ylabel("queries / s")
        r0 = next(r for r in records if r["Q"] == q)
        ax.set_title(f"Q={q}, dim={r0['dim']}, k={r0['k']}, {r0['threads']} threads")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Top-k cosine retrieval throughput (dashed: approximate)")
    save_figure(fig, path, dpi=dpi)
    return fig


def fidelity_summary(
    summary: Any,
    *,
    panels: Sequence[tuple[str, str]] = FIDELITY_PANELS,
    path: str | Path | None = None,
    dpi: int = 110,
) -> Any:
    """Horizontal bars of mean ± sd per method: one row per metric, one column per target.

    Parameters
    ----------
    summary
        DataFrame of :func:`mclstexp.workflow.report.summary_frame` (one row per method x
        target, with ``<metric>_mean`` and ``<metric>_sd`` columns).
    panels
        ``(metric, label)`` of each row of panels.
    path, dpi
        Output file (PNG by default; None to only return the figure) and resolution.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import pandas as pd
    >>> cols = {f"{m}_{s}": [0.2, 0.1] for m in ("acg", "partial_acg", "heg")
    ...         for s in ("mean", "sd")}
    >>> summary = pd.DataFrame({"method": ["model", "mean"], "target": "default", **cols})
    >>> fig = fidelity_summary(summary)
    >>> len(fig.axes), fig.axes[0].get_title().splitlines()[1]
    (3, 'target: default, per-section')
    """
    if len(summary) == 0:
        raise ValueError("summary is empty; nothing to plot")
    targets = list(dict.fromkeys(summary["target"]))
    fig = new_figure((6 * len(targets), 4.5 * len(panels)))
    axes = fig.subplots(len(panels), len(targets), squeeze=False)
    for i, (metric, label) in enumerate(panels):
        for j, target in enumerate(targets):
            ax = axes[i][j]
            sub = summary[summary["target"] == target]
            means = sub[f"{metric}_mean"].to_numpy(dtype=float)
            sds = np.nan_to_num(sub[f"{metric}_sd"].to_numpy(dtype=float))
            y = np.arange(len(sub))
            ax.barh(y, means, xerr=sds, color="#4C72B0", capsize=3)
            ax.set_yticks(y, [str(m) for m in sub["method"]])
            ax.axvline(0, color="black", linewidth=0.8)
            ax.set_xlabel(f"{label} (mean ± sd over sections x seeds)")
            ax.set_title(f"{label}\ntarget: {target}, per-section")
    save_figure(fig, path, dpi=dpi)
    return fig


def hest_summary(
    table: Any,
    *,
    path: str | Path | None = None,
    dpi: int = 110,
) -> Any:
    """Grouped bars of the HEST benchmark: one panel per metric, tasks along x, one bar per
    method (mean ± sd; HEST's metric over splits, ours over held-out sections).

    Parameters
    ----------
    table
        DataFrame with columns ``task``, ``method``, ``metric`` (its label), ``mean``, ``sd``
        (``hest.csv`` of :func:`mclstexp.workflow.bench_hest.run_hest_bench`).
    path, dpi
        Output file (None to only return the figure) and resolution.

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"task": ["IDC", "IDC"], "method": ["a", "b"], "metric": "m",
    ...                   "mean": [0.3, 0.2], "sd": [0.01, 0.02]})
    >>> len(hest_summary(t).axes)
    1
    """
    if len(table) == 0:
        raise ValueError("table is empty; nothing to plot")
    metrics = list(dict.fromkeys(table["metric"]))
    tasks = list(dict.fromkeys(table["task"]))
    methods = list(dict.fromkeys(table["method"]))
    fig = new_figure((max(6.0, 1.2 * len(tasks) * max(1, len(methods)) / 2), 3.8 * len(metrics)))
    axes = fig.subplots(len(metrics), 1, squeeze=False)
    width = 0.8 / max(1, len(methods))
    for ax, metric in zip(axes[:, 0], metrics, strict=True):
        sub = table[table["metric"] == metric]
        for i, method in enumerate(methods):
            rows = sub[sub["method"] == method].set_index("task").reindex(tasks)
            x = np.arange(len(tasks)) + (i - (len(methods) - 1) / 2) * width
            means = rows["mean"].to_numpy(dtype=float)
            sds = np.nan_to_num(rows["sd"].to_numpy(dtype=float))
            ax.bar(x, means, width, yerr=sds, capsize=2, label=str(method))
        ax.set_xticks(np.arange(len(tasks)), tasks)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_ylabel("Pearson r")
        ax.set_title(str(metric))
        ax.legend(fontsize=7, ncol=2)
    save_figure(fig, path, dpi=dpi)
    return fig


__all__ = ["FIDELITY_PANELS", "fidelity_summary", "hest_summary", "retrieval_throughput"]
