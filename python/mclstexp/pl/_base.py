"""Shared plumbing of the plotting functions: headless figures and saving."""

from __future__ import annotations

from pathlib import Path
from typing import Any

METRIC_LABELS = {
    "acg": "PCC, all considered genes (ACG)",
    "heg": "PCC, top-50 expressed genes (HEG)",
    "hvg": "PCC, top-50 variable genes (HVG)",
    "partial_acg": "partial PCC | log library size (ACG)",
    "partial_heg": "partial PCC | log library size (HEG)",
    "partial_hvg": "partial PCC | log library size (HVG)",
    "mse": "MSE",
    "mae": "MAE",
}


def new_figure(figsize: tuple[float, float]) -> Any:
    """A matplotlib Figure detached from pyplot (no GUI backend, no global figure registry)."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def save_figure(fig: Any, path: str | Path | None, *, dpi: int) -> None:
    """Write ``fig`` to ``path`` (PNG unless the suffix names another format); no-op for None."""
    if path is None:
        return
    p = Path(path)
    if p.parent and not p.parent.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
    fmt = p.suffix[1:].lower() if p.suffix else "png"
    fig.savefig(p, dpi=dpi, format=fmt, facecolor="white")
