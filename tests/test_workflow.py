"""The fold runner: frozen features computed once per content and reused across folds and
processes with identical results; bad folds fail clearly."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mclstexp.models.features as features_module
from mclstexp.models import load_preset
from mclstexp.models.features import FeatureCache
from mclstexp.workflow import load_dataset, run_fold
from mclstexp.workflow.experiment import tile_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    dataset = load_dataset(
        "synthetic", root=tmp_path_factory.mktemp("syn"), n_sections=3, n_spots=40
    )
    caches = tile_dataset(dataset, tmp_path_factory.mktemp("patches"))
    return dataset, caches


def _fold(tiny, tmp_path, name, test, *, seed=0):
    dataset, caches = tiny
    preset = load_preset("cpu", train__epochs=1, train__patch_size=dataset.patch_size)
    return run_fold(
        dataset,
        caches,
        test_sections=[test],
        preset=preset,
        preset_name="cpu",
        fold_dir=tmp_path / name,
        seed=seed,
        device="cpu",
        k=10,
        baselines=False,
        progress=False,
    )


def _forget_features(tiny, monkeypatch) -> FeatureCache:
    """A fresh process's view: an empty in-memory cache and no copies beside the patches."""
    for cache in tiny[1].values():
        shutil.rmtree(Path(cache.patches.store.root) / cache.key / "features", ignore_errors=True)
    fresh = FeatureCache()
    monkeypatch.setattr(features_module, "DEFAULT_CACHE", fresh)
    return fresh


def test_frozen_features_are_computed_once_per_backbone_and_patches(
    tiny, tmp_path, monkeypatch
) -> None:
    names = tiny[0].section_names
    counts = _forget_features(tiny, monkeypatch).stats
    first = _fold(tiny, tmp_path, "a", names[0])
    assert counts["computed"] == 3  # 2 training sections + the held-out one
    second = _fold(tiny, tmp_path, "b", names[1])  # another fold, same seed: same backbone
    assert counts["computed"] == 3 and counts["memory"] > 0
    _fold(tiny, tmp_path, "c", names[1], seed=1)  # another seed builds another backbone
    assert counts["computed"] == 6
    # a second process finds the copies stored beside the patches
    script = (
        "import sys, torch; from mclstexp.models import MclSTExp, ModelConfig, load_preset; "
        "from mclstexp.models.features import DEFAULT_CACHE, frozen_features; "
        "from mclstexp.pp import open_patch_cache; "
        "torch.manual_seed(0); m = load_preset('cpu').model; "
        "m.n_genes = m.position_rows = m.position_cols = 1; model = MclSTExp(m); "
        "frozen_features(model, [open_patch_cache(p).patches for p in sys.argv[1:]], "
        "device='cpu'); print(DEFAULT_CACHE.stats)"
    )
    stores = [str(Path(c.patches.store.root)) for c in tiny[1].values()]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", script, *stores], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str({"memory": 0, "disk": 3, "computed": 0})
    # features from memory give exactly what freshly computed ones give
    _forget_features(tiny, monkeypatch)
    fresh = _fold(tiny, tmp_path, "fresh", names[1])
    a, b = second.predictions[names[1]], fresh.predictions[names[1]]
    np.testing.assert_array_equal(a.obsm["mclstexp_neighbors"], b.obsm["mclstexp_neighbors"])
    np.testing.assert_array_equal(np.asarray(a.X), np.asarray(b.X))
    assert first.k == 10


def test_fold_without_training_sections_is_refused(tiny, tmp_path) -> None:
    dataset, caches = tiny
    preset = load_preset("cpu", train__epochs=1)
    with pytest.raises(ValueError, match="test_sections"):
        run_fold(
            dataset,
            caches,
            test_sections=dataset.section_names,
            preset=preset,
            preset_name="cpu",
            fold_dir=tmp_path,
            device="cpu",
        )


