"""Plots: spatial expression maps, PCC distributions, fold summaries (matplotlib, headless)."""

from __future__ import annotations

from mclstexp._lazy import lazy_exports

_EXPORTS = {
    "spatial_expression": "spatial",
    "spatial_prediction": "spatial",
    "pcc_distribution": "summary",
    "fold_summary": "summary",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
