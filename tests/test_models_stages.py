"""Partially trained backbones: the frozen front, its cached outputs, reduced input size."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from _model_fixtures import make_sections
from mclstexp.models import MclSTExp, ModelConfig
from mclstexp.models.image_encoder import ImageEncoder, build_backbone
from mclstexp.models.inputs import downscale_patches
from mclstexp.models.stages import (
    FrontCache,
    FrontOutput,
    StagedBackbone,
    front_features,
    front_outputs,
    stage_segments,
)
from mclstexp.tl.embed import embed_patches


@pytest.mark.parametrize("pooling", ["global", "multiscale"])
def test_front_then_back_is_the_backbone(pooling) -> None:
    torch.manual_seed(0)
    backbone = build_backbone("test_resnet", pooling=pooling).eval()
    x = torch.rand(3, 3, 32, 32)
    full = backbone(x)
    n = len(stage_segments(backbone))
    for k in range(1, n + 1):
        staged = StagedBackbone(backbone, k, multiscale=pooling == "multiscale")
        front = staged.front(x)
        # the front's map is rounded to float16 (what a cache stores): equal up to that rounding
        assert torch.equal(front.activations, front.activations.half().float())
        torch.testing.assert_close(staged.back(front), full, rtol=2e-3, atol=2e-3)
    with pytest.raises(ValueError, match="trained_stages"):
        StagedBackbone(backbone, n + 1, multiscale=False)


def test_only_the_back_trains_and_the_front_stays_in_eval_mode() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(
        backbone="test_resnet",
        n_genes=4,
        position_rows=4,
        position_cols=4,
        embed_dim=8,
        pooling="multiscale",
        trained_stages=1,
    )
    model = MclSTExp(cfg).train()
    enc = model.image_encoder
    front = {id(p) for m in enc.front_modules() for p in m.parameters()}
    assert front and all(not p.requires_grad for m in enc.front_modules() for p in m.parameters())
    assert all(not m.training for m in enc.front_modules())
    assert enc.backbone.model.layer4.training  # the trained stage
    img = torch.randint(0, 255, (4, 32, 32, 3), dtype=torch.uint8)
    a, b, _ = model(img, torch.rand(4, 4), torch.zeros(4, 2, dtype=torch.long))
    (a * b).sum().backward()
    grads = {id(p): p.grad for p in model.parameters()}
    assert all(grads[i] is None for i in front)
    assert enc.backbone.model.layer4[0].conv1.weight.grad is not None


def test_cached_fronts_give_the_embeddings_of_the_full_path() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(
        backbone="test_resnet",
        n_genes=4,
        position_rows=4,
        position_cols=4,
        embed_dim=8,
        pooling="multiscale",
        feature_views="dihedral",
        trained_stages=2,
        input_size=16,
    )
    model = MclSTExp(cfg).eval()
    patches = np.random.default_rng(0).integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)
    fronts = front_outputs(model.image_encoder, patches, batch_size=2)
    assert fronts.activations.shape[:2] == (8, 5) and fronts.activations.dtype == torch.float16
    full = embed_patches(model, patches, device="cpu", batch_size=3)
    cached = embed_patches(model, None, device="cpu", fronts=fronts)
    np.testing.assert_allclose(cached, full, rtol=1e-4, atol=1e-4)
    # the reduced input: 32 px patches are seen as their 16 px block means
    small = downscale_patches(patches, 16)
    np.testing.assert_allclose(embed_patches(model, small, device="cpu"), full, atol=1e-6)
    feats = front_features(model.image_encoder, fronts)
    assert feats.shape == (5, model.image_encoder.num_features)


def test_downscale_is_the_rounded_block_mean_and_refuses_bad_sizes() -> None:
    x = np.random.default_rng(1).integers(0, 256, (2, 6, 6, 3), dtype=np.uint8)
    want = np.floor(x.reshape(2, 2, 3, 2, 3, 3).astype(float).mean((2, 4)) + 0.5)
    np.testing.assert_array_equal(downscale_patches(x, 2), want.astype(np.uint8))
    with pytest.raises(ValueError, match="multiple"):
        downscale_patches(x, 4)
    with pytest.raises(ValueError, match="uint8"):
        downscale_patches(x.astype(np.float32), 2)


def test_front_cache_keys_on_front_weights_and_patches() -> None:
    torch.manual_seed(0)
    enc = ImageEncoder("test_resnet", embed_dim=4, trained_stages=1)
    cache = FrontCache()
    x = np.zeros((2, 32, 32, 3), np.uint8)
    first = cache.get(enc, x)
    # training the back does not change the key; changing the front or the patches does
    with torch.no_grad():
        enc.backbone.layer4[0].conv1.weight.add_(1.0)
    assert cache.get(enc, x) is first
    assert cache.get(enc, x + 1) is not first
    with torch.no_grad():
        next(enc.front_modules()[0].parameters()).add_(1.0)
    assert cache.get(enc, x) is not first
    assert cache.stats == {"hits": 1, "computed": 3}
    assert isinstance(first, FrontOutput)


def test_stage_cache_training_draws_views_and_leaves_the_front_alone(tmp_path) -> None:
    from mclstexp.models import load_preset
    from mclstexp.train import train_model

    sections = make_sections(3, grid=6, patch=32)
    model_cfg, train_cfg = load_preset("cpu")
    model_cfg = dataclasses.replace(
        model_cfg,
        backbone="test_resnet",
        trained_stages=1,
        input_size=16,
        sequence_length=4,
    )
    train_cfg = dataclasses.replace(
        train_cfg, freeze_backbone=False, stage_cache=True, epochs=3, batch_size=16
    )
    torch.manual_seed(0)
    result = train_model(
        sections, (model_cfg, train_cfg), run_dir=tmp_path / "r", device="cpu", progress=False
    )
    model = result.model
    torch.manual_seed(0)
    fresh = MclSTExp(result.model_config)  # the same seed-0 initialisation as the run's
    for mine, init in zip(
        model.image_encoder.front_modules(), fresh.image_encoder.front_modules(), strict=True
    ):
        for p, q in zip(mine.parameters(), init.parameters(), strict=True):
            torch.testing.assert_close(p, q)
    layer4 = model.image_encoder.backbone.model.layer4[0].conv1.weight
    assert not torch.equal(layer4, fresh.image_encoder.backbone.model.layer4[0].conv1.weight)
    assert len(result.history) == 3 and all(np.isfinite(h["loss"]) for h in result.history)
    with pytest.raises(ValueError, match="stage_cache"):
        train_model(
            sections,
            (dataclasses.replace(model_cfg, trained_stages=0), train_cfg),
            run_dir=tmp_path / "bad",
            device="cpu",
            progress=False,
        )


def test_stage_cache_batches_gather_each_sections_fronts_without_a_joined_copy() -> None:
    """The loader keeps the front outputs per section (the front cache already holds them; a
    joined copy cost ~300 MB on her2st at 112 px with two trained stages). Its batches equal
    the gather from the joined tensors, the oracle, view draw for view draw."""
    from mclstexp.train.loader import BatchDataset

    sections = make_sections(3)
    rng = np.random.default_rng(0)
    fronts = [
        FrontOutput(
            torch.from_numpy(rng.normal(size=(8, s.n_obs, 3, 2, 2))).to(torch.float16),
            torch.from_numpy(rng.normal(size=(8, s.n_obs, 5)).astype(np.float32)),
        )
        for s in sections
    ]
    ds = BatchDataset(sections, augment=False, features=None, fronts=fronts)
    joined_acts = torch.cat([f.activations for f in fronts], 1)
    joined_means = torch.cat([f.means for f in fronts], 1)
    n = sum(s.n_obs for s in sections)
    for seed in range(3):
        ids = rng.permutation(n)[:7]
        batch = ds[(seed, [ids[:4], ids[4:]])]
        views = torch.randint(0, 8, (7,), generator=torch.Generator().manual_seed(seed))
        rows = torch.from_numpy(ids)
        assert batch["images"].dtype == torch.float32
        torch.testing.assert_close(
            batch["images"], joined_acts[views, rows].float(), rtol=0, atol=0
        )
        torch.testing.assert_close(batch["front_means"], joined_means[views, rows], rtol=0, atol=0)
    assert all(f.activations is g.activations for f, g in zip(ds.fronts, fronts, strict=True))