def test_tiling_shows_progress_only_when_asked(tiny, tmp_path, capsys) -> None:
    dataset, _ = tiny
    capsys.readouterr()
    tile_dataset(dataset, tmp_path / "quiet", progress=False)
    assert capsys.readouterr().err == ""
    tile_dataset(dataset, tmp_path / "shown")
    assert "patch" in capsys.readouterr().err


def test_a_partially_trained_backbone_gets_a_probe_on_its_trained_features(tiny, tmp_path) -> None:
    """With the last stages trained, the probe row reads the backbone's features *after*
    training (front cache + trained back), labelled ``/trained``; the context rows and the
    colour ridge's context choice come with every fold of two or more training sections."""
    from mclstexp.models.stages import FRONT_CACHE, front_features
    from mclstexp.workflow.fold import train_fold
    from mclstexp.workflow.reference_rows import encoder_features

    dataset, caches = tiny
    preset = load_preset(
        "cpu",
        model__trained_stages=1,
        train__freeze_backbone=False,
        train__stage_cache=True,
        train__epochs=1,
        train__patch_size=dataset.patch_size,
    )
    held_out = dataset.section_names[0]
    args = dict(preset=preset, preset_name="e2e", fold_dir=tmp_path / "e2e", device="cpu")
    out = run_fold(dataset, caches, test_sections=[held_out], k=10, progress=False, **args)
    methods = {r["method"] for r in out.records}
    expected_rows = {
        "probe[resnet18/trained]",
        "colour_ridge+context",
        "mclstexp[e2e]+blend+context",
    }
    assert expected_rows <= methods
    assert out.reference_selection["context"] in (0.0, 0.25, 0.5, 0.75)
    # the probe reads the trained back's features (the fold reloaded from its checkpoint)
    fold = train_fold(
        dataset, caches, train_sections=dataset.section_names[1:], progress=False, **args
    )
    enc = fold.model.image_encoder
    expected = front_features(enc, FRONT_CACHE.get(enc, caches[held_out].patches)).numpy()
    np.testing.assert_array_equal(
        encoder_features(fold, dataset, caches, "cpu")[held_out], expected
    )


def test_a_kept_variant_that_waited_is_reloaded_with_the_same_rows(
    tiny, tmp_path, monkeypatch
) -> None:
    """Regression for the peak-RSS fix: a variant waiting while the next one trains drops its
    model; when it is the one kept, the fold reloads it from its folder, and its rows (the
    probe on its encoder's features included) are those of the same preset run alone."""
    import mclstexp.workflow.fold as fold_module
    from mclstexp.models import load_variants

    dataset, caches = tiny
    variants = load_variants("cpu", train__epochs=1, train__patch_size=dataset.patch_size)
    real_choice, real_kept = fold_module.choose_variant, fold_module.kept_model
    waited = []

    def first(outcomes, fold_dir):  # keep the variant that waited, whatever the scores
        best, record = real_choice(outcomes, fold_dir)
        return ("frozen", record) if "frozen" in outcomes else (best, record)

    monkeypatch.setattr(fold_module, "choose_variant", first)

    def kept(trained, folder):
        waited.append(trained.model is None)
        return real_kept(trained, folder)

    monkeypatch.setattr(fold_module, "kept_model", kept)
    args = dict(test_sections=[dataset.section_names[0]], preset_name="cpu", device="cpu", k=10)
    both = run_fold(
        dataset,
        caches,
        preset=variants["frozen"],
        variants=variants,
        fold_dir=tmp_path / "v",
        progress=False,
        **args,
    )
    alone = run_fold(
        dataset,
        caches,
        preset=variants["frozen"],
        fold_dir=tmp_path / "a",
        progress=False,
        **args,
    )
    assert waited == [True, False]
    rows = {(r["method"], r["target"]): r["acg"] for r in both.records}
    expected = {(r["method"], r["target"]): r["acg"] for r in alone.records}
    assert {m for m, _ in rows} >= {"mclstexp[cpu]", "mclstexp[cpu]+blend", "probe[resnet18]"}
    assert rows.keys() == expected.keys()
    for key, value in expected.items():
        assert rows[key] == pytest.approx(value, abs=1e-6), key
