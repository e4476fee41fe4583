"""Frozen-encoder features (models/features.py): one cache keyed by a content hash of the
backbone's weights, the feature configuration and the patches; in memory and beside a patch
cache on disk."""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
zarr = pytest.importorskip("zarr")

from _cache_fixtures import mclstexp_cache  # noqa: E402
from mclstexp.models import MclSTExp, ModelConfig  # noqa: E402
from mclstexp.models.features import FeatureCache, feature_key  # noqa: E402
from mclstexp.models.runtime import backbone_features  # noqa: E402

torch.set_num_threads(1)


def model(seed: int = 0, **kw: object) -> MclSTExp:
    torch.manual_seed(seed)
    cfg = ModelConfig(
        backbone="test_resnet", n_genes=3, position_rows=4, position_cols=4, embed_dim=8, **kw
    )  # type: ignore[arg-type]
    return MclSTExp(cfg).eval()


def patches(n: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)


def patch_cache(tmp_path, x: np.ndarray, *, complete: bool = True, name: str = "c.zarr"):
    """A complete patch cache group as extract_patches writes it (attributes, chunk record)."""
    return mclstexp_cache(tmp_path / name, x, attrs={"spots": "xyz", "complete": complete})


def test_the_key_follows_weights_configuration_and_patches() -> None:
    m, x = model(), patches()
    key = feature_key(m, x)
    assert key == feature_key(model(), x.copy())  # same seed: same weights, same bytes
    assert key != feature_key(model(seed=1), x)  # other weights
    assert key != feature_key(model(feature_views="dihedral"), x)  # other configuration
    assert key != feature_key(m, patches(seed=1))  # other patches
    bumped = model()
    with torch.no_grad():
        next(bumped.image_encoder.backbone.parameters()).view(-1)[0] += 1e-3
    assert key != feature_key(bumped, x)  # one weight changed (a parameter-sum "fingerprint"
    # of the first and last tensors would miss a change in between; the hash does not)
    parts = key.parts
    assert parts["backbone"] == "test_resnet" and parts["precision"] == "float32"
    assert parts["patches"]["kind"] == "array" and len(parts["backbone_sha256"]) == 64


def test_memory_cache_computes_once_and_is_bounded() -> None:
    m = model()
    cache = FeatureCache(max_items=2)
    xs = [patches(seed=i) for i in range(3)]
    first = cache.features(m, xs, device="cpu")
    assert cache.stats == {"memory": 0, "disk": 0, "computed": 3}
    np.testing.assert_array_equal(first[2], backbone_features(m, xs[2], device="cpu"))
    again = cache.features(m, xs[1:], device="cpu")  # the two most recent are kept
    assert cache.stats["computed"] == 3 and again[0] is first[1]
    cache.features(m, xs[:1], device="cpu")  # evicted by the bound: computed again
    assert cache.stats["computed"] == 4


def test_features_are_stored_beside_a_patch_cache_and_reused(tmp_path) -> None:
    x = patches()
    arr = patch_cache(tmp_path, x)
    m = model()
    (feats,) = FeatureCache().features(m, [arr], device="cpu")
    key = feature_key(m, arr)
    assert key.parts["patches"]["kind"] == "patch-cache"
    stored = zarr.open_array(str(tmp_path / "c.zarr" / "A1" / "features" / key.digest), mode="r")
    assert stored.attrs["complete"] is True and stored.attrs["key"] == key.parts
    np.testing.assert_array_equal(np.asarray(stored), feats)
    fresh = FeatureCache()  # what another process starts with
    (again,) = fresh.features(m, [arr], device="cpu")
    assert fresh.stats == {"memory": 0, "disk": 1, "computed": 0}
    np.testing.assert_array_equal(again, feats)
    # the patch cache itself still opens as one slide
    from mclstexp.pp import open_patch_cache

    assert open_patch_cache(tmp_path / "c.zarr").key == "A1"


