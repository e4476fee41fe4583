"""Training: sections, the loop (learning, frozen mode, exact resume, augmentation place and
loader workers), checkpoints with weights_only=True."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from _model_fixtures import make_section, make_sections, pcc_per_gene, topk_predict  # noqa: E402
from mclstexp.models import MclSTExp, ModelConfig, TrainConfig  # noqa: E402
from mclstexp.models.features import DEFAULT_CACHE  # noqa: E402
from mclstexp.tl.embed import embed_patches, embed_spots  # noqa: E402
from mclstexp.train import TrainingSection, load_checkpoint, train_model  # noqa: E402

torch.set_num_threads(1)  # the test machine is shared: 1 thread is fastest

BACKBONE = "test_efficientnet"


def tiny_model(**kw: object) -> ModelConfig:
    base = dict(backbone=BACKBONE, embed_dim=32, sequence_length=10, n_heads=2, head_dim=16)
    base.update(kw)
    return ModelConfig(**base)  # type: ignore[arg-type]


def tiny_train(**kw: object) -> TrainConfig:
    base = dict(epochs=6, batch_size=40, lr=3e-3, weight_decay=0.0, optimizer="adamw")
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def sections() -> list[TrainingSection]:
    return make_sections(3)


def test_zarr_backed_section_reads_like_numpy(tmp_path) -> None:
    zarr = pytest.importorskip("zarr")
    sec = make_section(0, grid=6)
    z = zarr.open_array(
        tmp_path / "p.zarr",
        mode="w",
        shape=sec.patches.shape,
        chunks=(4, *sec.patches.shape[1:]),
        dtype="uint8",
    )
    z[:] = sec.patches
    lazy = TrainingSection(sec.adata, z, in_memory=False)
    assert lazy.patches is z
    idx = np.array([5, 1, 30, 1, 2, 3])
    assert np.array_equal(lazy.read_patches(idx), sec.patches[idx])
    assert np.array_equal(lazy.read_patches(np.arange(3, 9)), sec.patches[3:9])
    loaded = TrainingSection(sec.adata, z)  # small enough: read into RAM once, when needed
    assert loaded.patches is z  # nothing read yet: feature and front modes never read it
    loaded.hold_in_memory()
    assert isinstance(loaded.patches, np.ndarray) and loaded.source is z
    assert np.array_equal(loaded.read_patches(idx), sec.patches[idx])
    loaded.release_memory()
    assert loaded.patches is z
    assert np.array_equal(loaded.read_patches(idx), sec.patches[idx])
    with pytest.raises(ValueError, match="patches must be"):
        TrainingSection(sec.adata, sec.patches[:-1])
    bad = sec.adata.copy()
    bad.X[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        TrainingSection(bad, sec.patches)


# ----------------------------------------------------------------------------- learning


def _heldout_pcc(model: MclSTExp, train: list[TrainingSection], test: TrainingSection) -> float:
    keys = np.concatenate([embed_spots(model, s) for s in train])
    values = np.concatenate([s.expression for s in train])
    query = embed_patches(model, test.patches)
    return float(pcc_per_gene(topk_predict(query, keys, values, 10), test.expression).mean())


def test_training_lowers_loss_and_beats_an_untrained_model(sections, tmp_path) -> None:
    result = train_model(
        sections[:2], (tiny_model(), tiny_train()), run_dir=tmp_path, progress=False
    )
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 6 and losses[-1] < 0.7 * losses[0]
    torch.manual_seed(0)
    untrained = MclSTExp(result.model_config)
    trained_pcc = _heldout_pcc(result.model, sections[:2], sections[2])
    untrained_pcc = _heldout_pcc(untrained, sections[:2], sections[2])
    assert trained_pcc > 0.35 and trained_pcc > untrained_pcc + 0.25, (trained_pcc, untrained_pcc)
    # log.jsonl has one line per epoch, the final model.pt loads with weights_only=True
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == list(range(1, 7)) and log[-1]["loss"] == losses[-1]
    assert all(e["spots_per_s"] > 0 for e in log)
    raw = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert raw["genes"] == result.genes and raw["epoch"] == 6 and "numpy" in raw["rng"]
    model, meta = load_checkpoint(tmp_path)  # run dir -> model.pt
    assert meta["package_version"] and meta["normalization"]["expression"] == "default"
    assert meta["model_config"]["n_genes"] == 12 and model.genes == result.genes
    q1 = embed_patches(model, sections[2].patches)
    q2 = embed_patches(result.model, sections[2].patches)
    np.testing.assert_allclose(q1, q2, atol=1e-5)
    np.testing.assert_allclose(
        embed_spots(model, sections[0]), embed_spots(result.model, sections[0].adata), atol=1e-5
    )


def test_frozen_encoder_mode_trains_heads_only_and_caches_features(sections, tmp_path) -> None:
    cfg = (tiny_model(), tiny_train(epochs=3, freeze_backbone=True))
    result = train_model(sections[:2], cfg, run_dir=tmp_path, progress=False)
    torch.manual_seed(0)
    init = MclSTExp(result.model_config)
    trained = result.model.state_dict()
    for k, v in init.state_dict().items():
        if k.startswith("image_encoder.backbone."):
            assert torch.equal(v, trained[k]), k  # frozen (BN statistics too)
    assert not torch.equal(init.spot_encoder.pos_x, result.model.spot_encoder.pos_x)
    assert not torch.equal(
        init.image_encoder.head.projection.weight, result.model.image_encoder.head.projection.weight
    )
    feats, feats1 = result.frozen_features
    assert feats.shape == (sections[0].n_obs, result.model.image_encoder.num_features)
    # the head sees features standardised with the training spots' mean and sd (saved as buffers)
    both = np.concatenate([feats, feats1]).astype(np.float64)
    enc = result.model.image_encoder
    np.testing.assert_allclose(enc.feature_shift.numpy(), both.mean(0), rtol=1e-5, atol=1e-6)
    sd = both.std(0)
    varying = sd > 1e-6 * sd.max()
    np.testing.assert_allclose(enc.feature_scale.numpy()[varying], sd[varying], rtol=1e-5)
    assert init.image_encoder.feature_scale.eq(1).all()  # identity until frozen training sets it
    # embeddings from cached features == embeddings from patches (eval mode, no augmentation)
    np.testing.assert_allclose(
        embed_patches(result.model, None, frozen_features=feats),
        embed_patches(result.model, sections[0].patches),
        atol=1e-4,
    )
    # the features are cached by content: the same run again computes none
    computed = DEFAULT_CACHE.stats["computed"]
    again = train_model(sections[:2], cfg, run_dir=tmp_path, progress=False, resume=False)
    assert DEFAULT_CACHE.stats["computed"] == computed
    assert again.frozen_features[0] is feats
    # other feature views are other features: computed, not reused
    dihedral = (tiny_model(feature_views="dihedral"), cfg[1])
    other = train_model(sections[:2], dihedral, run_dir=tmp_path / "d", progress=False)
    assert DEFAULT_CACHE.stats["computed"] == computed + 2
    assert not np.array_equal(other.frozen_features[0], feats)
    assert not (tmp_path / "frozen_features").exists()  # nothing in the run directory


def test_only_image_mode_holds_the_patches_in_ram(tmp_path) -> None:
    """Frozen features and cached fronts never read patches in the loader: a patch cache stays
    on disk (its RAM copy cost ~100 MB of peak RSS per her2st fold); image mode reads it once."""
    zarr = pytest.importorskip("zarr")
    secs = []
    for k in range(2):
        sec = make_section(k, grid=5)
        z = zarr.open_array(
            tmp_path / f"p{k}.zarr",
            mode="w",
            shape=sec.patches.shape,
            chunks=(8, *sec.patches.shape[1:]),
            dtype="uint8",
        )
        z[:] = sec.patches
        secs.append(TrainingSection(sec.adata, z))
    frozen = (tiny_model(), tiny_train(epochs=1, freeze_backbone=True))
    train_model(secs, frozen, run_dir=tmp_path / "f", progress=False)
    assert all(s.patches is s.source for s in secs)
    staged = (
        tiny_model(backbone="test_resnet", trained_stages=1),
        tiny_train(epochs=1, freeze_backbone=False, stage_cache=True),
    )
    train_model(secs, staged, run_dir=tmp_path / "s", progress=False)
    assert all(s.patches is s.source for s in secs)
    train_model(secs, (tiny_model(), tiny_train(epochs=1)), run_dir=tmp_path / "i", progress=False)
    assert all(isinstance(s.patches, np.ndarray) for s in secs)


@pytest.mark.parametrize("sequence", ["neighbourhood", "batch"])
def test_kill_and_resume_equals_uninterrupted(sequence, tmp_path) -> None:
    secs = [make_section(0, grid=6), make_section(1, grid=6)]
    cfg = (tiny_model(sequence=sequence, sequence_length=6), tiny_train(epochs=4, batch_size=24))
    full = train_model(secs, cfg, run_dir=tmp_path / "full", progress=False, seed=5)

    class Killed(Exception):
        pass

    def kill_after_two(epoch: int, metrics: dict) -> None:
        if epoch == 2:
            raise Killed

    with pytest.raises(Killed):
        train_model(
            secs, cfg, run_dir=tmp_path / "cut", progress=False, seed=5, on_epoch_end=kill_after_two
        )
    assert json.loads((tmp_path / "cut" / "log.jsonl").read_text().splitlines()[-1])["epoch"] == 2
    resumed = train_model(secs, cfg, run_dir=tmp_path / "cut", progress=False, seed=5)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # a different configuration refuses to resume
    other = (tiny_model(sequence=sequence, sequence_length=6, embed_dim=16), cfg[1])
    with pytest.raises(ValueError, match="different configuration"):
        train_model(secs, other, run_dir=tmp_path / "cut", progress=False)


def test_augmentation_place_and_loader_workers_do_not_change_training(tmp_path) -> None:
    secs = [make_section(0, grid=6), make_section(1, grid=6)]
    m = tiny_model(sequence_length=6)
    states = []
    for where, workers in (("loader", 0), ("device", 0), ("loader", 2)):
        t = tiny_train(epochs=2, batch_size=24, augment_on=where, num_workers=workers)
        r = train_model(secs, (m, t), run_dir=tmp_path / f"{where}{workers}", progress=False)
        states.append(r.model.state_dict())
    for other in states[1:]:
        for k in states[0]:
            assert torch.equal(states[0][k], other[k]), k


def test_a_checkpoint_whose_tensors_do_not_fit_its_config_is_named(tmp_path) -> None:
    """A tensor of the wrong shape (an edited or mixed-up model.pt): a ValueError naming the file,
    which the CLI reports in one line, not torch's RuntimeError traceback."""
    import dataclasses

    from mclstexp.train.checkpoint import save_checkpoint

    cfg = tiny_model(n_genes=12, position_rows=64, position_cols=64)
    state = MclSTExp(cfg).state_dict()
    name = next(k for k, v in state.items() if v.ndim == 2)
    state[name] = torch.zeros(3, 3)
    meta = {"model": state, "model_config": dataclasses.asdict(cfg), "genes": list("abcdefghijkl")}
    path = save_checkpoint(tmp_path / "model.pt", meta)
    with pytest.raises(ValueError, match=r"model\.pt.*do not fit") as info:
        load_checkpoint(path)
    assert name in str(info.value)
