"""Metrics against independent oracles (scipy, closed-form partial correlation, hand-made cases)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import pearsonr

from mclstexp import metrics as M


def _genes(g: int) -> list[str]:
    return [f"g{i}" for i in range(g)]


def test_pcc_matches_scipy_pearsonr() -> None:
    rng = np.random.default_rng(0)
    t = rng.gamma(2.0, size=(80, 12))
    p = 0.5 * t + rng.normal(size=t.shape)
    res = M.pearson_per_gene(t, sp.csr_matrix(p))  # sparse input accepted
    ref = np.array([pearsonr(t[:, j], p[:, j])[0] for j in range(t.shape[1])])
    np.testing.assert_allclose(res.pcc, ref, rtol=1e-10, atol=1e-12)
    assert res.n_constant == 0
    np.testing.assert_allclose(np.asarray(res), ref, rtol=1e-10)


def test_constant_genes_are_nan_excluded_and_counted() -> None:
    rng = np.random.default_rng(1)
    t = rng.normal(size=(50, 5))
    p = t + rng.normal(scale=0.5, size=t.shape)
    t[:, 0] = 3.0  # constant truth: undefined for every method
    p[:, 1] = 7.25  # constant prediction
    t[:, 4] = 0.1  # constant truth with a float that does not sum exactly
    res = M.pearson_per_gene(t, p)
    assert np.isnan(res.pcc[[0, 1, 4]]).all()
    assert np.isfinite(res.pcc[[2, 3]]).all()
    assert (res.n_constant_true, res.n_constant_pred, res.n_constant) == (2, 1, 3)
    assert res.n_genes_used == 2

    s = M.summarize_pcc(res, t, n_top=50)
    assert s["acg"] == pytest.approx(res.pcc[[2, 3]].mean())
    assert (s["n_genes_used"], s["n_constant"]) == (2, 3)
    assert (s["n_constant_true"], s["n_constant_pred"]) == (2, 1)

    # "zero" scores a constant prediction as 0 (it cannot hide hard genes); truth-constant stays out
    z = M.summarize_pcc(res, t, undefined_pred="zero")
    assert z["acg"] == pytest.approx(np.r_[0.0, res.pcc[[2, 3]]].mean())
    assert z["n_genes_used"] == 3

    # a plain array with NaN is understood the same way
    s2 = M.summarize_pcc(res.pcc, t)
    assert s2["acg"] == s["acg"] and s2["n_constant_pred"] == 1


def test_policy_values_and_finite_mean_are_what_summaries_average() -> None:
    rng = np.random.default_rng(11)
    t = rng.normal(size=(40, 6))
    p = t + rng.normal(size=t.shape)
    p[:, 2] = 1.5  # constant prediction
    t[:, 5] = 0.0  # constant truth
    res = M.pearson_per_gene(t, p)
    excl = M.policy_values(res, "exclude")
    zero = M.policy_values(res, "zero")
    assert np.isnan(excl[[2, 5]]).all() and zero[2] == 0.0 and np.isnan(zero[5])
    assert np.isnan(res.pcc[2])  # a copy: the result itself is not modified
    for policy, vals in (("exclude", excl), ("zero", zero)):
        assert M.summarize_pcc(res, t, undefined_pred=policy)["acg"] == M.finite_mean(vals)
    assert np.isnan(M.finite_mean(np.full(3, np.nan)))
    with pytest.raises(ValueError, match="undefined_pred"):
        M.policy_values(res, "drop")  # type: ignore[arg-type]


def test_every_public_name_is_importable_from_the_package() -> None:
    from mclstexp.metrics import aggregate, correlation, domains, error, records

    for name in M.__all__:
        assert getattr(M, name) is not None
    modules = (aggregate, correlation, domains, error, records)
    assert sorted(n for m in modules for n in m.__all__) == sorted(M.__all__)


def test_all_constant_prediction_gives_nan_not_a_number() -> None:
    t = np.random.default_rng(2).normal(size=(20, 4))
    rec = M.evaluate_section(
        t, np.tile(t.mean(0), (20, 1)), genes=_genes(4), section="S", target="default"
    )
    assert np.isnan(rec["acg"]) and rec["n_constant_pred"] == 4 and rec["n_genes_used"] == 0
    assert rec["mse"] == pytest.approx(t.var(0).mean())


def test_heg_and_hvg_select_the_right_genes_hand_made() -> None:
    # 6 genes, 4 spots. Means: g0=10 (but constant), g1=1, g2=5, g3=3, g4=8, g5=0.5
    t = np.array(
        [
            [10.0, 0.0, 5.0, 1.0, 7.9, 0.0],
            [10.0, 2.0, 5.1, 5.0, 8.1, 1.0],
            [10.0, 0.0, 4.9, 1.0, 7.9, 0.0],
            [10.0, 2.0, 5.0, 5.0, 8.1, 1.0],
        ]
    )
    # HEG top-2 among non-constant genes: g4 (8.0), g2 (5.0). HVG top-2: g3 (var 4), g1 (var 1).
    np.testing.assert_array_equal(M.top_genes(t, by="mean", n_top=2), [4, 2])
    np.testing.assert_array_equal(M.top_genes(t, by="var", n_top=2), [3, 1])
    pcc = np.array([np.nan, 0.1, 0.2, 0.3, 0.4, 0.5])  # distinct values identify the genes
    s = M.summarize_pcc(pcc, t, n_top=2)
    assert s["heg"] == pytest.approx((0.4 + 0.2) / 2)
    assert s["hvg"] == pytest.approx((0.3 + 0.1) / 2)
    assert s["acg"] == pytest.approx(np.mean([0.1, 0.2, 0.3, 0.4, 0.5]))
    assert s["n_constant_true"] == 1 and s["heg_n_used"] == 2
    # n_top larger than the eligible genes: all 5 non-constant genes, no error
    assert M.summarize_pcc(pcc, t, n_top=50)["heg"] == pytest.approx(s["acg"])


def test_top_genes_uses_50_by_default_on_a_real_size_panel() -> None:
    rng = np.random.default_rng(3)
    t = rng.gamma(1.0, size=(30, 200)) * np.linspace(0.1, 5, 200)
    heg = M.top_genes(t, by="mean")
    assert heg.size == 50
    assert set(heg) == set(np.argsort(-t.mean(0))[:50])


def _partial_formula(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> float:
    rxy, rxz, ryz = (np.corrcoef(a, b)[0, 1] for a, b in ((x, y), (x, z), (y, z)))
    return (rxy - rxz * ryz) / np.sqrt((1 - rxz**2) * (1 - ryz**2))


def test_partial_correlation_matches_the_closed_form() -> None:
    rng = np.random.default_rng(4)
    n, g = 200, 8
    z = rng.normal(size=n)
    t = np.outer(z, rng.normal(size=g)) + rng.normal(size=(n, g))
    p = 0.7 * t + np.outer(z, rng.normal(size=g)) + rng.normal(size=(n, g))
    res = M.partial_pcc_per_gene(t, p, z)
    ref = np.array([_partial_formula(t[:, j], p[:, j], z) for j in range(g)])
    np.testing.assert_allclose(res.pcc, ref, rtol=1e-9, atol=1e-12)
    assert res.kind == "partial" and res.n_constant == 0


def test_partial_is_undefined_for_a_prediction_explained_by_the_covariate() -> None:
    rng = np.random.default_rng(5)
    z = rng.normal(size=100)
    t = z[:, None] + rng.normal(size=(100, 3))
    p = np.column_stack([2.0 * z + 1.0, -z, z + rng.normal(size=100)])
    res = M.partial_pcc_per_gene(t, p, z)
    assert np.isnan(res.pcc[:2]).all() and res.n_constant_pred == 2
    assert np.isfinite(res.pcc[2])
    # a constant prediction (e.g. the training mean: 0.1 is inexact in binary) is undefined too
    const = M.partial_pcc_per_gene(t, np.full_like(t, 0.1), z)
    assert np.isnan(const.pcc).all() and const.n_constant_pred == 3
    # ...and so is a truth column explained by the covariate
    t2 = t.copy()
    t2[:, 0] = 0.3 * z - 0.7
    assert M.partial_pcc_per_gene(t2, p, z).constant_true.tolist() == [True, False, False]


def test_partial_rejects_bad_covariates() -> None:
    t = np.random.default_rng(6).normal(size=(10, 2))
    with pytest.raises(ValueError, match="constant"):
        M.partial_pcc_per_gene(t, t, np.ones(10))
    with pytest.raises(ValueError, match="NaN"):
        M.partial_pcc_per_gene(t, t, np.r_[-np.inf, np.ones(9)])
    with pytest.raises(ValueError, match="one value per spot"):
        M.partial_pcc_per_gene(t, t, np.arange(9.0))


def test_mse_mae_and_input_validation() -> None:
    t = np.array([[0.0, 1.0], [2.0, 3.0], [1.0, 1.0]])
    p = np.array([[1.0, 1.0], [2.0, 1.0], [1.0, 4.0]])
    assert M.mse(t, p) == pytest.approx((1 + 0 + 0 + 4 + 0 + 9) / 6)
    assert M.mae(t, p) == pytest.approx((1 + 0 + 0 + 2 + 0 + 3) / 6)
    with pytest.raises(ValueError, match="same"):
        M.mse(t, p[:, :1])
    with pytest.raises(ValueError, match="NaN"):
        M.pearson_per_gene(t, np.where(p > 3, np.nan, p))
    with pytest.raises(ValueError, match="2-D"):
        M.pearson_per_gene(t[:, 0], p[:, 0])


def test_log_library_size() -> None:
    c = np.array([[0, 0, 0], [1, 2, 3]])
    np.testing.assert_allclose(M.log_library_size(c), [0.0, np.log(7.0)])
    np.testing.assert_allclose(M.log_library_size(sp.csr_matrix(c)), [0.0, np.log(7.0)])
    np.testing.assert_allclose(M.log_library_size(np.array([0.0, 6.0])), [0.0, np.log(7.0)])
    with pytest.raises(ValueError, match="non-negative"):
        M.log_library_size(np.array([[-1.0]]))


def test_evaluate_section_record_is_labelled_and_serialisable() -> None:
    rng = np.random.default_rng(7)
    z = rng.normal(size=60)
    t = z[:, None] + rng.normal(size=(60, 5))
    p = t + rng.normal(size=t.shape)
    rec = M.evaluate_section(
        t, p, genes=_genes(5), section="C2", target="legacy_gene", method="m", seed=1
    )
    assert rec["scope"] == "per-section" and rec["target"] == "legacy_gene"
    assert rec["section"] == "C2" and rec["method"] == "m" and rec["seed"] == 1
    assert not any(k.startswith("partial") for k in rec)
    ref = M.summarize_pcc(M.pearson_per_gene(t, p), t)
    assert rec["acg"] == ref["acg"] and rec["heg"] == ref["heg"] and rec["hvg"] == ref["hvg"]
    assert rec["mse"] == pytest.approx(M.mse(t, p))

    rec2 = M.evaluate_section(
        t, p, genes=_genes(5), section="C2", target="default", log_library_size=z, per_gene=True
    )
    assert rec2["partial_covariate"] == "log_library_size"
    part = M.summarize_pcc(M.partial_pcc_per_gene(t, p, z), t)
    assert rec2["partial_acg"] == pytest.approx(part["acg"])
    assert set(rec2["pcc_per_gene"]) == set(_genes(5))
    json.dumps(rec2)  # JSON-serialisable as is

    with pytest.raises(TypeError):
        M.evaluate_section(t, p, genes=_genes(5), section="C2")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="target"):
        M.evaluate_section(t, p, genes=_genes(5), section="C2", target="")
    with pytest.raises(ValueError, match="genes"):
        M.evaluate_section(t, p, genes=_genes(4), section="C2", target="default")


def test_pooled_pcc_is_labelled_and_inflated_by_between_section_offsets() -> None:
    # Within each section truth and prediction are independent; sections differ in level.
    rng = np.random.default_rng(8)
    ts, ps = [], []
    for level in (0.0, 5.0, 10.0):
        ts.append(level + rng.normal(size=(100, 6)))
        ps.append(level + rng.normal(size=(100, 6)))
    per_section = [
        M.evaluate_section(t, p, genes=_genes(6), section=str(i), target="default")["acg"]
        for i, (t, p) in enumerate(zip(ts, ps, strict=True))
    ]
    pooled = M.pooled_pcc(ts, ps, target="default")
    assert pooled["scope"] == "pooled" and pooled["n_sections"] == 3 and pooled["n_spots"] == 300
    assert abs(np.mean(per_section)) < 0.1
    assert pooled["acg"] > 0.9
    with pytest.raises(TypeError):
        M.pooled_pcc(ts[0], ps[0], target="default")


def test_aggregate_records_means_sds_and_never_mixes_targets_or_scopes() -> None:
    recs = []
    for target, base in (("legacy_gene", 0.3), ("default", 0.1)):
        for seed in range(3):
            for sec in ("A", "B"):
                acg = base + 0.01 * seed + (0.05 if sec == "B" else 0.0)
                recs.append(
                    {
                        "method": "model",
                        "target": target,
                        "scope": "per-section",
                        "section": sec,
                        "seed": seed,
                        "acg": acg,
                        "mse": 1.0,
                    }
                )
    recs.append(
        {"method": "model", "target": "default", "scope": "pooled", "section": "pooled", "acg": 0.9}
    )
    df = M.aggregate_records(recs)
    assert len(df) == 3
    row = df[(df.target == "legacy_gene") & (df.scope == "per-section")].iloc[0]
    vals = [r["acg"] for r in recs if r["target"] == "legacy_gene"]
    assert row["acg_mean"] == pytest.approx(np.mean(vals))
    assert row["acg_sd"] == pytest.approx(np.std(vals, ddof=1))
    assert row["n_records"] == 6 and row["sections"] == "A,B" and row["seeds"] == "0,1,2"
    # a NaN propagates instead of being silently dropped
    recs[0]["acg"] = float("nan")
    df2 = M.aggregate_records(recs)
    assert np.isnan(df2[df2.target == "legacy_gene"]["acg_mean"].iloc[0])
    # target and scope are forced into the grouping
    df3 = M.aggregate_records(recs, by=("method",))
    assert {"target", "scope"} <= set(df3.columns) and len(df3) == 3
    with pytest.raises(ValueError, match="empty"):
        M.aggregate_records([])


def test_spatial_domains_ari_perfect_clusters_and_undetermined_dropped() -> None:
    rng = np.random.default_rng(9)
    centres = rng.normal(scale=10.0, size=(3, 40))
    labels = np.repeat(["invasive cancer", "adipose tissue", "immune infiltrate"], 30)
    x = np.repeat(centres, 30, axis=0) + rng.normal(size=(90, 40))
    # undetermined spots sit in a 4th blob: kept, they would break a 3-cluster ARI
    x = np.vstack([x, rng.normal(loc=-30.0, size=(10, 40))])
    labels = np.r_[labels, ["undetermined"] * 9, [None]]
    out = M.spatial_domains_ari(x, labels)
    assert out["ari"] == pytest.approx(1.0) and out["nmi"] == pytest.approx(1.0)
    assert (out["n_spots"], out["n_dropped"], out["n_classes"], out["n_components"]) == (
        90,
        10,
        3,
        9,
    )
    # random expression: ARI about 0
    noise = M.spatial_domains_ari(rng.normal(size=(90, 40)), labels[:90])
    assert abs(noise["ari"]) < 0.1
    with pytest.raises(ValueError, match="2 label classes"):
        M.spatial_domains_ari(x[:30], labels[:30])


def test_align_expression_reorders_spots_and_genes_by_name() -> None:
    import anndata as ad

    rng = np.random.default_rng(10)
    x = rng.normal(size=(12, 4))
    a = ad.AnnData(sp.csr_matrix(x))
    a.obs_names = [f"s{i}" for i in range(12)]
    a.var_names = _genes(4)
    order = rng.permutation(12)
    b = ad.AnnData(np.column_stack([x[order][:, ::-1], np.zeros(12)]))
    b.obs_names = a.obs_names[order]
    b.var_names = [*_genes(4)[::-1], "extra"]
    t, p, genes = M.align_expression(a, b)
    np.testing.assert_array_equal(t, p)
    assert genes == _genes(4)
    with pytest.raises(ValueError, match="genes of adata_true are missing"):
        M.align_expression(a, b[:, :2])
    with pytest.raises(ValueError, match="spots of adata_true are missing"):
        M.align_expression(a, b[:5])


def test_spatial_domains_on_her2st_labels(shared_data) -> None:
    """Measured expression of a labelled section recovers its regions better than shuffled spots."""
    import pandas as pd

    root = shared_data / "her2st" / "data"
    panel = np.load(shared_data / "genes" / "her_hvg_cut_1000.npy", allow_pickle=False).astype(str)
    cnt = pd.read_csv(root / "ST-cnts" / "G2.tsv.gz", sep="\t", index_col=0)
    lab = pd.read_csv(root / "ST-pat" / "lbl" / "G2_labeled_coordinates.tsv", sep="\t")
    lab = lab.dropna(subset=["x", "y"])
    lab.index = [f"{round(x)}x{round(y)}" for x, y in zip(lab.x, lab.y, strict=True)]
    ids = cnt.index.intersection(lab.index)
    library = cnt.loc[ids].to_numpy(np.float64).sum(axis=1)
    c = cnt.loc[ids].reindex(columns=panel, fill_value=0).to_numpy(np.float64)
    y = np.log1p(1e4 * c / np.maximum(library, 1.0)[:, None])
    labels = lab.loc[ids, "label"].to_numpy()
    out = M.spatial_domains_ari(y, labels)
    assert out["n_dropped"] == int((labels == "undetermined").sum()) > 0
    assert out["n_classes"] == 6
    assert out["ari"] > 0.15 and out["nmi"] > 0.2
    shuffled = M.spatial_domains_ari(np.random.default_rng(0).permutation(y), labels)
    assert abs(shuffled["ari"]) < 0.05
