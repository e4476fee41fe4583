"""Predict spot expression from image patches by top-k retrieval against a :class:`Reference`.

For each query patch (method.md §4): embed it with the image branch, rank the reference spot
embeddings by cosine similarity, keep the top ``k`` and aggregate their normalised expression with
the chosen weights. Every target normalisation stored in the reference is predicted from the same
neighbours (one search, several value matrices).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from anndata import AnnData

from mclstexp import _keys
from mclstexp.tl.reference import Reference

#: Defaults of the original method on HER2+ (method.md §4): K = 200, weights 1 / L1-distance^2.
DEFAULT_K = 200
DEFAULT_AGGREGATION = "inverse_l1"
NEIGHBORS_KEY = "mclstexp_neighbors"
SCORES_KEY = "mclstexp_neighbor_scores"


def predict_from_embeddings(
    query_embeddings: np.ndarray,
    reference: Reference,
    *,
    k: int = DEFAULT_K,
    aggregation: str = DEFAULT_AGGREGATION,
    backend: str = "native",
    targets: Sequence[str] | None = None,
    n_threads: int | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Search ``reference`` for each query embedding and aggregate the neighbours' expression.

    Parameters
    ----------
    query_embeddings
        float [Q, D] raw image embeddings of the query patches.
    reference
        Keys (spot embeddings) and values (normalised expression per target).
    k
        Neighbours per query; clipped to the reference size.
    aggregation
        ``"mean"``, ``"similarity"``, ``"inverse_l1"`` or ``"inverse_l2"``
        (see :func:`mclstexp.retrieval.aggregate_neighbours`).
    backend
        Retrieval backend (``"native"`` exact Rust search by default).
    targets
        Which value matrices to aggregate (default: all in the reference).

    Returns
    -------
    predictions, indices, scores
        Target -> float32 [Q, G]; int64 [Q, k] neighbour indices; float32 [Q, k] cosine scores.

    Examples
    --------
    >>> ref = Reference(np.eye(3, dtype=np.float32), {"t": np.arange(6.0).reshape(3, 2)},
    ...                 ["A", "B"], ["a", "b", "c"], ["S"] * 3)
    >>> preds, idx, _ = predict_from_embeddings(np.eye(3, dtype=np.float32)[:1], ref, k=1)
    >>> preds["t"].tolist(), idx.tolist()
    ([[0.0, 1.0]], [[0]])
    """
    from mclstexp.retrieval import aggregate_neighbours, make_index

    queries = np.ascontiguousarray(query_embeddings, dtype=np.float32)
    if queries.ndim != 2 or queries.shape[1] != reference.embeddings.shape[1]:
        raise ValueError(
            f"query_embeddings: expected shape (Q, {reference.embeddings.shape[1]}), "
            f"got {queries.shape}"
        )
    if k < 1:
        raise ValueError(f"k: must be >= 1, got {k}")
    k_eff = min(int(k), len(reference))
    index = make_index(reference.embeddings, backend=backend, n_threads=n_threads)
    scores, indices = index.search(queries, k_eff)
    chosen = list(targets) if targets is not None else sorted(reference.values)
    predictions = {
        target: aggregate_neighbours(
            indices,
            scores,
            reference.values[target],
            method=aggregation,
            queries=queries,
            reference=reference.embeddings,
        ).astype(np.float32, copy=False)
        for target in chosen
    }
    return predictions, indices, scores


def predict_expression(
    adata: AnnData,
    model: Any,
    reference: Reference,
    *,
    patches: Any,
    k: int = DEFAULT_K,
    aggregation: str = DEFAULT_AGGREGATION,
    backend: str = "native",
    target: str | None = None,
    device: str = "auto",
    batch_size: int = 64,
    query_embeddings: np.ndarray | None = None,
) -> AnnData:
    """Predict the expression of every spot of ``adata`` from its image patch.

    Parameters
    ----------
    adata
        The spots to predict (``obs_names``, ``obsm["spatial"]`` are carried over).
    model
        A trained :class:`mclstexp.models.MclSTExp` (only its image branch is used).
    reference
        The training spots' embeddings and normalised expression (:func:`build_reference`).
    patches
        uint8 [n_obs, H, W, 3] array-like aligned with ``adata.obs_names`` (e.g. a patch cache's
        ``.patches``).
    k, aggregation, backend
        Retrieval settings; defaults follow the original method on HER2+ (K = 200, 1/L1^2).
    target
        The normalisation put in ``X`` (default: ``reference.meta["default_target"]`` or the first);
        every other target of the reference goes to ``layers[target]``.
    query_embeddings
        Precomputed image embeddings (skips the model, and the check below: the caller vouches
        that they come from the reference's model).

    Returns
    -------
    AnnData
        Same ``obs_names``/``obs``/``obsm["spatial"]``, ``var_names`` = reference genes, predicted
        values in ``X`` and ``layers``, neighbours in ``obsm``, provenance in ``uns["mclstexp"]``.

    Raises
    ------
    mclstexp.exceptions.ReferenceMismatchError
        ``reference`` was not built with ``model`` (:meth:`Reference.check_model`), checked before
        any patch is embedded.

    Examples
    --------
    >>> pred = predict_expression(adata, model, ref, patches=cache.patches)  # doctest: +SKIP
    """
    if k < 1:
        raise ValueError(f"k: must be >= 1, got {k}")
    if query_embeddings is None:
        reference.check_model(model)
        from mclstexp.tl.embed import embed_patches

        query_embeddings = embed_patches(model, patches, batch_size=batch_size, device=device)
    if len(query_embeddings) != adata.n_obs:
        raise ValueError(
            f"patches: expected {adata.n_obs} patches (one per spot of adata), "
            f"got {len(query_embeddings)}"
        )
    predictions, indices, scores = predict_from_embeddings(
        query_embeddings, reference, k=k, aggregation=aggregation, backend=backend
    )
    main = target or reference.meta.get("default_target") or sorted(predictions)[0]
    if main not in predictions:
        raise ValueError(f"target: {main!r} is not in the reference (has {sorted(predictions)})")
    out = AnnData(
        X=predictions[main],
        obs=adata.obs.copy(),
        var={"gene": reference.genes},
    )
    out.var_names = list(reference.genes)
    out.obs_names = adata.obs_names.copy()
    if _keys.SPATIAL in adata.obsm:
        out.obsm[_keys.SPATIAL] = np.asarray(adata.obsm[_keys.SPATIAL])
    for name, values in predictions.items():
        out.layers[name] = values
    out.obsm[NEIGHBORS_KEY] = indices
    out.obsm[SCORES_KEY] = scores
    provenance = dict(adata.uns.get(_keys.UNS, {}))
    provenance["prediction"] = {
        "k": int(indices.shape[1]),
        "aggregation": aggregation,
        "backend": backend,
        "target_in_X": main,
        "targets": sorted(predictions),
        "reference_size": len(reference),
        "reference_sections": sorted(set(reference.sections)),
    }
    out.uns[_keys.UNS] = provenance
    return out
