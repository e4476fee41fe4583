"""``mclstexp bench hest`` end to end on fixtures in HEST-Benchmark's exact layout, and its
``hest-probe`` numbers against an independent re-computation of HEST's protocol.

The re-computation below is written from HEST's code (src/hest/bench/benchmark.py,
trainer.py, st_dataset.py at commit afd42c3), with numpy, h5py, anndata and scikit-learn only:
it reads the split CSVs, the gene JSON, the patch barcodes and the h5ad files itself, and takes
from mclstexp only the encoder features (read from the Zarr feature cache on disk).
"""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import zarr

from _hest_fixture import her2st_hest, tiny_hest
from mclstexp.cli.main import main

pytestmark = pytest.mark.slow
ENCODERS = ("test_resnet", "test_vit")


def _cached_features(work: Path, task: str, sample: str, encoder: str) -> np.ndarray:
    """The encoder's features of one sample, from the feature cache beside the patches."""
    folder = work / "patches.zarr" / f"{task}-{sample}" / "features"
    found = []
    for entry in folder.iterdir():
        if not entry.is_dir():  # the group's own zarr.json
            continue
        arr = zarr.open_array(str(entry), mode="r")
        if arr.attrs["key"]["backbone"] == encoder and arr.attrs.get("complete"):
            found.append(np.asarray(arr[:]))
    assert len(found) == 1, f"expected one feature array of {encoder} for {sample}"
    return found[0]


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def independent_hest_probe(task_dir: Path, work: Path, encoder: str, seed: int = 1) -> dict:
    """HEST's protocol, from its code: per split, StandardScaler + PCA(256) fitted on the
    training spots, float32, Ridge(lsqr, alpha=100/(d*G), no intercept) on log1p counts,
    Pearson per gene over the pooled test spots, mean over genes; mean and std over splits."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    genes = json.loads((task_dir / "var_50genes.json").read_text())["genes"]
    n_splits = len(list((task_dir / "splits").iterdir())) // 2

    def load(csv: Path) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for _, row in pd.read_csv(csv).iterrows():
            with h5py.File(task_dir / row["patches_path"], "r") as f:
                barcodes = [b.decode() for b in f["barcode"][:].flatten()]
            adata = ad.read_h5ad(task_dir / row["expr_path"])[barcodes][:, genes]
            x = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
            ys.append(np.log1p(x.astype(np.float64)))
            xs.append(_cached_features(work, task_dir.name, row["sample_id"], encoder))
        return np.concatenate(xs), np.concatenate(ys)

    means = []
    for i in range(n_splits):
        x_train, y_train = load(task_dir / "splits" / f"train_{i}.csv")
        x_test, y_test = load(task_dir / "splits" / f"test_{i}.csv")
        d = min(256, x_train.shape[1], x_train.shape[0])  # HEST asks 256; sklearn caps nothing
        pipe = Pipeline(
            [("scaler", StandardScaler()), ("PCA", PCA(n_components=d, random_state=seed))]
        )
        z_train = pipe.fit_transform(x_train).astype(np.float32)
        z_test = pipe.transform(x_test).astype(np.float32)
        alpha = 100 / (z_train.shape[1] * y_train.shape[1])
        reg = Ridge(
            solver="lsqr", alpha=alpha, random_state=seed, fit_intercept=False, max_iter=1000
        )
        pred = reg.fit(z_train, y_train).predict(z_test)
        means.append(np.mean([_pearson(y_test[:, j], pred[:, j]) for j in range(len(genes))]))
    return {"split_means": means, "mean": float(np.mean(means)), "std": float(np.std(means))}


def _bench(root: Path, task: str, out: Path, capsys, *extra: str) -> pd.DataFrame:
    args = ["bench", "hest", "--root", str(root), "--tasks", task, "--encoders", *ENCODERS]
    args += ["--methods", "probe", "mclstexp", "--device", "cpu", "--out", str(out), *extra]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"task {task}" in printed and "task average" in printed
    for name in ("hest.json", "hest.csv", "hest.txt", "hest.png"):
        assert (out / name).is_file()
    return pd.read_csv(out / "hest.csv")


def _check_against_independent(table: pd.DataFrame, task_dir: Path, work: Path) -> None:
    payload = json.loads((work.parent / "hest.json").read_text())
    for encoder in ENCODERS:
        ref = independent_hest_probe(task_dir, work, encoder)
        ours = [
            r["pearson_mean"]
            for r in payload["hest_records"]
            if r["method"] == f"hest-probe[{encoder}]"
        ]
        np.testing.assert_allclose(ours, ref["split_means"], rtol=0, atol=1e-6)
        row = table[
            (table.task == task_dir.name)
            & (table.method == f"hest-probe[{encoder}]")
            & (table.metric == "hest_pearson")
        ].iloc[0]
        assert row["mean"] == pytest.approx(ref["mean"], abs=1e-6)
        assert row["sd"] == pytest.approx(ref["std"], abs=1e-6)


def test_bench_hest_on_the_tiny_fixture(tmp_path: Path, capsys, monkeypatch) -> None:
    import mclstexp.models.features as features_module

    cache = features_module.FeatureCache()
    monkeypatch.setattr(features_module, "DEFAULT_CACHE", cache)
    _, bench_root = tiny_hest(tmp_path / "data")
    out = tmp_path / "out"
    table = _bench(bench_root, "TINY", out, capsys, "--budget-epochs", "1", "--k", "8")
    # features once per sample and encoder; the probes and mclSTExp's three trainings reuse them
    assert cache.stats["computed"] == 3 * len(ENCODERS)
    methods = set(table.method)
    for encoder in ENCODERS:
        assert {f"hest-probe[{encoder}]", f"mclstexp[{encoder}]"} <= methods
    assert set(table.metric) == {"hest_pearson", "pcc", "partial_pcc"}
    assert set(table.task) == {"TINY", "average"}
    hest_rows = table[(table.metric == "hest_pearson") & (table.task == "TINY")]
    assert (hest_rows["n"] == 3).all()  # three splits
    _check_against_independent(table, bench_root / "TINY", out / "work")
    payload = json.loads((out / "hest.json").read_text())
    probe = payload["splits"][0]["hest-probe[test_resnet]/hest_log1p"]
    assert probe["pca_components_"] == 32  # 2 training samples x 16 spots: capped below 256
    assert probe["alpha_"] == pytest.approx(100 / (32 * 6))
    # HEST's patches were copied into the patch cache, not re-tiled
    attrs = json.loads((out / "work/patches.zarr/TINY-TINY0/zarr.json").read_text())["attributes"]
    assert attrs["source_format"] == "hest-patches-h5 (hestcore)"
    assert attrs["source_path"] == str((bench_root / "TINY/patches/TINY0.h5").resolve())


@pytest.mark.realdata
def test_bench_hest_on_her2st_in_hest_layout(shared_data: Path, tmp_path: Path, capsys) -> None:
    _, bench_root = her2st_hest(
        shared_data, tmp_path / "data", sections=("C2", "C3", "C4"), scale=2, max_spots=60,
        wsi_sections=[],
    )  # fmt: skip
    out = tmp_path / "out"
    table = _bench(bench_root, "HER2ST", out, capsys, "--budget-epochs", "2")
    _check_against_independent(table, bench_root / "HER2ST", out / "work")
    print(table.round(3).to_string())  # the report's table (pytest -s)
    hest_rows = table[(table.metric == "hest_pearson") & (table.task == "HER2ST")]
    assert len(hest_rows) == 4 and (hest_rows["n"] == 3).all()
