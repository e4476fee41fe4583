"""Plots: files are written, valid PNGs of a sensible size, and NaN PCCs are handled."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from PIL import Image

from mclstexp import pl

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_png(path: Path, min_side: int = 300) -> tuple[int, int]:
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        w, h = im.size
        arr = np.asarray(im.convert("RGB"))
    assert min(w, h) >= min_side
    assert arr.std() > 5  # not a blank canvas
    return w, h


def _section(n_side: int = 12, seed: int = 0) -> tuple[ad.AnnData, ad.AnnData]:
    rng = np.random.default_rng(seed)
    xy = np.array([[x, y] for y in range(n_side) for x in range(n_side)], dtype=np.float64)
    xy = xy * 200.0 + 1000.0
    gradient = xy[:, 0] / xy[:, 0].max()
    truth = np.column_stack([gradient * 3, rng.gamma(1.0, size=len(xy)), np.full(len(xy), 2.0)])
    a = ad.AnnData(sp.csr_matrix(truth.astype(np.float32)), obsm={"spatial": xy})
    a.obs_names = [f"s{i}" for i in range(len(xy))]
    a.var_names = ["GRAD", "NOISE", "FLAT"]
    a.uns["mclstexp"] = {"section": "T1"}
    pred_x = np.column_stack([gradient * 2 + rng.normal(0, 0.2, len(xy)), rng.random(len(xy))])
    pred_x = np.column_stack([pred_x, np.full(len(xy), 1.5)])  # FLAT: constant prediction
    order = rng.permutation(len(xy))  # predictions in another spot order
    p = ad.AnnData(pred_x[order], obsm={"spatial": xy[order]})
    p.obs_names = a.obs_names[order]
    p.var_names = a.var_names
    return a, p


def test_spatial_expression_writes_a_png_over_a_thumbnail(tmp_path: Path) -> None:
    a, p = _section()
    thumb = np.full((400, 400, 3), 235, dtype=np.uint8)
    thumb[100:300, 100:300] = (200, 120, 180)  # a pink blob
    out = tmp_path / "maps" / "spatial.png"
    fig = pl.spatial_expression(a, p, ["GRAD", "NOISE", "FLAT"], image=thumb, scale=0.125, path=out)
    w, h = _check_png(out)
    assert h > w  # three gene rows, two columns
    titles = [ax.get_title() for ax in fig.axes]
    grad_title = next(t for t in titles if t.startswith("GRAD: predicted"))
    # PCC is computed after aligning spots by name (a wrong order would give about 0)
    assert float(grad_title.split("PCC = ")[1]) > 0.8
    assert any("FLAT: predicted" in t and "undefined" in t for t in titles)


def test_spatial_expression_single_gene_without_image(tmp_path: Path) -> None:
    a, p = _section()
    out = tmp_path / "one.png"
    pl.spatial_expression(a, p, "GRAD", path=out)
    _check_png(out, min_side=200)


def test_spatial_expression_rejects_bad_input() -> None:
    a, p = _section()
    with pytest.raises(ValueError, match="NOPE"):
        pl.spatial_expression(a, p, ["NOPE"])
    with pytest.raises(ValueError, match="missing from adata_pred"):
        pl.spatial_expression(a, p[:10], ["GRAD"])
    with pytest.raises(ValueError, match="image"):
        pl.spatial_expression(a, p, ["GRAD"], image=np.zeros((10, 10)))


def test_unknown_genes_are_named_with_the_closest_and_the_others_plotted(tmp_path: Path) -> None:
    """Regression (issue #18, item 12): the README's ``--plot-genes ERBB2 CD74`` raised after the
    prediction was written, because ERBB2 is not in the her2st panel."""
    _, p = _section()
    out = tmp_path / "dense.png"
    with pytest.warns(UserWarning, match=r"'GRAD2'.*closest.*'GRAD'.*'ERBB2'"):
        fig = pl.spatial_prediction(p, ["GRAD2", "NOISE", "ERBB2"], path=out)
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["NOISE: predicted"]
    _check_png(out, min_side=200)
    with pytest.raises(ValueError, match=r"none of the genes .*'GRAD2'.*closest.*'GRAD'"):
        pl.spatial_prediction(p, ["GRAD2"])
    a, p = _section()
    with pytest.warns(UserWarning, match="NOPE"):
        pl.spatial_expression(a, p, ["NOPE", "GRAD"])


def test_pcc_distribution_handles_nan_and_all_nan(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    pcc = {
        "model": np.r_[rng.normal(0.2, 0.1, 300), [np.nan] * 5],
        "colour_ridge": rng.normal(0.1, 0.1, 305),
        "training_mean": np.full(305, np.nan),
        "one_gene": np.array([0.5]),
    }
    out = tmp_path / "pcc.png"
    fig = pl.pcc_distribution(pcc, path=out, title="T1, legacy_gene, per-section")
    _check_png(out)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert any("5 undefined" in s for s in labels)
    assert any("training_mean" in s and "305 undefined" in s for s in labels)
    with pytest.raises(ValueError, match="empty"):
        pl.pcc_distribution({})


def _records() -> list[dict]:
    rng = np.random.default_rng(2)
    recs = []
    for target in ("legacy_gene", "default"):
        for sec in ("C2", "C3", "C4"):
            for method, mu in (("model", 0.2), ("training_mean", np.nan), ("colour_ridge", 0.1)):
                for seed in range(3):
                    recs.append(
                        {
                            "section": sec,
                            "method": method,
                            "seed": seed,
                            "target": target,
                            "scope": "per-section",
                            "acg": mu + rng.normal(0, 0.02),
                            "partial_acg": mu / 2,
                        }
                    )
    return recs


def test_fold_summary_writes_a_png_with_every_fold_and_method(tmp_path: Path) -> None:
    out = tmp_path / "folds.png"
    fig = pl.fold_summary(_records(), metric="acg", target="legacy_gene", path=out)
    w, h = _check_png(out)
    assert w > h
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["C2", "C3", "C4", "all folds"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "model",
        "training_mean",
        "colour_ridge",
    ]
    assert "legacy_gene" in ax.get_title() and "sd over seeds" in ax.get_title()
    assert any(t.get_text() == "n/a" for t in ax.texts)  # NaN metric marked, not drawn as 0


def test_fold_summary_requires_a_target_when_records_mix_them() -> None:
    with pytest.raises(ValueError, match="several targets"):
        pl.fold_summary(_records(), metric="acg")
    with pytest.raises(ValueError, match="no column"):
        pl.fold_summary(_records(), metric="nope", target="default")


def test_retrieval_throughput_draws_one_panel_per_query_count(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    open_before = plt.get_fignums()
    recs = [
        {"backend": b, "N": n, "Q": q, "qps": n / (i + 1), "dim": 16, "k": 5, "threads": 2}
        for i, b in enumerate(("native", "numpy", "hnswlib"))
        for n in (1000, 10_000)
        for q in (8, 64)
    ]
    out = tmp_path / "bench" / "throughput.png"
    fig = pl.retrieval_throughput(recs, approximate=["hnswlib"], path=out)
    _check_png(out)
    assert [ax.get_title().split(",")[0] for ax in fig.axes] == ["Q=8", "Q=64"]
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["native", "numpy", "hnswlib"]
    assert [line.get_linestyle() for line in lines] == ["-", "-", "--"]
    assert plt.get_fignums() == open_before  # no pyplot global state
    with pytest.raises(ValueError, match="empty"):
        pl.retrieval_throughput([])


def test_fidelity_summary_draws_metric_rows_by_target_columns(tmp_path: Path) -> None:
    from mclstexp.workflow.report import summary_frame

    recs = [{**r, "heg": r["acg"]} for r in _records()]
    summary = summary_frame(recs)
    out = tmp_path / "fidelity.png"
    fig = pl.fidelity_summary(summary, path=out)
    _check_png(out)
    assert len(fig.axes) == 3 * 2  # (acg, partial_acg, heg) x (legacy_gene, default)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "PCC-ACG\ntarget: legacy_gene, per-section"
    assert titles[1] == "PCC-ACG\ntarget: default, per-section"
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert ticks == ["model", "training_mean", "colour_ridge"]
