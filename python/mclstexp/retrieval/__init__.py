"""Exact top-k cosine retrieval (Rust) and the same interface over other backends."""

from __future__ import annotations

from mclstexp._lazy import lazy_exports

_EXPORTS = {
    "ExactIndex": "index",
    "topk_cosine": "index",
    "make_index": "backends",
    "aggregate_neighbours": "aggregate",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
