"""The model (method.md §3): shapes, the loss against hand-computed values, what a spot's
embedding depends on, the image encoder's weights/backbone handling, presets."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mclstexp.models import (  # noqa: E402
    MclSTExp,
    ModelConfig,
    ProjectionHead,
    SpotEncoder,
    TrainConfig,
    clip_loss,
    load_preset,
    soft_target_loss,
)
from mclstexp.models.config import list_presets  # noqa: E402
from mclstexp.models.image_encoder import ImageEncoder, build_backbone  # noqa: E402

torch.set_num_threads(1)  # the test machine is shared: 1 thread is fastest

G = 12


def small_config(**kw: object) -> ModelConfig:
    base = dict(
        backbone="test_efficientnet",
        n_genes=G,
        position_rows=16,
        position_cols=16,
        embed_dim=8,
        sequence_length=5,
    )
    base.update(kw)
    return ModelConfig(**base)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- shapes


def test_forward_shapes_single_and_batched_sequences() -> None:
    torch.manual_seed(0)
    model = MclSTExp(small_config())
    images = torch.randint(0, 255, (6, 24, 24, 3), dtype=torch.uint8)
    expr = torch.randn(6, G)
    pos = torch.randint(0, 16, (6, 2))
    a, b, scale = model(images, expr, pos)
    assert a.shape == (6, 8) and b.shape == (6, 8)
    assert float(scale) == 1.0 and not scale.requires_grad  # tau = 1, fixed
    # 2 sequences of length 4 with 6 real spots
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    expr2 = torch.randn(2, 4, G)
    pos2 = torch.randint(0, 16, (2, 4, 2))
    a2, b2, _ = model(images, expr2, pos2, mask)
    assert a2.shape == (6, 8) and b2.shape == (6, 8)
    with pytest.raises(ValueError, match="paired"):
        model(images[:5], expr, pos)
    # precomputed backbone features (frozen mode) go through the image head only
    feats = model.image_encoder.features(images)
    assert torch.allclose(model.encode_images(feats), a, atol=1e-5)


def test_spot_encoder_architecture_is_the_method() -> None:
    enc = SpotEncoder(G, position_rows=40, position_cols=50)
    assert enc.pos_x.shape == (50, G) and enc.pos_y.shape == (40, G)
    assert len(enc.blocks) == 2
    blk = enc.blocks[0]
    assert blk.attn.to_qkv.weight.shape == (3 * 512, G) and blk.attn.to_qkv.bias is None
    assert blk.attn.to_out.weight.shape == (G, 512) and blk.attn.to_out.bias is not None
    assert blk.ff.fc1.weight.shape == (G, G) and blk.ff.fc2.weight.shape == (G, G)
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in list(enc.children()))  # no final LN
    # position tables are N(0, 1)
    big = SpotEncoder(4, position_rows=5000, position_cols=5000)
    assert abs(float(big.pos_x.detach().std()) - 1.0) < 0.02
    assert abs(float(big.pos_x.detach().mean())) < 0.02


def test_spot_encoder_input_and_block_formulas() -> None:
    torch.manual_seed(1)
    enc = SpotEncoder(G, position_rows=10, position_cols=10, n_blocks=1)
    e = torch.randn(5, G)
    pos = torch.tensor([[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]])  # (row v, col u)
    h0 = e + enc.pos_x[pos[:, 1]] + enc.pos_y[pos[:, 0]]
    # reference pre-norm block written out by hand
    blk = enc.blocks[0]
    x = blk.norm1(h0)
    q, k, v = blk.attn.to_qkv(x).chunk(3, dim=-1)
    heads = [
        torch.softmax(q[:, i * 64 : (i + 1) * 64] @ k[:, i * 64 : (i + 1) * 64].T / 8.0, -1)
        @ v[:, i * 64 : (i + 1) * 64]
        for i in range(8)
    ]
    h1 = h0 + blk.attn.to_out(torch.cat(heads, dim=1))
    ff = blk.ff.fc2(torch.nn.functional.gelu(blk.ff.fc1(blk.norm2(h1)), approximate="none"))
    expected = h1 + ff
    assert torch.allclose(enc(e, pos), expected, atol=1e-5)


def test_projection_head_formula() -> None:
    torch.manual_seed(2)
    head = ProjectionHead(7, 5)
    x = torch.randn(3, 7)
    t = x @ head.projection.weight.T + head.projection.bias
    z = torch.nn.functional.layer_norm(
        t + torch.nn.functional.gelu(t) @ head.fc.weight.T + head.fc.bias,
        (5,),
        head.layer_norm.weight,
        head.layer_norm.bias,
    )
    assert torch.allclose(head(x), z, atol=1e-6)


# ----------------------------------------------------------------------------- loss


def test_clip_loss_matches_hand_computed_values() -> None:
    a = torch.eye(2)  # image embeddings
    b = torch.tensor([[1.0, 2.0], [0.0, 0.0]])  # spot embeddings; S = b a^T = [[1, 2], [0, 0]]
    # CE(S, I)   = mean(log(1 + e), log 2)              = (1.3132617 + 0.6931472) / 2
    # CE(S^T, I) = mean(log(1 + e^-1), log(1 + e^2))    = (0.3132617 + 2.1269280) / 2
    ce_s = (math.log(1 + math.e) + math.log(2)) / 2
    ce_st = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(2))) / 2
    assert float(clip_loss(a, b)) == pytest.approx((ce_s + ce_st) / 2, abs=1e-6)
    assert float(clip_loss(a, b, lam=0.25)) == pytest.approx(0.25 * ce_s + 0.75 * ce_st, abs=1e-6)
    assert float(clip_loss(a, b, lam=0.5)) == pytest.approx(1.1116497, abs=1e-6)
    # logit scale 1/tau multiplies S
    s2 = (math.log(1 + math.exp(2)) + math.log(2)) / 2
    s2t = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(4))) / 2
    assert float(clip_loss(a, b, 2.0)) == pytest.approx((s2 + s2t) / 2, abs=1e-6)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        clip_loss(a, b[:1])


def test_soft_target_loss_matches_numpy_formula() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 3))
    b = rng.normal(size=(5, 3))

    def log_softmax(x: np.ndarray) -> np.ndarray:
        x = x - x.max(1, keepdims=True)
        return x - np.log(np.exp(x).sum(1, keepdims=True))

    s = b @ a.T
    t = np.exp(log_softmax((a @ a.T + b @ b.T) / 2))
    expected = 0.5 * (-(t * log_softmax(s)).sum(1)) + 0.5 * (-(t.T * log_softmax(s.T)).sum(1))
    got = soft_target_loss(torch.tensor(a), torch.tensor(b))
    assert float(got) == pytest.approx(expected.mean(), rel=1e-6)
    # with near-orthogonal, large embeddings the soft targets become the identity
    e = torch.eye(4) * 30
    assert float(soft_target_loss(e, e)) == pytest.approx(float(clip_loss(e, e)), abs=1e-6)


# ----------------------------------------------------------------------------- context


def test_spot_embedding_depends_exactly_on_its_sequence() -> None:
    torch.manual_seed(3)
    model = MclSTExp(small_config()).eval()
    expr = torch.randn(2, 4, G)
    pos = torch.randint(0, 16, (2, 4, 2))
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.bool)
    base = model.encode_spots(expr, pos, mask)
    # change spot 2 of sequence 0: spots of sequence 0 change, sequence 1 does not
    e2 = expr.clone()
    e2[0, 2] += torch.randn(G)  # (a constant shift would vanish in the LayerNorm)
    out = model.encode_spots(e2, pos, mask)
    assert (out[[0, 1, 3]] - base[[0, 1, 3]]).abs().max() > 1e-4
    assert torch.equal(out[4:], base[4:])
    # the padding slot is never attended to
    e3 = expr.clone()
    e3[1, 3] = 100.0
    assert torch.allclose(model.encode_spots(e3, pos, mask), base, atol=1e-6)
    # a sequence on its own gives the same embeddings as inside a batch of sequences
    alone = model.encode_spots(expr[1, :3], pos[1, :3])
    assert torch.allclose(alone, base[4:], atol=1e-5)
    # a spot's position enters through Px[col] + Py[row]
    p2 = pos.clone()
    p2[0, 0, 1] = (p2[0, 0, 1] + 1) % 16
    assert (model.encode_spots(expr, p2, mask)[0] - base[0]).abs().max() > 1e-4


# ----------------------------------------------------------------------------- image encoder


def test_unknown_backbone_error_says_how_to_list_names() -> None:
    with pytest.raises(ValueError, match="list_models"):
        build_backbone("no_such_net_v9")


def test_weights_from_local_file_torch_and_safetensors(tmp_path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(4)
    src = build_backbone("test_efficientnet").eval()
    # include a classifier entry as a full checkpoint would: it is ignored
    state = dict(src.state_dict())
    state["classifier.weight"] = torch.zeros(10, src.num_features)
    torch.save({"state_dict": state}, tmp_path / "w.pt")
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, tmp_path / "w.safetensors")
    x = torch.rand(2, 3, 32, 32)
    for name in ("w.pt", "w.safetensors"):
        torch.manual_seed(99)  # different random init: only the file can make them equal
        enc = ImageEncoder("test_efficientnet", weights=tmp_path / name).eval()
        assert torch.allclose(enc.backbone(x), src(x), atol=1e-6), name
    # bad files: clear errors
    with pytest.raises(FileNotFoundError, match="not found"):
        build_backbone("test_efficientnet", weights=tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="cannot read backbone weights"):
        build_backbone("test_efficientnet", weights=tmp_path / "junk.pt")
    partial = {k: v for i, (k, v) in enumerate(src.state_dict().items()) if i % 2}
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match="missing keys"):
        build_backbone("test_efficientnet", weights=tmp_path / "partial.pt")
    torch.save(src.state_dict(), tmp_path / "other.pt")
    with pytest.raises(ValueError, match="do not match"):
        build_backbone("test_resnet", weights=tmp_path / "other.pt")


def test_image_normalisation_options() -> None:
    img = torch.full((1, 8, 8, 3), 255, dtype=torch.uint8)
    raw = ImageEncoder("test_efficientnet", normalization="none")
    assert torch.allclose(raw.prepare(img), torch.ones(1, 3, 8, 8))  # [0, 1], no mean/std
    net = ImageEncoder("test_efficientnet", normalization="imagenet")
    assert torch.allclose(
        net.prepare(img)[0, :, 0, 0], (1 - net.mean.flatten()) / net.std.flatten()
    )


def test_densenet_final_activation_can_be_dropped() -> None:
    m = build_backbone("densenet121", drop_final_activation=True)
    assert isinstance(m.features.norm5.act, torch.nn.Identity)
    with pytest.raises(ValueError, match="DenseNet"):
        build_backbone("test_efficientnet", drop_final_activation=True)


def test_multiscale_pooling_is_the_mean_of_every_stage() -> None:
    torch.manual_seed(0)
    m = build_backbone("test_resnet", pooling="multiscale").eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        _, stages = m.model.forward_intermediates(x)
        expected = torch.cat([f.mean(dim=(2, 3)) for f in stages], dim=1)
        got = m(x)
    assert got.shape == (2, m.num_features) and m.num_features == expected.shape[1]
    assert torch.allclose(got, expected)
    # the last block of the concatenation is the global pooling of the plain backbone
    plain = build_backbone("test_resnet").eval()
    plain.load_state_dict(m.model.state_dict())
    with torch.no_grad():
        assert torch.allclose(got[:, -plain.num_features :], plain(x), atol=1e-6)
    # the encoder and the model config carry it; bad values are refused
    enc = ImageEncoder("test_resnet", embed_dim=4, pooling="multiscale")
    assert enc.num_features == m.num_features and enc(x).shape == (2, 4)
    assert MclSTExp(small_config(backbone="test_resnet", pooling="multiscale"))
    with pytest.raises(ValueError, match="pooling"):
        ModelConfig(pooling="max")
    with pytest.raises(ValueError, match="pooling"):
        build_backbone("test_resnet", pooling="max")


def test_dihedral_feature_views_are_the_mean_of_the_eight_orientations() -> None:
    torch.manual_seed(0)
    enc = ImageEncoder("test_resnet", embed_dim=4, feature_views="dihedral").eval()
    single = ImageEncoder("test_resnet", embed_dim=4).eval()
    single.load_state_dict(enc.state_dict())
    x = torch.randint(0, 256, (3, 24, 24, 3), dtype=torch.uint8)  # (B, H, W, 3)
    with torch.no_grad():
        got = enc.features(x)
        views = [torch.rot90(v, q, dims=(1, 2)) for v in (x, x.flip(2)) for q in range(4)]
        expected = torch.stack([single.features(v) for v in views]).mean(0)
        assert torch.allclose(got, expected, atol=1e-5)
        # exactly invariant to the orientation of the patch; the plain encoder is not
        for turned in (torch.rot90(x, 1, dims=(1, 2)), x.flip(1), x.transpose(1, 2)):
            assert torch.allclose(enc.features(turned.contiguous()), got, atol=1e-5)
        assert not torch.allclose(
            single.features(torch.rot90(x, 1, dims=(1, 2))), single.features(x)
        )
    cfg = small_config(backbone="test_resnet", feature_views="dihedral")
    assert MclSTExp(cfg).image_encoder.feature_views == "dihedral"
    with pytest.raises(ValueError, match="feature_views"):
        ModelConfig(feature_views="rotations")
    with pytest.raises(ValueError, match="feature_views"):
        ImageEncoder("test_resnet", feature_views="rotations")


def test_feature_standardization_is_fitted_saved_and_applied_before_the_head() -> None:
    torch.manual_seed(0)
    model = MclSTExp(small_config(backbone="test_resnet")).eval()
    enc = model.image_encoder
    f = torch.randn(40, enc.num_features) * torch.linspace(0.1, 50, enc.num_features) + 5
    f[:, 0] = 3.0  # a constant feature is centred, never divided by ~0
    with torch.no_grad():
        before = model.encode_images(f)
        assert torch.allclose(before, enc.head(f))  # identity by default
        enc.fit_feature_standardization(f)
        z = enc.standardize(f)
        assert z[:, 0].abs().max() < 1e-5 and enc.feature_scale[0] == 1
        assert torch.allclose(z[:, 1:].mean(0), torch.zeros(enc.num_features - 1), atol=1e-4)
        assert torch.allclose(
            z[:, 1:].std(0, unbiased=False), torch.ones(enc.num_features - 1), atol=1e-3
        )
        assert torch.allclose(model.encode_images(f), enc.head(z), atol=1e-5)
        # images take the same path: encoder(images) == project(features(images))
        x = torch.randint(0, 256, (2, 16, 16, 3), dtype=torch.uint8)
        assert torch.allclose(enc(x), enc.head(enc.standardize(enc.features(x))), atol=1e-5)
    # saved with the model; a state dict written before the buffers existed loads as identity
    state = model.state_dict()
    fresh = MclSTExp(small_config(backbone="test_resnet"))
    fresh.load_state_dict(state)
    assert torch.equal(fresh.image_encoder.feature_shift, enc.feature_shift)
    old = {k: v for k, v in state.items() if "feature_s" not in k}
    fresh.load_state_dict(old)
    assert fresh.image_encoder.feature_shift.eq(0).all()
    assert fresh.image_encoder.feature_scale.eq(1).all()
    with pytest.raises(ValueError, match="features must be"):
        enc.fit_feature_standardization(torch.zeros(3, enc.num_features + 1))
    with pytest.raises(ValueError, match="NaN"):
        enc.fit_feature_standardization(torch.full((3, enc.num_features), float("nan")))


# ----------------------------------------------------------------------------- presets


def test_presets() -> None:
    assert {"paper", "legacy", "default", "cpu"} <= set(list_presets())
    m, t = load_preset("paper")
    assert (m.backbone, t.batch_size, t.lr, t.weight_decay, t.epochs) == (
        "densenet121",
        128,
        1e-4,
        1e-3,
        90,
    )
    assert m.sequence == "batch" and m.position_rows == 65536 and m.image_normalization == "none"
    assert t.optimizer == "adam" and t.amp == "none" and t.expression_normalization == "legacy_spot"
    lm, _ = load_preset("legacy")
    assert lm.sequence == "batch" and lm.position_cols == 65536
    dm, dt = load_preset("default")
    assert dm.sequence == "neighbourhood" and dm.position_rows == 0
    assert dt.expression_normalization == "default"
    _cm, ct = load_preset("cpu", train__epochs=2)
    assert ct.freeze_backbone and ct.epochs == 2 and _cm.pooling == "multiscale"
    assert _cm.feature_views == "dihedral" and dm.feature_views == "single"
    with pytest.raises(ValueError, match="unknown preset"):
        load_preset("nope")
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match="sequence"):
        ModelConfig(sequence="random")


@pytest.mark.parametrize(
    "data, match",
    [
        ({"model": {"nonsense_key": 1}, "train": {}}, r"unknown ModelConfig field.*nonsense_key"),
        ({"model": {}, "train": {"epochs": "ten"}}, r"epochs"),
        ({"model": {}, "train": {"lr": "fast"}}, r"lr"),
        ({"model": {}, "train": {"epochs": -3}}, r"epochs"),
    ],
)
def test_a_bad_preset_file_is_named_and_a_wrong_type_is_a_value_error(tmp_path, data, match):
    """A preset file with unknown keys, values of the wrong type or out of range: a ValueError
    (the CLI's one-line error, not a TypeError traceback) naming the file and the field."""
    import json

    path = tmp_path / "mine.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=match) as info:
        load_preset(path)
    assert str(path) in str(info.value)


def test_every_preset_loads_and_builds_its_configs() -> None:
    """Bundled presets and the experiments' JSON presets (the original recipe with ResNet-18)."""
    from pathlib import Path

    for name in list_presets():
        load_preset(name)
    folder = Path(__file__).resolve().parents[1] / "experiments" / "presets"
    files = sorted(folder.glob("*.json"))
    assert files
    for path in files:
        m, t = load_preset(path)
        assert m.backbone and t.epochs >= 1
    m, t = load_preset(folder / "original_resnet18.json")
    assert (m.backbone, m.position_rows, m.sequence, t.batch_size, t.amp) == (
        "resnet18",
        65536,
        "batch",
        128,
        "none",
    )