def test_an_interrupted_copy_is_recomputed(tmp_path) -> None:
    arr = patch_cache(tmp_path, patches())
    m = model()
    FeatureCache().features(m, [arr], device="cpu")
    stored = tmp_path / "c.zarr" / "A1" / "features" / feature_key(m, arr).digest
    z = zarr.open_array(str(stored), mode="a")
    z.attrs["complete"] = False  # as if killed before the copy was marked whole
    cache = FeatureCache()
    cache.features(m, [arr], device="cpu")
    assert cache.stats["computed"] == 1 and zarr.open_array(str(stored)).attrs["complete"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_patch_cache_still_gives_features(tmp_path) -> None:
    arr = patch_cache(tmp_path, patches())
    group = tmp_path / "c.zarr" / "A1"
    group.chmod(0o555)
    try:
        cache = FeatureCache()
        (feats,) = cache.features(model(), [arr], device="cpu")
        assert feats.shape[0] == 5 and not (group / "features").exists()
    finally:
        group.chmod(0o755)


def test_an_incomplete_patch_cache_is_keyed_by_its_bytes(tmp_path) -> None:
    x = patches()
    arr = patch_cache(tmp_path, x, complete=False)
    key = feature_key(model(), arr)
    assert key.parts["patches"]["kind"] == "array" and key == feature_key(model(), x)


def test_an_interrupted_extraction_resumes_where_it_stopped(tmp_path, monkeypatch) -> None:
    from mclstexp.models import features as F

    monkeypatch.setattr(F, "_ROWS_PER_BLOCK", 8)  # blocks: one batch, then chunks of 8 rows
    x = patches(n=40)
    arr = patch_cache(tmp_path, x)
    m = model()
    want = backbone_features(m, x, device="cpu", batch_size=4)
    rows: list[int] = []

    def dies_after_three_blocks(model, p, **kw):
        if len(rows) == 3:
            raise KeyboardInterrupt  # a kill, as far as the copy on disk can tell
        rows.append(p.shape[0])
        return backbone_features(model, p, **kw)

    with pytest.raises(KeyboardInterrupt):
        FeatureCache().features(
            m, [arr], device="cpu", batch_size=4, compute=dies_after_three_blocks
        )
    stored = tmp_path / "c.zarr" / "A1" / "features" / feature_key(m, arr).digest
    attrs = zarr.open_array(str(stored)).attrs
    assert rows == [4, 4, 8] and attrs["rows_done"] == 16 and attrs["complete"] is False
    rows.clear()

    def counting(model, p, **kw):
        rows.append(p.shape[0])
        return backbone_features(model, p, **kw)

    cache = FeatureCache()
    (feats,) = cache.features(m, [arr], device="cpu", batch_size=4, compute=counting)
    assert sum(rows) == 40 - 16  # only the rows not written before
    np.testing.assert_array_equal(feats, want)  # the same as one uninterrupted extraction
    assert zarr.open_array(str(stored)).attrs["complete"] is True


def test_an_image_encoder_alone_has_the_key_of_its_model() -> None:
    m, x = model(), patches()
    assert feature_key(m.image_encoder, x) == feature_key(m, x)
    from mclstexp.models.features import encoder_identity

    assert encoder_identity("test_resnet") is None and "encoder" not in feature_key(m, x).parts
    assert encoder_identity("uni")["architecture"] == "vit_large_patch16_224"


def test_a_long_extraction_prints_an_estimate_first(tmp_path, monkeypatch, capsys) -> None:
    from mclstexp.models import features as F

    monkeypatch.setattr(F, "_ESTIMATE_AFTER_S", 0.0)  # any extraction counts as long
    arr = patch_cache(tmp_path, patches(n=12))
    FeatureCache().features(model(), [arr], device="cpu", batch_size=4, progress=True)
    err = capsys.readouterr().err
    assert "frozen features of test_resnet on cpu: about" in err and "8 more patches" in err
