"""``mclstexp train`` end to end on a small synthetic draw: it is a thin front over the fold
runner, and its run directory is what ``mclstexp predict --model DIR`` reads, without flags."""

from __future__ import annotations

import json
import shutil

import anndata as ad
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mclstexp.cli.main import main  # noqa: E402

pytestmark = pytest.mark.slow


def test_train_then_predict_without_extra_flags(tmp_path) -> None:
    run_dir = tmp_path / "run"
    train = ["train", "--synthetic", "--n-sections", "3", "--n-spots", "40", "--holdout", "A1"]
    opts = ["--preset", "cpu", "--epochs", "2", "--device", "cpu", "--no-progress"]
    assert main([*train, *opts, "--run-dir", str(run_dir)]) == 0
    for name in ("model.pt", "reference.npz", "checkpoint.pt", "log.jsonl", "config.json"):
        assert (run_dir / name).is_file(), name
    data = json.loads((run_dir / "data.json").read_text())
    assert data["holdout"] == "A1" and "A1" not in data["train"] and len(data["train"]) == 2
    assert len((run_dir / "log.jsonl").read_text().splitlines()) == 2
    assert not (run_dir / "patches" / "A1.zarr").exists()  # the held-out section is not tiled

    # the held-out section's spots, written as a user brings them (slide path recorded)
    from mclstexp.datasets import synthetic

    section = next(
        a
        for a in synthetic(run_dir / "synthetic", n_sections=3, n_spots=40)
        if a.uns["mclstexp"]["section"] == "A1"
    )
    section.uns["mclstexp"].pop("synthetic", None)
    section.write_h5ad(tmp_path / "A1.h5ad")
    out = tmp_path / "pred.h5ad"
    predict = ["predict", "--model", str(run_dir), "--h5ad", str(tmp_path / "A1.h5ad")]
    assert main([*predict, "--out", str(out), "--device", "cpu", "--k", "10"]) == 0
    pred = ad.read_h5ad(out)
    assert list(pred.obs_names) == list(section.obs_names)
    assert list(pred.var_names) == data["genes"] and np.isfinite(np.asarray(pred.X)).all()
    assert set(pred.obsm["mclstexp_neighbors"].ravel()) <= set(range(80))

    # resuming the finished run trains nothing more and gives the same model
    shutil.copy(run_dir / "model.pt", tmp_path / "first.pt")
    assert main([*train, *opts, "--run-dir", str(run_dir)]) == 0
    assert len((run_dir / "log.jsonl").read_text().splitlines()) == 2
    first = torch.load(tmp_path / "first.pt", weights_only=True)["model"]
    again = torch.load(run_dir / "model.pt", weights_only=True)["model"]
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_unknown_holdout_and_synthetic_only_options_are_refused(tmp_path, capsys) -> None:
    base = ["train", "--synthetic", "--n-sections", "2", "--n-spots", "20", "--device", "cpu"]
    assert main([*base, "--holdout", "nope", "--run-dir", str(tmp_path / "r")]) == 2
    assert "mclstexp train: error: holdout: unknown section(s) ['nope']" in capsys.readouterr().err
    assert main(["train", "--h5ad", str(tmp_path / "x.h5ad"), "--n-spots", "20"]) == 2
    assert "--n-spots: apply to --synthetic only" in capsys.readouterr().err
