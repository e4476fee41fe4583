"""Prediction heads beyond retrieval: a ridge readout of the image embedding, and a blend.

The method predicts a spot by top-K retrieval (:mod:`mclstexp.tl.predict`). Two more heads read
the same image embedding:

- ``ridge``: a linear map from the image embedding to expression (features standardised on the
  training spots, the expression centred), fitted on the training spots' image embeddings and
  their measured expression (:func:`fit_ridge`);
- ``blend``: ``(1 - w) * retrieval + w * ridge``;
- ``blend+context``: the blend mixed with its grid neighbours' blends in the predicted section
  (:mod:`mclstexp.tl.context`), when the spots' centres are given.

The ridge penalty, the blend weight and the context weight are chosen per fold like K
(:mod:`mclstexp.tl.select_k`): each training section in turn is predicted by heads built from
the *other* training sections (retrieval from their reference spots, a ridge fitted on their
spots), and the candidate with the best mean per-gene PCC wins (:func:`select_heads`). The
held-out section is never looked at.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mclstexp.baselines.ridge import svd_ridge_weights
from mclstexp.tl.context import DEFAULT_CONTEXTS, choose_context
from mclstexp.tl.predict import DEFAULT_AGGREGATION
from mclstexp.tl.reference import Reference
from mclstexp.tl.select_k import mean_pcc, scored_target, without_section

__all__ = [
    "DEFAULT_ALPHAS",
    "DEFAULT_RANKS",
    "DEFAULT_WEIGHTS",
    "HeadSelection",
    "RidgeReadout",
    "blend",
    "fit_ridge",
    "ridge_path",
    "select_heads",
]

#: Candidate ridge penalties (on standardised embeddings; scaled by the number of spots).
DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-3, 3, 13))
#: Candidate ranks of the reduced-rank ridge (None: full rank, every gene on its own).
DEFAULT_RANKS: tuple[int | None, ...] = (4, 8, 16, 32, None)
#: Candidate blend weights of the ridge head (0 = retrieval only, 1 = ridge only).
DEFAULT_WEIGHTS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass
class RidgeReadout:
    """A fitted linear readout: ``((x - x_mean) / x_scale) @ weights + y_mean``.

    Attributes
    ----------
    x_mean, x_scale
        float64 ``[D]`` standardisation of the embedding (from the training spots).
    y_mean
        float64 ``[G]`` mean expression of the training spots.
    weights
        float64 ``[D, G]``.
    alpha
        The ridge penalty per spot (the penalty is ``alpha * N`` for N training spots).
    rank
        The number of expression axes of a reduced-rank fit (None: every gene on its own).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(50, 3)); y = x @ np.array([[1.0], [2.0], [0.0]]) + 5
    >>> r = fit_ridge(x, y, alpha=1e-6)
    >>> bool(np.allclose(r.predict(x), y, atol=1e-3))
    True
    """

    x_mean: np.ndarray
    x_scale: np.ndarray
    y_mean: np.ndarray
    weights: np.ndarray
    alpha: float
    rank: int | None = None

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predictions ``[Q, G]`` (float32) for embeddings ``[Q, D]``."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.x_mean.shape[0]:
            raise ValueError(f"x: expected shape (Q, {self.x_mean.shape[0]}), got {tuple(x.shape)}")
        return (((x - self.x_mean) / self.x_scale) @ self.weights + self.y_mean).astype(np.float32)


def ridge_path(
    x: np.ndarray, y: np.ndarray, alphas: Sequence[float], *, rank: int | None = None
) -> list[RidgeReadout]:
    """Ridge readouts of ``y [N, G]`` on ``x [N, D]`` for every penalty, from one SVD.

    Each alpha is a penalty per spot: the solution minimises
    ``||Xs W - Yc||^2 + alpha * N * ||W||^2`` with ``Xs`` the standardised ``x`` and ``Yc`` the
    centred ``y``, so the same alpha means the same shrinkage for references of any size.
    With ``rank``, ``Yc`` is first projected on its ``rank`` leading principal axes (reduced-rank
    ridge): every gene is predicted through the same few expression programmes, which
    denoises genes measured with few counts.

    Examples
    --------
    >>> x = np.random.default_rng(0).normal(size=(20, 4)); y = x[:, :2]
    >>> loose, tight = ridge_path(x, y, (1e-6, 100.0))
    >>> bool(np.allclose(loose.predict(x), y, atol=1e-3))  # almost no penalty: exact fit
    True
    >>> bool(np.abs(tight.predict(x) - y.mean(0)).max() < 0.05)  # shrunk to the mean
    True
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise ValueError(
            f"x and y must be [N >= 2, D] and [N, G] with the same N, got {x.shape} and {y.shape}"
        )
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("x and y must be finite")
    if len(alphas) == 0 or min(alphas) < 0:
        raise ValueError(f"alphas: need non-negative values, got {list(alphas)}")
    mean = x.mean(0)
    scale = x.std(0)
    scale = np.where(scale > 1e-12 * max(float(scale.max()), 1e-300), scale, 1.0)
    xs = (x - mean) / scale
    y_mean = y.mean(0)
    yc = y - y_mean
    axes = None
    if rank is not None:
        if rank < 1:
            raise ValueError(f"rank: must be >= 1 (or None), got {rank}")
        axes = np.linalg.svd(yc, full_matrices=False)[2][:rank].T  # [G, r]
        yc = yc @ axes
    n = x.shape[0]
    weights = svd_ridge_weights(xs, yc, [float(a) * n for a in alphas])
    return [
        RidgeReadout(mean, scale, y_mean, w if axes is None else w @ axes.T, float(a), rank)
        for a, w in zip(alphas, weights, strict=True)
    ]


