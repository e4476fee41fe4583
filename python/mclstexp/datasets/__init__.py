"""Datasets: the embedded synthetic default and the public her2st data."""

from __future__ import annotations

from mclstexp._lazy import lazy_exports

_EXPORTS = {
    "synthetic": "synthetic",
    "her2st": "her2st",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
