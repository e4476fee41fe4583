"""``mclstexp evaluate`` scores predictions the way ``mclstexp run`` does, on the matrix it says."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from mclstexp.cli.main import main
from mclstexp.pp import normalize_expression

N_SPOTS, N_GENES, N_GOOD = 60, 50, 5


@pytest.fixture()
def files(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    """A truth .h5ad of raw counts, and predictions that are perfect on 5 genes and constant on
    the other 45 (X and every layer alike), as ``mclstexp predict`` writes them."""
    rng = np.random.default_rng(0)
    counts = rng.poisson(rng.uniform(2, 30, N_GENES), size=(N_SPOTS, N_GENES)).astype(np.float32)
    ids = [f"s{i}" for i in range(N_SPOTS)]
    genes = [f"G{j:03d}" for j in range(N_GENES)]
    grid = {"array_row": np.arange(N_SPOTS) // 10, "array_col": np.arange(N_SPOTS) % 10}
    truth = ad.AnnData(X=counts, obs=pd.DataFrame(grid, index=ids), var=pd.DataFrame(index=genes))
    truth.obsm["spatial"] = rng.uniform(0, 1000, (N_SPOTS, 2))
    truth.uns["mclstexp"] = {"section": "S1"}
    truth_path = tmp_path / "truth.h5ad"
    truth.write_h5ad(truth_path)
    norm = np.asarray(normalize_expression(truth, flavor="default").X, dtype=np.float32)
    values = norm.copy()
    values[:, N_GOOD:] = 1.0  # constant predictions on 45 of the 50 genes
    pred = ad.AnnData(X=values.copy(), obs=pd.DataFrame(index=ids), var=pd.DataFrame(index=genes))
    pred.layers["default"] = values.copy()
    pred.uns["mclstexp"] = {"prediction": {"target_in_X": "default", "targets": ["default"]}}
    pred_path = tmp_path / "pred.h5ad"
    pred.write_h5ad(pred_path)
    return pred_path, truth_path, norm


def _evaluate(pred: Path, truth: Path, out: Path, *extra: str) -> dict:
    assert main(["evaluate", str(pred), "--truth", str(truth), "--out", str(out), *extra]) == 0
    return json.loads(out.read_text())


def test_constant_predictions_score_zero_as_in_mclstexp_run(files, tmp_path: Path) -> None:
    """Regression (issue #18, item 5): evaluate dropped the 45 constant genes and gave ACG 1.0."""
    from mclstexp.workflow.fold import UNDEFINED_PCC

    pred, truth, _ = files
    record = _evaluate(pred, truth, tmp_path / "m.json")
    assert record["undefined_pred"] == UNDEFINED_PCC == "zero"
    assert record["acg"] == pytest.approx(N_GOOD / N_GENES)
    assert record["n_constant_pred"] == N_GENES - N_GOOD


def test_x_is_evaluated_unless_a_layer_is_asked_for(files, tmp_path: Path, capsys) -> None:
    """Regression (issue #18, item 5): evaluate read layers[target], so an edited X was ignored."""
    pred_path, truth, norm = files
    pred = ad.read_h5ad(pred_path)
    pred.X = norm  # X edited to the perfect prediction; the layer keeps the constants
    pred.write_h5ad(pred_path)
    record = _evaluate(pred_path, truth, tmp_path / "x.json")
    assert record["matrix"] == "X" and record["acg"] == pytest.approx(1.0)
    assert "matrix: X" in capsys.readouterr().out
    layer = _evaluate(pred_path, truth, tmp_path / "l.json", "--layer", "default")
    assert layer["matrix"] == "layers['default']"
    assert layer["acg"] == pytest.approx(N_GOOD / N_GENES)
    assert main(["evaluate", str(pred_path), "--truth", str(truth), "--layer", "nope"]) == 2
    assert "no layer 'nope' (layers: ['default'])" in capsys.readouterr().err
    assert main(["evaluate", str(pred_path), "--truth", str(truth), "--target", "legacy_gene"]) == 2
    assert "X holds 'default' predictions, not 'legacy_gene'" in capsys.readouterr().err


def test_duplicate_spot_ids_are_refused_naming_the_file(files, tmp_path: Path, capsys) -> None:
    """Regression (sweep #106): duplicated obs names in the predictions were scored (anndata
    only warned), so one spot counted twice and the scores were wrong; the truth is checked too."""
    import warnings

    pred_path, truth_path, _ = files
    pred = ad.read_h5ad(pred_path)
    names = list(pred.obs_names)
    names[7] = names[3]
    names[9] = names[2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # anndata: "obs_names are not unique"
        pred.obs_names = names
        pred.write_h5ad(tmp_path / "pred_dup.h5ad")
    assert main(["evaluate", str(tmp_path / "pred_dup.h5ad"), "--truth", str(truth_path)]) == 2
    err = capsys.readouterr().err
    assert "pred_dup.h5ad: 2 duplicated spot ids (obs_names)" in err, err
    assert "['s2', 's3']" in err or "['s3', 's2']" in err, err
    truth = ad.read_h5ad(truth_path)
    tnames = list(truth.obs_names)
    tnames[5] = tnames[4]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        truth.obs_names = tnames
        truth.write_h5ad(tmp_path / "truth_dup.h5ad")
    assert main(["evaluate", str(pred_path), "--truth", str(tmp_path / "truth_dup.h5ad")]) == 2
    err = capsys.readouterr().err
    assert "truth_dup.h5ad: 1 duplicated spot ids (obs_names) (e.g. ['s4'])" in err, err
