"""Mean and sd of evaluation records over sections and seeds (pandas)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["METRIC_KEYS", "aggregate_records"]

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
