"""What every evaluated row is scored against: the two target normalisations and spot depth.

Shared by the fold (:mod:`mclstexp.workflow.fold`) and its reference rows
(:mod:`mclstexp.workflow.reference_rows`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from anndata import AnnData

from mclstexp import _keys

__all__ = ["TARGETS", "UNDEFINED_PCC", "log_library_size", "normalized"]

#: Target normalisations every evaluation reports (see :mod:`mclstexp.workflow.fold`).
TARGETS = ("legacy_gene", "default")
#: A gene a method predicts as constant scores PCC 0 (not excluded), so the training-mean row has a
#: number and no method can raise its mean by predicting constants on hard genes. Genes constant
#: in the truth are excluded and counted for every method alike.
UNDEFINED_PCC = "zero"


def log_library_size(adata: AnnData) -> np.ndarray:
    """``log1p`` of each spot's library size (``obs["library_size"]``): the depth the partial
    PCC controls for."""
    return np.log1p(np.asarray(adata.obs[_keys.LIBRARY_SIZE], dtype=np.float64))


def normalized(adata: AnnData, genes: Sequence[str], flavor: str) -> AnnData:
    """``adata`` restricted to ``genes`` with ``X`` normalised by ``flavor``."""
    from mclstexp.pp import normalize_expression

    return normalize_expression(adata, genes=list(genes), flavor=flavor)
