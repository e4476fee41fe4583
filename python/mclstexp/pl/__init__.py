"""Plots: spatial expression maps, PCC distributions, fold summaries, benchmark charts.

Every function draws on a matplotlib ``Figure`` of its own (no pyplot state, no GUI backend),
writes it when given ``path=`` and returns it.
"""

from __future__ import annotations

from mclstexp._lazy import lazy_exports

_EXPORTS = {
    "spatial_expression": "spatial",
    "spatial_prediction": "spatial",
    "plottable_genes": "spatial",
    "pcc_distribution": "summary",
    "fold_summary": "summary",
    "retrieval_throughput": "bench",
    "fidelity_summary": "bench",
    "hest_summary": "bench",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
