"""Spatial context: neighbour means on real grid layouts, the context weight chosen on training
sections only, and the ``+blend+context`` / ``colour_ridge+context`` rows."""

from __future__ import annotations

from types import SimpleNamespace

import anndata
import numpy as np
import pandas as pd
import pytest

from mclstexp.tl.context import (
    choose_context,
    neighbour_mean,
    section_coords,
    sections_coords,
    with_context,
)
from mclstexp.tl.heads import select_heads
from mclstexp.tl.select_k import mean_pcc
from mclstexp.workflow.fold import head_rows
from test_tl_heads import _reference  # the same reference builder as the heads' tests


def _brute_force(values: np.ndarray, xy: np.ndarray, radius: float) -> np.ndarray:
    """float64 oracle: every pair's distance, neighbours within radius x median NN distance."""
    d = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    r = radius * np.median(d.min(1))
    out = values.astype(np.float64).copy()
    for i in range(len(xy)):
        nb = np.flatnonzero(d[i] < r)
        if len(nb):
            out[i] = values[nb].mean(0)
    return out


def _square(n: int, pitch: float = 290.0, jitter: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    grid = np.array([(c, r) for r in range(n) for c in range(n)], float) * pitch
    return grid + rng.normal(0, jitter, grid.shape)  # her2st-like pixel centres, a little off


def _hexagonal(n: int, pitch: float = 100.0) -> np.ndarray:
    return np.array(
        [
            (c * pitch + (r % 2) * pitch / 2, r * pitch * np.sqrt(3) / 2)
            for r in range(n)
            for c in range(n)
        ]
    )


@pytest.mark.parametrize("layout", ["square", "hexagonal"])
def test_neighbour_mean_matches_the_brute_force_oracle(layout: str) -> None:
    xy = _square(9) if layout == "square" else _hexagonal(9)
    xy = np.vstack([xy, [[1e5, 1e5]]])  # an island keeps its own value
    values = np.random.default_rng(1).normal(size=(len(xy), 5))
    got = neighbour_mean(values, xy)
    np.testing.assert_allclose(got, _brute_force(values, xy, 1.2), atol=1e-12)
    np.testing.assert_array_equal(got[-1], values[-1])
    # the grid's own neighbourhood: 4 direct neighbours (square), 6 (hexagonal), no diagonals
    centre = (np.arange(len(xy)) == 40).astype(float)[:, None]  # spot 40: the grid's middle
    reached = neighbour_mean(centre, xy)[:, 0] > 0  # the spots that have it as a neighbour
    reached[40] = False
    assert int(reached.sum()) == (4 if layout == "square" else 6)


def test_with_context_and_arguments_are_checked() -> None:
    xy = _square(3)
    v = np.arange(9.0)[:, None]
    np.testing.assert_array_equal(with_context(v, xy, 0.0), v.astype(np.float32))
    np.testing.assert_allclose(with_context(v, xy, 1.0), neighbour_mean(v, xy), rtol=1e-6)
    with pytest.raises(ValueError, match="weight"):
        with_context(v, xy, 1.5)
    with pytest.raises(ValueError, match=r"coords: expected shape \(9, 2\)"):
        with_context(v, xy[:5], 0.5)
    with pytest.raises(ValueError, match="finite"):
        neighbour_mean(v, np.where(np.arange(18).reshape(9, 2) == 3, np.nan, xy))
    with pytest.raises(ValueError, match="weights"):
        choose_context({"S": (v, v)}, {"S": xy}, mean_pcc, weights=(0.0, 2.0))


def test_context_is_chosen_where_it_helps_and_refused_where_it_hurts() -> None:
    """Truth smooth over the grid + per-spot noise: mixing in the neighbours helps. Truth as a
    checkerboard (each spot's neighbours are its opposite): mixing hurts, the weight stays 0."""
    xy = _square(12)
    rows, cols = np.divmod(np.arange(len(xy)), 12)
    rng = np.random.default_rng(2)
    smooth = np.stack([np.sin(rows / 3.0), np.cos(cols / 4.0)], 1)
    noisy = smooth + rng.normal(0, 0.8, smooth.shape)
    w, scores = choose_context({"S": (smooth, noisy)}, {"S": xy}, mean_pcc)
    assert w > 0 and scores[w] > scores[0.0]
    checker = ((rows + cols) % 2)[:, None] * np.ones((1, 2))
    w, scores = choose_context(
        {"S": (checker, checker + rng.normal(0, 0.1, checker.shape))}, {"S": xy}, mean_pcc
    )
    assert w == 0.0 and scores[0.0] == max(scores.values())


def _adata(name: str, xy: np.ndarray | None, array: bool = False) -> anndata.AnnData:
    obs = pd.DataFrame(index=[f"{name}{i}" for i in range(4)])
    if array:
        obs["array_row"], obs["array_col"] = [0, 0, 1, 1], [0, 1, 0, 1]
    a = anndata.AnnData(np.zeros((4, 1)), obs=obs)
    a.uns["mclstexp"] = {"section": name}
    if xy is not None:
        a.obsm["spatial"] = xy
    return a


def test_section_coords_reads_pixels_then_array_coordinates() -> None:
    xy = np.array([[10.0, 5.0], [20.0, 5.0], [10.0, 15.0], [20.0, 15.0]])
    np.testing.assert_array_equal(section_coords(_adata("A", xy)), xy)
    assert section_coords(_adata("B", None, array=True)).tolist() == [
        [0, 0],
        [1, 0],
        [0, 1],
        [1, 1],
    ]
    with pytest.raises(ValueError, match="'C': no spot centres"):
        section_coords(_adata("C", None))
    assert sections_coords([_adata("A", xy), _adata("C", None)]) is None
    assert set(sections_coords([_adata("A", xy), _adata("B", None, array=True)])) == {"A", "B"}


def _smooth_sections(names: tuple[str, ...]) -> tuple[dict[str, tuple], dict[str, np.ndarray]]:
    """Embeddings = smooth values + spot noise on a 10 x 10 grid: context helps every head."""
    xy = _square(10)
    rows, cols = np.divmod(np.arange(100), 10)
    parts = {}
    for i, name in enumerate(names):
        rng = np.random.default_rng(i)
        vals = np.stack([np.sin(rows / 2.5 + i), np.cos(cols / 3.0 - i), rows / 10.0], 1)
        emb = np.hstack([vals, rng.normal(size=(100, 1))]) + rng.normal(0, 0.7, (100, 4))
        parts[name] = (emb.astype(np.float32), vals.astype(np.float32))
    return parts, {n: xy for n in names}


def test_heads_choose_context_on_training_sections_only() -> None:
    train, coords = _smooth_sections(("S1", "S2", "S3"))
    inner = {n: e for n, (e, _) in train.items()}
    sel = select_heads(inner, _reference(train), k=5, coords=coords)
    assert sel.context > 0 and sel.context_scores[sel.context] > sel.context_scores[0.0]
    assert sel.to_dict()["context"] == sel.context
    chosen = sel.to_dict()["chosen"]
    assert chosen["blend+context"] == sel.context_scores[sel.context]
    assert chosen["blend"] == sel.blend_scores[sel.weight]
    assert chosen["ridge"] == sel.ridge_scores[(sel.rank, sel.alpha)]
    assert select_heads(inner, _reference(train), k=5).context == 0.0  # no centres, no context

    held, held_coords = _smooth_sections(("S4",))
    trained = SimpleNamespace(
        reference=_reference(train), sections=[SimpleNamespace(name=n) for n in train]
    )
    records, outputs = [], []
    for values in (held["S4"][1], -held["S4"][1]):  # whatever the held-out section holds
        rows, record = head_rows(
            trained,
            inner,
            {"S4": held["S4"][0]},
            {"S4": {"default": values}},
            k=5,
            aggregation="mean",
            coords={**coords, **held_coords},
        )
        records.append(record)
        outputs.append(rows["S4"])
    assert records[0] == records[1] and records[0]["context"] == sel.context
    out = outputs[0]
    np.testing.assert_allclose(
        out["blend+context"]["default"],
        with_context(out["blend"]["default"], held_coords["S4"], sel.context),
        rtol=1e-6,
    )
    assert mean_pcc(held["S4"][1], out["blend+context"]["default"]) > mean_pcc(
        held["S4"][1], out["blend"]["default"]
    )
