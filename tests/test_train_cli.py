"""``mclstexp train`` end to end on in-memory sections (the readers, the patch extractor and the
normaliser of other areas are replaced by small fakes, so this tests the CLI's own logic)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from _model_fixtures import make_section  # noqa: E402
from mclstexp.cli import main as cli_main  # noqa: E402
from mclstexp.cli import train as cli_train  # noqa: E402


def test_train_cli_with_holdout(tmp_path, monkeypatch) -> None:
    torch.set_num_threads(1)
    secs = {f"{i}.h5ad": make_section(i, grid=6) for i in range(3)}
    calls: dict[str, list] = {"extract": [], "normalize": []}

    def read_h5ad(path):
        return secs[path.name].adata.copy()

    def extract_patches(adata, *, store, size):
        calls["extract"].append((str(store), size))
        sec = next(s for s in secs.values() if s.adata.obs_names[0] == adata.obs_names[0])
        return SimpleNamespace(patches=sec.patches, spot_ids=list(adata.obs_names))

    def normalize_expression(adata, *, genes, flavor):
        calls["normalize"].append(flavor)
        return adata[:, genes].copy()

    fakes = {
        "read_h5ad": read_h5ad,
        "extract_patches": extract_patches,
        "normalize_expression": normalize_expression,
    }
    monkeypatch.setattr(cli_train, "_need", lambda module, name: fakes[name])
    preset = tmp_path / "tiny.json"
    preset.write_text(
        json.dumps(
            {
                "model": {
                    "backbone": "test_efficientnet",
                    "embed_dim": 16,
                    "n_heads": 2,
                    "head_dim": 8,
                    "sequence_length": 6,
                },
                "train": {"batch_size": 12, "epochs": 5, "patch_size": 24},
            }
        )
    )
    run_dir = tmp_path / "run"
    argv = [
        "train",
        "--h5ad",
        *(str(tmp_path / n) for n in secs),
        "--holdout",
        "S1",
        "--preset",
        str(preset),
        "--run-dir",
        str(run_dir),
        "--epochs",
        "2",
        "--device",
        "cpu",
        "--no-progress",
        "--n-genes",
        "8",
    ]
    assert cli_main.main(argv) == 0
    data = json.loads((run_dir / "data.json").read_text())
    assert data["train"] == ["S0", "S2"] and data["holdout"] == "S1" and len(data["genes"]) == 8
    assert len(calls["extract"]) == 2 and calls["extract"][0][1] == 24
    assert calls["normalize"] == ["default", "default"]
    log = (run_dir / "log.jsonl").read_text().splitlines()
    assert len(log) == 2 and (run_dir / "model.pt").is_file()
    with pytest.raises(SystemExit, match="holdout"):
        cli_main.main(["nope" if a == "S1" else a for a in argv])
