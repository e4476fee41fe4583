"""K chosen on the training sections only (inner leave-one-section-out retrieval)."""

from __future__ import annotations

import numpy as np
import pytest

from mclstexp.tl.reference import Reference
from mclstexp.tl.select_k import select_k


def _reference(noise: float, seed: int = 0) -> tuple[Reference, dict[str, np.ndarray]]:
    """Three sections whose expression is a smooth function of a 2-D embedding plus noise."""
    rng = np.random.default_rng(seed)
    n, sections = 120, ["S1", "S2", "S3"]
    emb = rng.normal(size=(n * 3, 2)).astype(np.float32)
    emb = np.hstack([emb, np.ones((n * 3, 1), np.float32)])  # keep cosine informative
    signal = np.stack([np.sin(emb[:, 0]), np.cos(emb[:, 1]), emb[:, 0] * emb[:, 1]], axis=1)
    values = (signal + noise * rng.normal(size=signal.shape)).astype(np.float32)
    ref = Reference(
        emb,
        {"default": values},
        ["A", "B", "C"],
        [f"s{i}" for i in range(n * 3)],
        [s for s in sections for _ in range(n)],
        meta={"default_target": "default"},
    )
    queries = {s: emb[i * n : (i + 1) * n] for i, s in enumerate(sections)}
    return ref, queries


def test_noise_pushes_k_up_and_scores_are_inner_cv_pcc() -> None:
    clean_ref, queries = _reference(noise=0.0)
    noisy_ref, _ = _reference(noise=3.0)
    grid = (1, 3, 10, 40, 200)
    clean = select_k(queries, clean_ref, grid=grid, aggregation="mean")
    noisy = select_k(queries, noisy_ref, grid=grid, aggregation="mean")
    # noiseless values: the nearest neighbours are best; noisy values need averaging
    assert clean.k <= 3 < noisy.k
    assert set(clean.scores) == set(grid) and set(clean.per_section) == {"S1", "S2", "S3"}
    assert clean.scores[clean.k] == max(clean.scores.values())
    # the score is the mean per-gene PCC of predicting each section from the two others
    from mclstexp.tl.predict import predict_from_embeddings

    own = np.asarray(clean_ref.sections) == "S2"
    inner = Reference(
        clean_ref.embeddings[~own],
        {"default": clean_ref.values["default"][~own]},
        clean_ref.genes,
        [s for s, o in zip(clean_ref.spot_ids, own, strict=True) if not o],
        list(np.asarray(clean_ref.sections)[~own]),
    )
    pred, _, _ = predict_from_embeddings(queries["S2"], inner, k=3, aggregation="mean")
    truth = clean_ref.values["default"][own]
    pcc = [np.corrcoef(truth[:, g], pred["default"][:, g])[0, 1] for g in range(3)]
    assert clean.per_section["S2"][3] == pytest.approx(np.mean(pcc), abs=1e-6)
    assert clean.to_dict()["k"] == clean.k


def test_bad_input_is_refused_with_the_argument_named() -> None:
    ref, queries = _reference(noise=0.1)
    with pytest.raises(ValueError, match="at least two"):
        select_k({"S1": queries["S1"]}, ref)
    with pytest.raises(ValueError, match="grid"):
        select_k(queries, ref, grid=(0, 5))
    with pytest.raises(ValueError, match=r"query_embeddings\['S1'\]"):
        select_k({"S1": queries["S1"][:5], "S2": queries["S2"]}, ref)
    with pytest.raises(ValueError, match="target"):
        select_k(queries, ref, target="nope")
