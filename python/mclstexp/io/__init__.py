"""Readers: slides (native reader, OpenSlide fallback) and spatial transcriptomics as AnnData."""

from __future__ import annotations

from mclstexp._lazy import lazy_exports

_EXPORTS = {
    "open_slide": "slide",
    "Slide": "slide",
    "read_thumbnail": "slide",
    "read_her2st": "her2st",
    "read_her2st_all": "her2st",
    "read_her2st_spots": "her2st",
    "read_visium": "visium",
    "read_h5ad": "h5ad",
    "read_anndata": "h5ad",
    "read_spots": "spots",
    "read_hest": "hest",
    "read_hest_patches": "hest",
    "check_hest_patches": "hest",
    "HestPatches": "hest",
    "read_hest_task": "hest_bench",
    "read_hest_sample": "hest_bench",
    "HestTask": "hest_bench",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
