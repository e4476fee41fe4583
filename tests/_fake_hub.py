"""A fake Hugging Face hub cache for tests: tiny timm models written where the hub client looks.

The layout is the client's own (``<HF_HOME>/hub/models--ORG--NAME/refs/main`` naming a revision,
``snapshots/<revision>/config.json`` and ``model.safetensors``); with ``HF_HUB_OFFLINE=1`` the
client reads it without any network, exactly as on a compute node after a download elsewhere.

``huggingface_hub`` reads ``HF_HOME`` and ``HF_HUB_OFFLINE`` once, when imported, so
:func:`use_hub` sets both the environment (for subprocesses) and the client's constants (for
this process).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from _hub_cache import REVISION, snapshot_dir

#: A tiny registry-shaped encoder: a ViT with 4 registers, SwiGLU and LayerScale, like
#: H-optimus, at 32 px and the synthetic data's 2 um/px.
TINY_ARGS = {
    "img_size": 32,
    "patch_size": 8,
    "depth": 2,
    "reg_tokens": 4,
    "init_values": 1e-5,
    "dynamic_img_size": False,
}
TINY_HUB_KWARGS = {"mlp_layer": "SwiGLUPacked", "act_layer": "silu"}
TINY_MEAN = (0.6, 0.5, 0.7)
TINY_STD = (0.2, 0.25, 0.2)


def use_hub(monkeypatch: Any, home: Path) -> Path:
    """Point the hub client (this process and children) at ``home``, offline. Returns the
    cache folder ``home / "hub"``."""
    from huggingface_hub import constants

    cache = home / "hub"
    cache.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def write_model(
    cache: Path,
    repo_id: str,
    model: torch.nn.Module,
    *,
    architecture: str,
    model_args: dict[str, Any],
    mean: tuple[float, ...] = (0.5, 0.5, 0.5),
    std: tuple[float, ...] = (0.25, 0.25, 0.25),
    state: dict[str, torch.Tensor] | None = None,
    revision: str = REVISION,
) -> Path:
    """Write ``model`` (or ``state``) as ``repo_id`` into the cache; returns the snapshot."""
    from safetensors.torch import save_file

    snap = snapshot_dir(cache, repo_id, kind="model", revision=revision)
    config = {
        "architecture": architecture,
        "num_classes": 0,
        "num_features": int(model.num_features),
        "model_args": model_args,
        "pretrained_cfg": {"mean": list(mean), "std": list(std), "num_classes": 0},
    }
    (snap / "config.json").write_text(json.dumps(config))
    tensors = state if state is not None else model.state_dict()
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(snap / "model.safetensors"))
    return snap


def tiny_encoder(seed: int = 0) -> torch.nn.Module:
    """The tiny registry-shaped ViT (random weights of ``seed``), eval mode."""
    import timm

    torch.manual_seed(seed)
    return timm.create_model(
        "test_vit",
        num_classes=0,
        mlp_layer=timm.layers.SwiGLUPacked,
        act_layer="silu",
        **TINY_ARGS,
    ).eval()


def plain_tiny(seed: int = 0) -> torch.nn.Module:
    """A tiny ViT whose config.json says everything (no card kwargs): for ``hf-hub:`` names."""
    import timm

    torch.manual_seed(seed)
    return timm.create_model("test_vit", num_classes=0, **TINY_ARGS).eval()


def register_tiny(monkeypatch: Any, cache: Path, *, name: str = "tiny-fm", **changes: Any) -> Any:
    """Write the tiny encoder to the fake hub as ``fake/<name>`` and register it as ``name``
    (a copy of the ``h-optimus-0`` entry pointed at it). Returns ``(entry, saved model)``."""
    from mclstexp.models import encoders

    model = tiny_encoder()
    hub_id = f"fake/{name}"
    write_model(cache, hub_id, model, architecture="test_vit", model_args=TINY_ARGS)
    fields = {
        "name": name,
        "hub_id": hub_id,
        "architecture": "test_vit",
        "kwargs": {**TINY_ARGS, **TINY_HUB_KWARGS},
        "hub_kwargs": dict(TINY_HUB_KWARGS),
        "dim": 64,
        "input_size": 32,
        "mpp": 2.0,
        "mean": TINY_MEAN,
        "std": TINY_STD,
    }
    info = replace(encoders.encoder_info("h-optimus-0"), **{**fields, **changes})
    monkeypatch.setitem(encoders.REGISTRY, name, info)
    return info, model