def fit_ridge(
    x: np.ndarray, y: np.ndarray, alpha: float, *, rank: int | None = None
) -> RidgeReadout:
    """One ridge readout (see :func:`ridge_path`)."""
    return ridge_path(x, y, (alpha,), rank=rank)[0]


def blend(retrieval: np.ndarray, ridge: np.ndarray, weight: float) -> np.ndarray:
    """``(1 - weight) * retrieval + weight * ridge`` (float32).

    Examples
    --------
    >>> blend(np.zeros((1, 2)), np.ones((1, 2)), 0.25).tolist()
    [[0.25, 0.25]]
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight: must be in [0, 1], got {weight}")
    out = (1.0 - weight) * np.asarray(retrieval, np.float64) + weight * np.asarray(ridge)
    return out.astype(np.float32)


@dataclass(frozen=True)
class HeadSelection:
    """Outcome of :func:`select_heads`.

    Attributes
    ----------
    k
        The retrieval K the blend uses (chosen before, e.g. by :func:`~mclstexp.tl.select_k`).
    alpha, rank
        The ridge penalty and rank with the best mean inner-CV PCC (ties: the larger penalty,
        then the smaller rank).
    weight
        The blend weight of the ridge with the best mean inner-CV PCC (ties: the smaller).
    ridge_scores, blend_scores
        Candidate (``(rank, alpha)`` for the ridge, the weight for the blend) -> mean over inner
        folds of the mean per-gene PCC.
    per_section
        Inner fold -> ``{"ridge": {(rank, alpha): pcc}, "blend": {weight: pcc}}``.
    target
        The value matrix that was scored.
    context, context_scores
        The context weight of the ``blend+context`` head (best mean inner-CV PCC of the chosen
        blend mixed with its neighbours, ties: the smaller) and every candidate's score; 0 and
        empty when no spot centres were given.
    """

    k: int
    alpha: float
    rank: int | None
    weight: float
    ridge_scores: dict[tuple[int | None, float], float]
    blend_scores: dict[float, float]
    per_section: dict[str, dict[str, dict[Any, float]]] = field(repr=False)
    target: str = "default"
    context: float = 0.0
    context_scores: dict[float, float] = field(default_factory=dict)

    def chosen_scores(self) -> dict[str, float]:
        """Each head's mean inner-CV PCC at its chosen settings (``blend+context`` only when a
        context weight was chosen): what a variant is judged by."""
        out = {
            "ridge": self.ridge_scores[(self.rank, self.alpha)],
            "blend": self.blend_scores[self.weight],
        }
        if self.context_scores:
            out["blend+context"] = self.context_scores[self.context]
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (for ``metrics.json``)."""
        return {
            "chosen": self.chosen_scores(),
            "k": self.k,
            "alpha": self.alpha,
            "rank": self.rank,
            "weight": self.weight,
            "target": self.target,
            "ridge_scores": {_label(c): v for c, v in self.ridge_scores.items()},
            "blend_scores": {_label(w): v for w, v in self.blend_scores.items()},
            "context": self.context,
            "context_scores": {_label(w): v for w, v in self.context_scores.items()},
            "per_section": {
                s: {h: {_label(c): v for c, v in sc.items()} for h, sc in by_head.items()}
                for s, by_head in self.per_section.items()
            },
        }


