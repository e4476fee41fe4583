"""Reference building blocks and retrieval prediction (no model needed: embeddings given)."""

from __future__ import annotations

import numpy as np
import pytest

from mclstexp.tl.predict import predict_from_embeddings
from mclstexp.tl.reference import Reference, concatenate_references


def _reference(n: int = 40, d: int = 8, g: int = 5, seed: int = 0) -> Reference:
    rng = np.random.default_rng(seed)
    return Reference(
        embeddings=rng.normal(size=(n, d)).astype(np.float32),
        values={
            "default": rng.random((n, g)).astype(np.float32),
            "legacy_gene": rng.random((n, g)).astype(np.float32),
        },
        genes=[f"G{i}" for i in range(g)],
        spot_ids=[f"s{i}" for i in range(n)],
        sections=["A"] * (n // 2) + ["B"] * (n - n // 2),
        meta={"default_target": "default"},
    )


def test_save_load_round_trip_is_exact(tmp_path) -> None:
    ref = _reference()
    loaded = Reference.load(ref.save(tmp_path / "ref.npz"))
    np.testing.assert_array_equal(loaded.embeddings, ref.embeddings)
    for name in ref.values:
        np.testing.assert_array_equal(loaded.values[name], ref.values[name])
    assert loaded.genes == ref.genes and loaded.spot_ids == ref.spot_ids
    assert loaded.sections == ref.sections and loaded.meta == ref.meta


def test_load_rejects_other_files(tmp_path) -> None:
    np.savez(tmp_path / "x.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match=r"incomplete reference|not a"):
        Reference.load(tmp_path / "x.npz")
    with pytest.raises(FileNotFoundError):
        Reference.load(tmp_path / "missing.npz")


def test_load_names_the_file_of_an_edited_reference(tmp_path) -> None:
    """Regression (sweep #76, #77): a reference.npz with a row removed or NaN values was refused
    by the constructor without naming the file ("spot_ids/sections: expected 37 entries ...")."""
    path = _reference().save(tmp_path / "ref.npz")
    with np.load(path, allow_pickle=False) as data:
        arrays = dict(data)
    short = {**arrays, "embeddings": arrays["embeddings"][:-3]}
    np.savez(tmp_path / "short_ref.npz", **short)
    with pytest.raises(ValueError, match=r"short_ref\.npz: .*spot_ids/sections: expected 37"):
        Reference.load(tmp_path / "short_ref.npz")
    nan = {**arrays, "values__default": arrays["values__default"].copy()}
    nan["values__default"][0, 0] = np.nan
    np.savez(tmp_path / "nan_ref.npz", **nan)
    with pytest.raises(
        ValueError,
        match=r"nan_ref\.npz: .*values\['default'\]: .*non-finite value \(nan\) at row 0",
    ):
        Reference.load(tmp_path / "nan_ref.npz")
    inf = {**arrays, "embeddings": arrays["embeddings"].copy()}
    inf["embeddings"][2, 1] = np.inf
    np.savez(tmp_path / "inf_ref.npz", **inf)
    with pytest.raises(
        ValueError, match=r"inf_ref\.npz: .*embeddings: .*\(inf\) at row 2, column 1"
    ):
        Reference.load(tmp_path / "inf_ref.npz")


def test_shape_mismatch_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"values\['t'\]"):
        Reference(np.zeros((3, 2)), {"t": np.zeros((2, 1))}, ["G"], ["a", "b", "c"], ["S"] * 3)


def test_concatenate_keeps_order() -> None:
    a, b = _reference(4, seed=1), _reference(6, seed=2)
    both = concatenate_references([a, b])
    assert len(both) == 10
    np.testing.assert_array_equal(both.embeddings[4:], b.embeddings)


def test_prediction_equals_hand_computed_inverse_l1_mean() -> None:
    ref = _reference()
    rng = np.random.default_rng(5)
    queries = rng.normal(size=(7, 8)).astype(np.float32)
    k = 5
    preds, idx, _ = predict_from_embeddings(queries, ref, k=k, aggregation="inverse_l1")
    # Oracle: cosine ranking in float64, weights 1/L1^2 normalised over the k neighbours.
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    rn = ref.embeddings / np.linalg.norm(ref.embeddings, axis=1, keepdims=True)
    sims = qn.astype(np.float64) @ rn.T.astype(np.float64)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(idx, order)
    dist = np.abs(queries[:, None, :] - ref.embeddings[order]).sum(-1).astype(np.float64)
    weights = 1.0 / dist**2
    weights /= weights.sum(1, keepdims=True)
    for target in ("default", "legacy_gene"):
        expected = (weights[..., None] * ref.values[target][order]).sum(1)
        np.testing.assert_allclose(preds[target], expected, rtol=1e-5, atol=1e-6)


def test_k_larger_than_reference_is_clipped() -> None:
    ref = _reference(n=6)
    preds, idx, _ = predict_from_embeddings(ref.embeddings[:2], ref, k=200, aggregation="mean")
    assert idx.shape == (2, 6)
    np.testing.assert_allclose(preds["default"][0], ref.values["default"].mean(0), rtol=1e-6)


def test_bad_query_shape_names_the_argument() -> None:
    with pytest.raises(ValueError, match="query_embeddings"):
        predict_from_embeddings(np.zeros((2, 3), np.float32), _reference(), k=2)


def test_faiss_and_native_backends_give_identical_neighbours() -> None:
    pytest.importorskip("faiss")
    ref = _reference(n=500, d=32)
    queries = np.random.default_rng(9).normal(size=(50, 32)).astype(np.float32)
    _, native, _ = predict_from_embeddings(queries, ref, k=20, backend="native")
    _, faiss_idx, _ = predict_from_embeddings(queries, ref, k=20, backend="faiss")
    np.testing.assert_array_equal(native, faiss_idx)
