"""Result tables: mean +- sd over folds and seeds, every row labelled with its target and scope."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

#: Columns of the printed table: (record key, header).
TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("acg", "PCC-ACG"),
    ("heg", "PCC-HEG"),
    ("hvg", "PCC-HVG"),
    ("partial_acg", "pPCC-ACG|depth"),
    ("mse", "MSE"),
    ("mae", "MAE"),
)


def _cell(mean: float, sd: float) -> str:
    if not np.isfinite(mean):
        return "n/a"
    if not np.isfinite(sd):
        return f"{mean:.3f}"
    return f"{mean:.3f}±{sd:.3f}"


def summary_frame(records: Iterable[Mapping[str, Any]]) -> Any:
    """Aggregate per-section records into one row per (method, target, scope).

    Returns
    -------
    pandas.DataFrame
        See :func:`mclstexp.metrics.aggregate_records`.
    """
    from mclstexp.metrics import aggregate_records

    return aggregate_records(list(records), by=("method", "target", "scope"))


def format_table(
    records: Iterable[Mapping[str, Any]], *, targets: Sequence[str] | None = None
) -> str:
    """Render the results table (one block per target normalisation).

    Each cell is the mean ± sd over the per-section records (held-out sections x seeds). The
    header of each block names the target normalisation and the scope ("per-section").

    Examples
    --------
    >>> recs = [{"method": "m", "target": "default", "scope": "per-section", "section": "A",
    ...          "seed": 0, "acg": 0.2, "heg": 0.3, "hvg": 0.25, "partial_acg": 0.1,
    ...          "mse": 1.0, "mae": 0.5}]
    >>> print(format_table(recs).splitlines()[0][:60])
    target: default (per-spot library-size normalised log1p) | p
    """
    frame = summary_frame(records)
    described = {
        "legacy_gene": "the original method's per-gene normalisation; keeps spot depth",
        "default": "per-spot library-size normalised log1p",
    }
    blocks = []
    chosen = list(targets) if targets else list(dict.fromkeys(frame["target"]))
    for target in chosen:
        sub = frame[frame["target"] == target]
        if sub.empty:
            continue
        n = int(sub["n_records"].max())
        scope = ",".join(dict.fromkeys(str(s) for s in sub["scope"]))
        head = (
            f"target: {target} ({described.get(target, 'as labelled')}) | {scope}, "
            f"mean±sd over {n} record(s); a gene predicted constant scores PCC 0"
        )
        width = max(len("method"), *(len(str(m)) for m in sub["method"]))
        header = f"{'method':<{width}}  " + "  ".join(f"{h:>15}" for _, h in TABLE_COLUMNS)
        lines = [head, header, "-" * len(header)]
        for _, row in sub.iterrows():
            cells = [
                _cell(float(row.get(f"{k}_mean", np.nan)), float(row.get(f"{k}_sd", np.nan)))
                for k, _ in TABLE_COLUMNS
            ]
            lines.append(f"{row['method']!s:<{width}}  " + "  ".join(f"{c:>15}" for c in cells))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
