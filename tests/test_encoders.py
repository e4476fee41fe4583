"""Encoders that see tissue: the registry, weights from a (fake, offline) hub, typed errors."""

from __future__ import annotations

import types

import pytest
import torch

import mclstexp
from _fake_hub import TINY_ARGS, TINY_MEAN, plain_tiny, register_tiny, use_hub, write_model
from mclstexp.models import (
    EncoderInfo,
    ImageEncoder,
    build_backbone,
    encoder_info,
    list_encoders,
    load_preset,
)
from mclstexp.models import encoders as enc_registry

REQUIRED = {
    "densenet121",
    "resnet50",
    "uni",
    "uni2-h",
    "h-optimus-0",
    "h-optimus-1",
    "h0-mini",
    "virchow2",
    "gigapath",
}


def test_registry_lists_the_required_encoders_with_complete_entries() -> None:
    assert set(list_encoders()) >= REQUIRED
    for name in list_encoders():
        info = encoder_info(name)
        assert isinstance(info, EncoderInfo) and info.name == name
        assert info.hub_id.count("/") == 1 and info.model_page.endswith(info.hub_id)
        assert len(info.mean) == len(info.std) == 3 and all(s > 0 for s in info.std)
        assert info.dim > 0 and info.input_size > 0 and info.licence
        assert info.mpp is None or 0.1 < info.mpp < 2
        with pytest.raises(AttributeError):  # frozen
            info.dim = 1  # type: ignore[misc]
    # the card-prescribed details the issue names
    assert encoder_info("uni").kwargs["init_values"] == 1e-5
    hopt = encoder_info("h-optimus-0")
    assert hopt.architecture == "vit_giant_patch14_reg4_dinov2" and hopt.mean[0] == 0.707223
    assert encoder_info("virchow2").output == "cls+mean" and encoder_info("virchow2").dim == 2560
    assert {n for n in REQUIRED if encoder_info(n).gated} == {
        "uni",
        "uni2-h",
        "h-optimus-1",
        "h0-mini",
        "virchow2",
        "gigapath",
    }
    # the fm preset's encoder: the best-ranked one without an access request
    assert enc_registry.default_foundation_encoder() == "h-optimus-0"
    assert load_preset("fm").model.backbone == "h-optimus-0"


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_every_entry_gives_dim_features_on_the_meta_device(name: str) -> None:
    info = encoder_info(name)
    with torch.device("meta"):  # no weights, no download, no memory
        backbone = build_backbone(name, weights=None)
        out = backbone(torch.zeros(2, 3, info.input_size, info.input_size))
    assert tuple(out.shape) == (2, info.dim)
    assert backbone.num_features == info.dim
    assert tuple(backbone.pretrained_cfg["mean"]) == info.mean


def test_pretrained_from_a_fake_offline_hub_equals_the_saved_model(tmp_path, monkeypatch) -> None:

    cache = use_hub(monkeypatch, tmp_path / "hf")
    saved = plain_tiny(seed=3)
    write_model(cache, "org/tiny", saved, architecture="test_vit", model_args=TINY_ARGS)
    x = torch.rand(2, 3, 32, 32)
    torch.manual_seed(99)  # another random init: only the cached weights make them equal
    loaded = build_backbone("hf-hub:org/tiny", weights="pretrained").eval()
    assert torch.equal(loaded(x), saved(x))
    # a registry entry pointed at the fake hub: its card's kwargs (SwiGLU) and mean/std
    info, tiny = register_tiny(monkeypatch, cache)
    backbone = build_backbone(info.name, weights="pretrained").eval()
    assert torch.equal(backbone(x), tiny(x))
    assert tuple(backbone.pretrained_cfg["mean"]) == TINY_MEAN
    enc = ImageEncoder(info.name, weights="pretrained", normalization="backbone").eval()
    assert torch.allclose(enc.mean.flatten(), torch.tensor(TINY_MEAN))
    # weights=None builds the same architecture from the registry, without the hub
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    assert build_backbone(info.name).num_features == info.dim


