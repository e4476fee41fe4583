"""End to end through the command line on a tiny synthetic dataset: run, predict, evaluate."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mclstexp.cli.main import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    data = tmp_path_factory.mktemp("synthetic")
    code = main(
        [
            "run",
            "--root",
            str(data),
            "--n-sections",
            "3",
            "--n-spots",
            "60",
            "--data-seed",
            "3",
            "--holdout",
            "A1",
            "--epochs",
            "2",
            "--k",
            "20",
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    return out, data


def test_run_writes_every_output(tiny_run) -> None:
    out, _ = tiny_run
    config = json.loads((out / "config.json").read_text())
    assert config["dataset"] == "synthetic" and config["folds"] == [["A1"]]
    assert config["dataset_params"]["seed"] == 3 and config["dataset_params"]["n_spots"] == 60
    metrics = json.loads((out / "metrics.json").read_text())
    methods = {r["method"] for r in metrics["records"]}
    assert {"mclstexp[cpu]", "training_mean", "colour_ridge", "library_size"} <= methods
    # the cpu preset's encoder is frozen: the linear probe on its features is a reference row
    assert "probe[resnet18]" in methods and "probe[resnet18]" in (out / "results.txt").read_text()
    # spatial context: the model's blend and the colour ridge each get a context row, the weight
    # chosen on the training sections and recorded
    assert {"mclstexp[cpu]+blend+context", "colour_ridge+context"} <= methods
    (run,) = metrics["runs"]
    assert run["head_selection"]["context"] in (0.0, 0.25, 0.5, 0.75)
    assert set(run["head_selection"]["context_scores"]) == {"0", "0.25", "0.5", "0.75"}
    assert run["reference_selection"]["context"] in (0.0, 0.25, 0.5, 0.75)
    # the cpu preset's two variants were trained; the one the training sections prefer is kept
    chosen = run["variant_selection"]["variant"]
    assert set(run["variant_selection"]["scores"]) == {"frozen", "trained"}
    assert chosen == max(
        run["variant_selection"]["scores"], key=run["variant_selection"]["scores"].get
    )
    assert {r["target"] for r in metrics["records"]} == {"legacy_gene", "default"}
    assert all(r["scope"] == "per-section" for r in metrics["records"])
    table = pd.read_csv(out / "metrics.csv")
    assert len(table) == len(metrics["records"]) and table["acg"].notna().all()
    assert "PCC-ACG" in (out / "results.txt").read_text()
    for png in (out / "plots").glob("*.png"):
        with Image.open(png) as im:
            assert im.size[0] > 200 and im.size[1] > 200
    assert len(list((out / "plots").glob("*.png"))) == 3
    fold = out / "cpu" / "seed0" / "A1"
    for name in ("model.pt", "reference.npz", "predictions/A1.h5ad"):
        assert (fold / name).is_file(), name
    chosen_model = fold / "variants" / chosen / "model.pt"
    assert (fold / "model.pt").stat().st_ino == chosen_model.stat().st_ino


def test_predict_reproduces_the_saved_predictions(tiny_run, tmp_path) -> None:
    out, data = tiny_run
    fold = out / "cpu" / "seed0" / "A1"
    saved = ad.read_h5ad(fold / "predictions" / "A1.h5ad")
    # The held-out section's spots, written as an .h5ad the way a user would bring them.
    from mclstexp.datasets import synthetic

    section = next(
        a
        for a in synthetic(data, n_sections=3, n_spots=60, seed=3)
        if a.uns["mclstexp"]["section"] == "A1"
    )
    section.uns["mclstexp"].pop("synthetic", None)
    section.write_h5ad(tmp_path / "A1.h5ad")
    pred_path = tmp_path / "pred.h5ad"
    code = main(
        [
            "predict",
            "--model",
            str(fold),
            "--h5ad",
            str(tmp_path / "A1.h5ad"),
            "--k",
            "20",
            "--out",
            str(pred_path),
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    again = ad.read_h5ad(pred_path)
    assert list(again.obs_names) == list(saved.obs_names)
    np.testing.assert_array_equal(
        again.obsm["mclstexp_neighbors"], saved.obsm["mclstexp_neighbors"]
    )
    np.testing.assert_allclose(np.asarray(again.X), np.asarray(saved.X), rtol=1e-5, atol=1e-6)

    code = main(
        [
            "evaluate",
            str(pred_path),
            "--truth",
            str(tmp_path / "A1.h5ad"),
            "--out",
            str(tmp_path / "m.json"),
        ]
    )
    assert code == 0
    record = json.loads((tmp_path / "m.json").read_text())
    assert record["target"] == "default" and record["scope"] == "per-section"


def test_dense_prediction_over_tissue_grid(tiny_run, tmp_path) -> None:
    out, data = tiny_run
    fold = out / "cpu" / "seed0" / "A1"
    slide = next(data.rglob("A1.tif"))
    pred_path = tmp_path / "dense.h5ad"
    code = main(
        [
            "predict",
            "--model",
            str(fold),
            "--grid",
            str(slide),
            "--k",
            "20",
            "--out",
            str(pred_path),
            "--device",
            "cpu",
            "--plot-genes",
            "G000",
            "G001",
        ]
    )
    assert code == 0
    dense = ad.read_h5ad(pred_path)
    assert dense.n_obs > 50 and dense.n_vars == 50
    assert np.isfinite(np.asarray(dense.X)).all()
    with Image.open(pred_path.with_suffix(".png")) as im:
        assert im.size[0] > 300


def test_run_refuses_synthetic_only_options_for_her2st(tmp_path, capsys) -> None:
    assert main(["run", "her2st", "--root", str(tmp_path), "--data-seed", "1"]) == 2
    err = capsys.readouterr().err
    assert "--data-seed: apply to the synthetic dataset only" in err
