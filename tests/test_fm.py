"""Frozen foundation-model features end to end, with a tiny registry-shaped encoder from a fake,
offline hub: the fm preset (features computed once, probe row, geometry) and ``mclstexp embed``
(resumable after a kill, slides in, dask)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import zarr

import mclstexp
import mclstexp.models.features as features_module
from _fake_hub import TINY_ARGS, plain_tiny, register_tiny, use_hub, write_model
from mclstexp.exceptions import CacheMismatchError
from mclstexp.models.features import FeatureCache
from mclstexp.pp import extract_patches, open_patch_cache
from mclstexp.workflow import load_dataset
from mclstexp.workflow.experiment import run_experiment

pytestmark = pytest.mark.slow


def _fm_preset(folder: Path, backbone: str) -> Path:
    """The bundled fm preset with another registry encoder (named fm.json: its rows say fm)."""
    data = json.loads((resources.files("mclstexp.models") / "presets" / "fm.json").read_text())
    data["model"]["backbone"] = backbone
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fm.json").write_text(json.dumps(data))
    return folder / "fm.json"


def test_fm_preset_end_to_end_computes_features_once(tmp_path, monkeypatch) -> None:
    cache = use_hub(monkeypatch, tmp_path / "hf")
    info, _ = register_tiny(monkeypatch, cache)  # 32 px at 2 um/px, the synthetic slides' scale
    counts = FeatureCache()
    monkeypatch.setattr(features_module, "DEFAULT_CACHE", counts)
    dataset = load_dataset("synthetic", root=tmp_path / "syn", n_sections=3, n_spots=40)
    result = run_experiment(
        dataset,
        out_dir=tmp_path / "run",
        presets=[str(_fm_preset(tmp_path / "presets", info.name))],
        seeds=[0, 1],
        epochs=1,
        k=10,
        device="cpu",
        plots=False,
        progress=False,
        log=lambda *a: None,
    )
    # 3 folds x 2 seeds, one encoder: each section's features were computed once, then reused
    assert counts.stats["computed"] == 3 and counts.stats["memory"] > 10
    methods = {r["method"] for r in result.records}
    assert {"mclstexp[fm]", "colour_ridge", f"probe[{info.name}]"} <= methods
    assert f"probe[{info.name}]" in result.table
    probe = [r for r in result.records if r["method"] == f"probe[{info.name}]"]
    assert len(probe) == 3 * 2 * 2 and all(np.isfinite(r["acg"]) for r in probe)
    # the patches follow the encoder's geometry, and the checkpoint records it for predict
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["patch_geometry"] == {"fm": {"patch_size": 32, "mpp": 2.0}}
    first = dataset.section_names[0]
    group = tmp_path / "run" / "patches" / "32px_2mpp" / f"{first}.zarr"
    patches = open_patch_cache(group)
    assert patches.patches.shape[1:] == (32, 32, 3) and patches.attrs["mpp"] == 2.0
    copies = [p for p in (group / first / "features").iterdir() if p.is_dir()]
    assert len(copies) == 1  # one encoder, one copy
    # the checkpoints do not copy the frozen published backbone; loading reads it again
    from mclstexp.exceptions import WeightsError
    from mclstexp.train.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint

    fold = tmp_path / "run" / "fm" / "seed0" / first
    data = read_checkpoint(fold / "model.pt")
    assert data["backbone"]["weights"] == "pretrained"
    assert not any(k.startswith("image_encoder.backbone.") for k in data["model"])
    model, _ = load_checkpoint(fold / "model.pt")
    assert model.image_encoder.backbone.num_features == info.dim
    data["backbone"]["sha256"] = "0" * 64  # as if the hub's weights had changed since
    save_checkpoint(tmp_path / "other.pt", {k: v for k, v in data.items() if k != "format"})
    with pytest.raises(WeightsError, match="changed"):
        load_checkpoint(tmp_path / "other.pt")
    # another process finds the features on disk (and resumes the finished fold's checkpoint,
    # whose backbone it reloads and checks)
    fresh = FeatureCache()
    monkeypatch.setattr(features_module, "DEFAULT_CACHE", fresh)
    run_experiment(
        dataset,
        out_dir=tmp_path / "run",
        presets=[str(_fm_preset(tmp_path / "presets", info.name))],
        holdout=[first],
        epochs=1,
        k=10,
        device="cpu",
        plots=False,
        progress=False,
        log=lambda *a: None,
    )
    assert fresh.stats["computed"] == 0 and fresh.stats["disk"] == 3
    # reusing that cache at another geometry is refused
    with pytest.raises(CacheMismatchError):
        extract_patches(dataset.section(first), store=group, size=48, mpp=2.0, progress=False)


_WRAPPER = """
import sys, time
from mclstexp.models import features as F
F._ROWS_PER_BLOCK = 8  # small blocks: several writes to kill between
SLOW = len(sys.argv) > 1 and sys.argv[1] == "slow"
original = F.FeatureCache.features
def features(self, model, patches, **kw):
    from mclstexp.models.runtime import backbone_features
    def compute(*a, **k):
        if SLOW:
            time.sleep(0.4)
        return backbone_features(*a, **k)
    kw.setdefault("compute", compute)
    return original(self, model, patches, **kw)
F.FeatureCache.features = features
if __name__ == "__main__":  # dask's worker processes import this module again
    from mclstexp.cli.main import main
    sys.exit(main(sys.argv[2:]))
