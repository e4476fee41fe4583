"""Heads beyond retrieval: the ridge readout, the blend, and their choice on training sections."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from mclstexp.tl.heads import blend, fit_ridge, ridge_path, select_heads
from mclstexp.tl.reference import Reference
from mclstexp.workflow.fold import head_rows


def test_ridge_path_is_the_closed_form_on_standardised_inputs() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5)) * np.array([1.0, 10.0, 0.1, 3.0, 1.0]) + 2.0
    y = rng.normal(size=(40, 3))
    xs = (x - x.mean(0)) / x.std(0)
    for alpha, readout in zip((0.0, 0.1, 5.0), ridge_path(x, y, (0.0, 0.1, 5.0)), strict=True):
        w = np.linalg.solve(xs.T @ xs + alpha * 40 * np.eye(5), xs.T @ (y - y.mean(0)))
        assert np.allclose(readout.weights, w, atol=1e-8)
        assert np.allclose(readout.predict(x), xs @ w + y.mean(0), atol=1e-5)
    # reduced rank: full rank is the plain ridge; rank 1 predicts along one expression axis
    full = fit_ridge(x, y, 0.1).predict(x)
    np.testing.assert_allclose(fit_ridge(x, y, 0.1, rank=3).predict(x), full, atol=1e-5)
    low = fit_ridge(x, y, 0.1, rank=1).predict(x) - y.mean(0)
    assert np.linalg.matrix_rank(low, tol=1e-4) == 1
    # a constant feature is only centred, never divided by zero
    x[:, 2] = 7.0
    assert np.isfinite(fit_ridge(x, y, 1.0).predict(x)).all()


def test_bad_arguments_are_refused_by_name() -> None:
    x, y = np.zeros((5, 2)), np.zeros((5, 1))
    with pytest.raises(ValueError, match="alphas"):
        ridge_path(x, y, (-1.0,))
    with pytest.raises(ValueError, match="same N"):
        ridge_path(x, np.zeros((4, 1)), (1.0,))
    with pytest.raises(ValueError, match="weight"):
        blend(x, x, 1.5)
    with pytest.raises(ValueError, match="x: expected"):
        fit_ridge(x + np.arange(5)[:, None], y, 1.0).predict(np.zeros((2, 3)))


def _sections(kind: str, names: tuple[str, ...], seed: int = 0) -> dict[str, tuple]:
    """Per section: (embeddings [n, 4], values [n, 3]); ``linear`` values are a linear map of
    the embedding plus noise, ``local`` values a lookup of the nearest of 12 fixed centres (a
    function retrieval follows and a linear map cannot), the embeddings clustered around them."""
    out = {}
    centres = np.random.default_rng(99).normal(size=(12, 4)) * 2
    table = np.random.default_rng(98).normal(size=(12, 3)) * 3
    for i, name in enumerate(names):
        rng = np.random.default_rng([seed, i])
        if kind == "linear":
            emb = rng.normal(size=(80, 4))
            vals = emb @ np.array([[1.0, 0, 2], [0, 1, 0], [0.5, 0, 0], [0, 0, 1]])
            vals = vals + 0.05 * rng.normal(size=vals.shape)
        else:
            emb = centres[rng.integers(0, 12, 80)] + 0.1 * rng.normal(size=(80, 4))
            nearest = np.argmin(((emb[:, None] - centres[None]) ** 2).sum(-1), axis=1)
            vals = table[nearest] + 0.1 * rng.normal(size=(80, 3))
        out[name] = (emb.astype(np.float32), vals.astype(np.float32))
    return out


def _reference(parts: dict[str, tuple]) -> Reference:
    names = list(parts)
    return Reference(
        np.concatenate([parts[n][0] for n in names]),
        {"default": np.concatenate([parts[n][1] for n in names])},
        ["A", "B", "C"],
        [f"{n}_{i}" for n in names for i in range(len(parts[n][0]))],
        [n for n in names for _ in range(len(parts[n][0]))],
        meta={"default_target": "default"},
    )


def test_linear_values_choose_the_ridge_and_local_values_choose_retrieval() -> None:
    linear = _sections("linear", ("S1", "S2", "S3"))
    sel = select_heads({n: e for n, (e, _) in linear.items()}, _reference(linear), k=5)
    assert sel.weight == 1.0
    assert sel.ridge_scores[(sel.rank, sel.alpha)] == max(sel.ridge_scores.values())
    local = _sections("local", ("S1", "S2", "S3"))
    sel = select_heads({n: e for n, (e, _) in local.items()}, _reference(local), k=5)
    assert sel.weight < 0.5
    assert set(sel.per_section) == {"S1", "S2", "S3"}
    assert sel.to_dict()["weight"] == sel.weight


def test_the_choice_never_sees_the_held_out_section() -> None:
    """Training sections S1-S3 have linear values (the ridge wins); the held-out S4's values are
    local (they would pull the choice to retrieval if S4 were among the inner folds). The
    fold's heads are chosen and fitted from the training sections only: whatever S4's values,
    the choice and the ridge predictions are the same."""
    train = _sections("linear", ("S1", "S2", "S3"))
    held_local = _sections("local", ("S4",), seed=1)["S4"]
    # teeth: with S4 as one more inner fold, the choice changes
    with_s4 = {**train, "S4": held_local}
    leaky = select_heads({n: e for n, (e, _) in with_s4.items()}, _reference(with_s4), k=5)
    honest = select_heads({n: e for n, (e, _) in train.items()}, _reference(train), k=5)
    assert (leaky.weight, leaky.alpha, leaky.rank) != (honest.weight, honest.alpha, honest.rank)

    trained = SimpleNamespace(
        reference=_reference(train), sections=[SimpleNamespace(name=n) for n in train]
    )
    inner = {n: e for n, (e, _) in train.items()}
    query = {"S4": held_local[0]}
    results = []
    for values in (held_local[1], -held_local[1], np.zeros_like(held_local[1])):
        retrieval = {"S4": {"default": values}}  # unused by the choice; blended in afterwards
        rows, record = head_rows(trained, inner, query, retrieval, k=5, aggregation="mean")
        results.append((record, rows["S4"]["ridge"]["default"]))
    first_record, first_ridge = results[0]
    assert (first_record["weight"], first_record["alpha"], first_record["rank"]) == (
        honest.weight,
        honest.alpha,
        honest.rank,
    )
    for record, ridge in results[1:]:
        assert record == first_record
        np.testing.assert_array_equal(ridge, first_ridge)


def test_the_choice_keeps_one_ridge_prediction_per_inner_fold_not_one_per_candidate() -> None:
    """65 ridge candidates x 4 inner folds of [200, 400] float64 predictions took ~170 MB at
    once (the peak of a her2st fold's RSS); each candidate is now scored as it is made."""
    import tracemalloc

    rng = np.random.default_rng(0)
    names = ("S1", "S2", "S3", "S4")
    emb = {n: rng.normal(size=(200, 16)).astype(np.float32) for n in names}
    w = rng.normal(size=(16, 400))
    vals = np.concatenate([emb[n] @ w + rng.normal(size=(200, 400)) for n in names])
    ref = Reference(
        np.concatenate([emb[n] for n in names]),
        {"default": vals.astype(np.float32)},
        [f"g{i}" for i in range(400)],
        [f"{n}_{i}" for n in names for i in range(200)],
        [n for n in names for _ in range(200)],
        meta={"default_target": "default"},
    )
    one_prediction = 200 * 400 * 8
    tracemalloc.start()
    try:
        sel = select_heads(emb, ref, k=20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(sel.ridge_scores) == 65
    assert peak < 40 * one_prediction, peak / one_prediction
