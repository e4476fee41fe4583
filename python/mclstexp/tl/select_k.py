"""Choose the number of neighbours K from the training sections alone (inner cross-validation).

The original's K (200 on HER2+) was set for a reference of ~10,000 spots; with a reference of a
few hundred spots it averages a third of the reference and blurs every prediction. K is a
property of the reference size and of the embedding, so it is chosen per fold, on the training
sections only: each training section in turn queries the reference built from the *other*
training sections, and the K with the best mean per-gene PCC wins. The held-out section is never
looked at.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mclstexp.tl.predict import DEFAULT_AGGREGATION
from mclstexp.tl.reference import Reference

#: Candidate K values (each clipped to the size of the inner reference).
DEFAULT_K_GRID: tuple[int, ...] = (5, 10, 20, 50, 100, 200)


@dataclass(frozen=True)
class KSelection:
    """Outcome of :func:`select_k`.

    Attributes
    ----------
    k
        The chosen K (best mean inner-CV PCC; ties go to the larger K).
    scores
        K -> mean over inner folds of the mean per-gene PCC (genes predicted constant score 0).
    per_section
        Inner fold (the training section used as query) -> K -> its mean per-gene PCC.
    target
        The value matrix of the reference that was scored.
    """

    k: int
    scores: dict[int, float]
    per_section: dict[str, dict[int, float]]
    target: str

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable form (for ``metrics.json``)."""
        return {
            "k": self.k,
            "target": self.target,
            "scores": {str(k): v for k, v in self.scores.items()},
            "per_section": {
                section: {str(k): v for k, v in scores.items()}
                for section, scores in self.per_section.items()
            },
        }


def mean_pcc(truth: np.ndarray, pred: np.ndarray) -> float:
    """Mean per-gene PCC, scored as the evaluation does (constant predictions count 0).

    Examples
    --------
    >>> t = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 1.0]])
    >>> round(mean_pcc(t, np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0]])), 3)
    0.5
    """
    from mclstexp.metrics import finite_mean, pearson_per_gene, policy_values

    return finite_mean(policy_values(pearson_per_gene(truth, pred), "zero"))


def select_k(
    query_embeddings: Mapping[str, np.ndarray],
    reference: Reference,
    *,
    grid: Sequence[int] = DEFAULT_K_GRID,
    aggregation: str = DEFAULT_AGGREGATION,
    target: str | None = None,
    backend: str = "native",
) -> KSelection:
    """Pick K by leave-one-training-section-out retrieval within ``reference``.

    Parameters
    ----------
    query_embeddings
        Training section id -> float ``[n_spots, D]`` image embeddings of that section's spots,
        in the order of its rows in ``reference`` (``reference.sections``). At least two sections.
    reference
        The fold's reference (training spots only).
    grid
        Candidate K values, each >= 1.
    aggregation, backend
        As in :func:`mclstexp.tl.predict.predict_from_embeddings`.
    target
        Which value matrix to score (default: ``reference.meta["default_target"]`` or the first).

    Returns
    -------
    KSelection
        The chosen K and the score of every candidate.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> emb = rng.normal(size=(60, 4)).astype(np.float32)
    >>> ref = Reference(emb, {"t": emb[:, :2] * 3}, ["A", "B"],
    ...                 [str(i) for i in range(60)], ["S1"] * 30 + ["S2"] * 30)
    >>> sel = select_k({"S1": emb[:30], "S2": emb[30:]}, ref, grid=(1, 5, 20))
    >>> sel.k in (1, 5, 20)
    True
    """
    from mclstexp.tl.predict import predict_from_embeddings

    candidates = sorted({int(k) for k in grid})
    if not candidates or candidates[0] < 1:
        raise ValueError(f"grid: K values must be >= 1, got {list(grid)}")
    if len(query_embeddings) < 2:
        raise ValueError(
            "query_embeddings: K is chosen by leaving one training section out; at least two "
            f"training sections are needed, got {len(query_embeddings)}"
        )
    main = scored_target(reference, target)
    per_section: dict[str, dict[int, float]] = {}
    for name, queries in query_embeddings.items():
        inner, own = without_section(reference, name, len(queries), main)
        truth = reference.values[main][own]
        scores: dict[int, float] = {}
        for k in candidates:
            preds, _, _ = predict_from_embeddings(
                queries, inner, k=min(k, len(inner)), aggregation=aggregation, backend=backend
            )
            scores[k] = mean_pcc(truth, preds[main])
        per_section[name] = scores
    mean = {k: float(np.nanmean([s[k] for s in per_section.values()])) for k in candidates}
    best = max(candidates, key=lambda k: (mean[k], k))
    return KSelection(k=best, scores=mean, per_section=per_section, target=main)


def scored_target(reference: Reference, target: str | None) -> str:
    """The value matrix an inner cross-validation scores: ``target``, else the reference's
    ``meta["default_target"]``, else its first; an unknown name is a ValueError."""
    main = target or str(reference.meta.get("default_target") or sorted(reference.values)[0])
    if main not in reference.values:
        raise ValueError(
            f"target: {main!r} is not in the reference (has {sorted(reference.values)})"
        )
    return main


def without_section(
    reference: Reference, name: str, n_queries: int, target: str
) -> tuple[Reference, np.ndarray]:
    """The inner reference of a leave-one-training-section-out fold (every spot but section
    ``name``'s, with the ``target`` values only) and the mask of ``name``'s rows; ``n_queries``
    must be that section's number of spots."""
    sections = np.asarray(reference.sections)
    own = sections == name
    if int(own.sum()) != n_queries:
        raise ValueError(
            f"query_embeddings[{name!r}]: {n_queries} rows, but the reference holds "
            f"{int(own.sum())} spots of section {name!r}"
        )
    inner = Reference(
        reference.embeddings[~own],
        {target: reference.values[target][~own]},
        list(reference.genes),
        [s for s, o in zip(reference.spot_ids, own, strict=True) if not o],
        list(sections[~own]),
    )
    return inner, own
