"""Preprocessing: genes, expression normalisation, tissue, patch extraction and cache, stain.

Modules: ``genes`` (gene panels), ``expression`` (normalisation), ``tissue`` (tissue mask, grid
centres), ``patch_cache`` (the on-disk patch cache: format, writer), ``patches``
(:func:`extract_patches` for an AnnData), ``stain`` (Macenko / Reinhard), ``layout`` (uint8 HWC
patches <-> normalised float CHW tensors).
"""

from __future__ import annotations

from mclstexp._lazy import lazy_exports

_EXPORTS = {
    "select_genes": "genes",
    "load_panel": "genes",
    "normalize_expression": "expression",
    "extract_patches": "patches",
    "open_patch_cache": "patch_cache",
    "cache_keys": "patch_cache",
    "PatchCache": "patch_cache",
    "tile_slide": "patch_cache",
    "detect_tissue": "tissue",
    "grid_centers": "tissue",
    "TissueMask": "tissue",
    "StainNormalizer": "stain",
    "StainNormalizationWarning": "stain",
    "to_tensor_layout": "layout",
    "from_tensor_layout": "layout",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