def _label(candidate: Any) -> str:
    if isinstance(candidate, tuple):
        rank, alpha = candidate
        return f"rank={'full' if rank is None else rank},alpha={alpha:g}"
    return f"{candidate:g}"


def _inner_fold(
    name: str,
    query_embeddings: Mapping[str, np.ndarray],
    reference: Reference,
    target: str,
    k: int,
    candidates: Sequence[tuple[int | None, float]],
    aggregation: str,
    backend: str,
) -> tuple[np.ndarray, np.ndarray, dict[tuple[int | None, float], float]]:
    """Truth, retrieval prediction and each ridge candidate's mean PCC (``(rank, alpha)`` ->
    score) of training section ``name``, from heads built on the other training sections only.
    Each candidate is scored as it is made (65 candidates' predictions at once were the peak
    of a her2st fold's memory); :func:`_inner_ridge` remakes the chosen one."""
    from mclstexp.tl.predict import predict_from_embeddings

    queries = np.asarray(query_embeddings[name])
    inner, own = without_section(reference, name, len(queries), target)
    retrieval, _, _ = predict_from_embeddings(
        queries, inner, k=min(k, len(inner)), aggregation=aggregation, backend=backend
    )
    truth = reference.values[target][own]
    scores = {}
    for rank in dict.fromkeys(r for r, _ in candidates):
        alphas = [a for r, a in candidates if r == rank]
        for alpha, pred in zip(
            alphas, _ridges(name, query_embeddings, reference, target, rank, alphas), strict=True
        ):
            scores[(rank, alpha)] = mean_pcc(truth, pred)
    return truth, retrieval[target], scores


def _ridges(
    name: str,
    query_embeddings: Mapping[str, np.ndarray],
    reference: Reference,
    target: str,
    rank: int | None,
    alphas: Sequence[float],
) -> Iterator[np.ndarray]:
    """Section ``name``'s ridge predictions at ``rank`` for each of ``alphas`` (one SVD path),
    fitted on the other training sections, one prediction at a time."""
    sections, values = np.asarray(reference.sections), reference.values[target]
    others = [s for s in query_embeddings if s != name]
    x = np.concatenate([np.asarray(query_embeddings[s]) for s in others])
    y = np.concatenate([values[sections == s] for s in others])
    queries = np.asarray(query_embeddings[name])
    for fit in ridge_path(x, y, alphas, rank=rank):
        yield fit.predict(queries)


