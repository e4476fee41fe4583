"""The fold runner: cached frozen features give the uncached result; bad folds fail clearly."""

from __future__ import annotations

import numpy as np
import pytest

from mclstexp.models import load_preset
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


def _fold(tiny, tmp_path, name, test, cache):
    dataset, caches = tiny
    preset = load_preset("cpu", train__epochs=1, train__patch_size=dataset.patch_size)
    return run_fold(
        dataset,
        caches,
        test_sections=[test],
        preset=preset,
        preset_name="cpu",
        fold_dir=tmp_path / name,
        device="cpu",
        k=10,
        baselines=False,
        progress=False,
        feature_cache=cache,
    )


def test_feature_cache_reproduces_uncached_fold(tiny, tmp_path) -> None:
    names = tiny[0].section_names
    cache: dict = {}
    _fold(tiny, tmp_path, "warm", names[0], cache)  # fills the cache
    assert set(cache["backbone"]) == set(names)
    cached = _fold(tiny, tmp_path, "cached", names[1], cache)
    fresh = _fold(tiny, tmp_path, "fresh", names[1], None)
    a, b = cached.predictions[names[1]], fresh.predictions[names[1]]
    np.testing.assert_array_equal(a.obsm["mclstexp_neighbors"], b.obsm["mclstexp_neighbors"])
    np.testing.assert_allclose(np.asarray(a.X), np.asarray(b.X), rtol=1e-6)


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