def test_cls_mean_output_and_fixed_size_resize(tmp_path, monkeypatch) -> None:
    cache = use_hub(monkeypatch, tmp_path / "hf")
    info, tiny = register_tiny(monkeypatch, cache, name="tiny-cm", output="cls+mean", dim=128)
    backbone = build_backbone(info.name, weights="pretrained").eval()
    x = torch.rand(3, 3, 32, 32)
    tokens = tiny.forward_features(x)
    want = torch.cat([tokens[:, 0], tokens[:, tiny.num_prefix_tokens :].mean(1)], dim=1)
    assert torch.allclose(backbone(x), want, atol=1e-6) and backbone.num_features == 128
    # a ViT built for 32 px gets 48 px patches resized (it accepts no other size)
    enc = ImageEncoder(info.name, weights="pretrained").eval()
    assert enc.resize_to == 32
    assert enc.features(torch.zeros(2, 48, 48, 3, dtype=torch.uint8)).shape == (2, 128)
    assert ImageEncoder("test_resnet").resize_to is None


def _message_names_the_way_out(text: str, hub_id: str, cache: str) -> None:
    for part in (hub_id, f"https://huggingface.co/{hub_id}", "HF_TOKEN", "hf auth login"):
        assert part in text, part
    assert cache in text and "weights=PATH" in text


def test_gated_model_without_access_raises_weights_error(tmp_path, monkeypatch) -> None:
    import timm
    from huggingface_hub.errors import GatedRepoError

    cache = use_hub(monkeypatch, tmp_path / "hf")

    def gated(*args, **kwargs):  # the hub client's answer for a gated repo, at its boundary
        response = types.SimpleNamespace(headers={}, request=None, status_code=403)
        raise GatedRepoError("403 Client Error: Cannot access gated repo", response=response)

    monkeypatch.setattr(timm, "create_model", gated)
    with pytest.raises(mclstexp.WeightsError) as err:
        build_backbone("uni", weights="pretrained")
    text = str(err.value)
    _message_names_the_way_out(text, "MahmoodLab/UNI", str(cache))
    assert "gated" in text and "no token was found" in text
    assert isinstance(err.value, mclstexp.MclstexpError)
    assert isinstance(err.value.__cause__, GatedRepoError)


def test_offline_with_nothing_cached_raises_weights_error(tmp_path, monkeypatch) -> None:
    cache = use_hub(monkeypatch, tmp_path / "hf")  # empty, offline: the real client's error
    with pytest.raises(mclstexp.WeightsError, match="not in the local cache") as err:
        build_backbone("h-optimus-0", weights="pretrained")
    _message_names_the_way_out(str(err.value), "bioptimus/H-optimus-0", str(cache))
    assert "HF_HUB_OFFLINE is set" in str(err.value)
    assert "vit_giant_patch14_reg4_dinov2" in str(err.value)  # what a PATH file must match


def test_unknown_encoder_name_raises_weights_error() -> None:
    with pytest.raises(mclstexp.WeightsError, match="h-optimus-0") as err:
        build_backbone("no_such_encoder_v9")
    assert "hf-hub:ORG/NAME" in str(err.value) and "list_models" in str(err.value)
    with pytest.raises(mclstexp.WeightsError, match="registered encoders"):
        encoder_info("no_such_encoder_v9")


def test_shape_mismatch_raises_weights_error(tmp_path, monkeypatch) -> None:
    import timm

    cache = use_hub(monkeypatch, tmp_path / "hf")
    # the hub's config says embed_dim 64, its weights come from a wider model
    wide = timm.create_model("test_vit", num_classes=0, **{**TINY_ARGS, "embed_dim": 96})
    narrow = timm.create_model("test_vit", num_classes=0, **TINY_ARGS)
    write_model(
        cache,
        "org/mismatch",
        narrow,
        architecture="test_vit",
        model_args=TINY_ARGS,
        state=wide.state_dict(),
    )
    with pytest.raises(mclstexp.WeightsError, match="do not match") as err:
        build_backbone("hf-hub:org/mismatch", weights="pretrained")
    assert "size mismatch" in str(err.value)
    _message_names_the_way_out(str(err.value), "org/mismatch", str(cache))
    # a local file of another architecture
    torch.save(
        timm.create_model("test_vit", num_classes=0, embed_dim=96).state_dict(),
        tmp_path / "wide.pt",
    )
    with pytest.raises(mclstexp.WeightsError, match="shape mismatch"):
        build_backbone("test_vit", weights=tmp_path / "wide.pt")


def test_presets_use_published_weights_only_where_the_original_does() -> None:
    assert load_preset("paper").model.weights == "pretrained"
    assert load_preset("legacy").model.weights == "pretrained"
    assert load_preset("fm").model.weights == "pretrained"
    for name in ("cpu", "cpu_legacy", "default"):  # the main job never downloads
        assert load_preset(name).model.weights is None
