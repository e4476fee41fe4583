"""Tools: embeddings, reference building, expression prediction, K selection (needs torch).

Built on :mod:`mclstexp.models` (inputs, runtime), :mod:`mclstexp.retrieval` and
:mod:`mclstexp.metrics`; ``tl`` never imports :mod:`mclstexp.train`.
"""

from __future__ import annotations

from mclstexp._lazy import lazy_exports

_EXPORTS = {
    "embed_patches": "embed",
    "embed_spots": "embed",
    "build_reference": "reference",
    "Reference": "reference",
    "predict_expression": "predict",
    "select_k": "select_k",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