def select_heads(
    query_embeddings: Mapping[str, np.ndarray],
    reference: Reference,
    *,
    k: int,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    ranks: Sequence[int | None] = DEFAULT_RANKS,
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    aggregation: str = DEFAULT_AGGREGATION,
    target: str | None = None,
    backend: str = "native",
    coords: Mapping[str, Any] | None = None,
    contexts: Sequence[float] = DEFAULT_CONTEXTS,
) -> HeadSelection:
    """Choose the ridge penalty, the blend weight and the context weight by
    leave-one-training-section-out CV.

    Parameters
    ----------
    query_embeddings
        Training section id -> float ``[n_spots, D]`` *image* embeddings of that section's spots,
        in the order of its rows in ``reference``. At least two sections. The ridge of an inner
        fold is fitted on the other sections' image embeddings and values.
    reference
        The fold's reference (training spots only).
    k
        The retrieval K of the blend (clipped to each inner reference).
    alphas, ranks, weights
        Candidate ridge penalties (per spot), ranks (None: full rank) and blend weights in
        [0, 1]; the ridge candidates are every (rank, alpha) pair.
    aggregation, backend
        As in :func:`mclstexp.tl.predict.predict_from_embeddings`.
    target
        Which value matrix to score (default: ``reference.meta["default_target"]`` or the first).
    coords, contexts
        Training section id -> ``[n_spots, 2]`` spot centres, and the candidate context weights
        of the ``blend+context`` head (:func:`mclstexp.tl.context.choose_context`, applied to
        each inner fold's chosen blend). Without ``coords`` no context weight is chosen.

    Returns
    -------
    HeadSelection

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> emb = rng.normal(size=(60, 4)).astype(np.float32)
    >>> ref = Reference(emb, {"t": emb[:, :2] * 3}, ["A", "B"],
    ...                 [str(i) for i in range(60)], ["S1"] * 30 + ["S2"] * 30)
    >>> sel = select_heads({"S1": emb[:30], "S2": emb[30:]}, ref, k=5)
    >>> sel.weight  # the values are linear in the embedding: the ridge alone wins
    1.0
    """
    if len(query_embeddings) < 2:
        raise ValueError(
            "query_embeddings: heads are chosen by leaving one training section out; at least "
            f"two training sections are needed, got {len(query_embeddings)}"
        )
    if k < 1:
        raise ValueError(f"k: must be >= 1, got {k}")
    alphas = sorted({float(a) for a in alphas})
    weights = sorted({float(w) for w in weights})
    if not alphas or alphas[0] < 0:
        raise ValueError(f"alphas: need non-negative values, got {alphas}")
    if not ranks or any(r is not None and r < 1 for r in ranks):
        raise ValueError(f"ranks: need values >= 1 or None, got {list(ranks)}")
    candidates = [(r, a) for r in dict.fromkeys(ranks) for a in alphas]
    if not weights or weights[0] < 0 or weights[-1] > 1:
        raise ValueError(f"weights: need values in [0, 1], got {weights}")
    main = scored_target(reference, target)
    folds = {
        name: _inner_fold(
            name, query_embeddings, reference, main, k, candidates, aggregation, backend
        )
        for name in query_embeddings
    }
    per_section: dict[str, dict[str, dict[Any, float]]] = {
        name: {"ridge": scores} for name, (_, _, scores) in folds.items()
    }
    ridge_scores = _means(per_section, "ridge", candidates)
    best = max(candidates, key=lambda c: (ridge_scores[c], c[1], -(c[0] or 1 << 30)))
    same_rank = [a for r, a in candidates if r == best[0]]  # the same SVD path: the same bits
    inner = {}
    for name, (truth, retrieval, _) in folds.items():
        preds = _ridges(name, query_embeddings, reference, main, best[0], same_rank)
        ridge = next(p for a, p in zip(same_rank, preds, strict=True) if a == best[1])
        per_section[name]["blend"] = {
            w: mean_pcc(truth, blend(retrieval, ridge, w)) for w in weights
        }
        inner[name] = (truth, retrieval, ridge)
    blend_scores = _means(per_section, "blend", weights)
    weight = max(weights, key=lambda w: (blend_scores[w], -w))
    context, context_scores = 0.0, {}
    if coords is not None:
        mixed = {n: (t, blend(r, ridge, weight)) for n, (t, r, ridge) in inner.items()}
        context, context_scores = choose_context(mixed, coords, mean_pcc, weights=contexts)
    return HeadSelection(
        k=int(k),
        alpha=best[1],
        rank=best[0],
        weight=weight,
        ridge_scores=ridge_scores,
        blend_scores=blend_scores,
        per_section=per_section,
        target=main,
        context=context,
        context_scores=context_scores,
    )


def _means(
    per_section: Mapping[str, Mapping[str, Mapping[Any, float]]],
    head: str,
    candidates: Sequence[Any],
) -> dict[Any, float]:
    return {c: float(np.nanmean([s[head][c] for s in per_section.values()])) for c in candidates}
