"""Preprocessing: genes, expression normalisation, patch extraction, stain normalisation."""

from __future__ import annotations

from mclstexp._lazy import lazy_exports

_EXPORTS = {
    "select_genes": "genes",
    "load_panel": "genes",
    "normalize_expression": "expression",
    "extract_patches": "patches",
    "open_patch_cache": "patches",
    "PatchCache": "patches",
    "detect_tissue": "patches",
    "StainNormalizer": "stain",
    "StainNormalizationWarning": "stain",
    "to_tensor_layout": "layout",
    "from_tensor_layout": "layout",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