"""


def _embed(tmp_path: Path, mode: str, *args: str) -> subprocess.Popen:
    script = tmp_path / "embed_wrapper.py"
    script.write_text(_WRAPPER)
    # the mclstexp this test imported (the source tree, or the installed package in CI)
    here = str(Path(mclstexp.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": here, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(script), mode, "embed", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _stored(store: Path) -> tuple[dict, np.ndarray]:
    (group,) = [p for p in store.iterdir() if p.is_dir()]
    (arr,) = [p for p in (group / "features").iterdir() if p.is_dir()]
    z = zarr.open_array(str(arr), mode="r")
    return dict(z.attrs), np.asarray(z[:])


def test_embed_resumes_after_a_kill_with_identical_features(tmp_path, monkeypatch) -> None:
    cache = use_hub(monkeypatch, tmp_path / "hf")
    write_model(cache, "fake/tiny", plain_tiny(), architecture="test_vit", model_args=TINY_ARGS)
    dataset = load_dataset("synthetic", root=tmp_path / "syn", n_sections=2, n_spots=40)
    adata = dataset.sections[0]
    killed, clean = tmp_path / "killed.zarr", tmp_path / "clean.zarr"
    extract_patches(adata, store=killed, size=32, progress=False)
    shutil.copytree(killed, clean)
    args = ["--encoder", "hf-hub:fake/tiny", "--device", "cpu", "--batch-size", "4", "--quiet"]
    proc = _embed(tmp_path, "slow", str(killed), *args)
    deadline = time.monotonic() + 120
    features = killed / dataset.section_names[0] / "features"
    while time.monotonic() < deadline and proc.poll() is None:
        arrays = [p for p in features.iterdir() if p.is_dir()] if features.is_dir() else []
        if arrays and (arrays[0] / "zarr.json").is_file():
            try:
                done = zarr.open_array(str(arrays[0]), mode="r").attrs.get("rows_done", 0)
            except Exception:  # caught mid-write: look again
                done = 0
            if done >= 8:
                break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[0]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    attrs, _ = _stored(killed)
    assert attrs["complete"] is False and 8 <= attrs["rows_done"] < 40
    resumed = _embed(tmp_path, "fast", str(killed), *args)
    out = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, out
    assert "40 patches x 64 features computed" in out
    reference = _embed(tmp_path, "fast", str(clean), *args)
    assert reference.wait(timeout=300) == 0
    attrs, got = _stored(killed)
    _, want = _stored(clean)
    assert attrs["complete"] is True and attrs["rows_done"] == 40
    np.testing.assert_array_equal(got, want)
    again = _embed(tmp_path, "fast", str(killed), *args)  # complete: found, not recomputed
    assert "found on disk" in again.communicate(timeout=300)[0]


def test_embed_tiles_slides_first_one_task_each_on_dask(tmp_path, monkeypatch) -> None:
    pytest.importorskip("dask.distributed")
    cache = use_hub(monkeypatch, tmp_path / "hf")
    write_model(cache, "fake/tiny", plain_tiny(), architecture="test_vit", model_args=TINY_ARGS)
    dataset = load_dataset("synthetic", root=tmp_path / "syn", n_sections=2, n_spots=30)
    slides, spots = [], []
    for adata in dataset.sections:
        slides.append(adata.uns["mclstexp"]["slide_path"])
        xy = np.asarray(adata.obsm["spatial"])
        csv = tmp_path / f"{adata.uns['mclstexp']['section']}.csv"
        csv.write_text(
            "id,x,y\n"
            + "".join(f"{i},{x},{y}\n" for i, (x, y) in zip(adata.obs_names, xy, strict=True))
        )
        spots.append(str(csv))
    store = tmp_path / "out.zarr"
    proc = _embed(
        tmp_path,
        "fast",
        *slides,
        "--spots",
        *spots,
        "--out",
        str(store),
        "--encoder",
        "hf-hub:fake/tiny",
        "--patch-size",
        "32",
        "--device",
        "cpu",
        "--dask",
        "local",
        "--dask-workers",
        "2",
        "--quiet",
    )
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out
    assert "2 slide(s), 60 patches" in out
    for slide in slides:
        key = Path(slide).stem
        group = open_patch_cache(store, key)
        (arr,) = [p for p in (store / key / "features").iterdir() if p.is_dir()]
        z = zarr.open_array(str(arr), mode="r")
        assert z.shape == (30, 64) and z.attrs["complete"] is True and len(group) == 30


def test_the_embed_encoder_has_the_key_training_computes_for_every_model_setting(tmp_path) -> None:
    """Regression: ``mclstexp embed`` built its encoder from the preset by hand and left out
    ``input_size``, so a preset that reduces its patches got features under a key training never
    looks up (they were computed again)."""
    import torch

    from mclstexp.models import MclSTExp, build_backbone, load_preset
    from mclstexp.models.features import feature_key
    from mclstexp.workflow.embed import frozen_encoder

    weights = tmp_path / "w.pt"
    torch.save(build_backbone("test_resnet").state_dict(), weights)
    model = {"backbone": "test_resnet", "weights": str(weights), "input_size": 16}
    preset = tmp_path / "reduced.json"
    preset.write_text(
        json.dumps({"description": "t", "model": model, "train": {"freeze_backbone": True}})
    )
    cfg = load_preset(str(preset))[0]
    cfg.n_genes, cfg.position_rows, cfg.position_cols = 2, 2, 2
    patches = np.zeros((2, 32, 32, 3), np.uint8)
    embed_key = feature_key(frozen_encoder(preset=str(preset)), patches)
    assert embed_key.parts.get("input_size") == 16
    assert embed_key.digest == feature_key(MclSTExp(cfg), patches).digest
