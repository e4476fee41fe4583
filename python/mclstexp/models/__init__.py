"""The mclSTExp model and what training and inference share.

- ``config``: configs and JSON presets; ``image_encoder``, ``spot_encoder``, ``heads``, ``clip``:
  the model, which returns features; ``loss``: the contrastive losses and their all-gather;
- ``encoders``: the registry of named image encoders (hub id, architecture, geometry);
  ``hub``: published weights through timm / ``huggingface_hub`` and their errors;
- ``inputs``: spot arrays from an AnnData, attention sequences, the batch plan (no torch);
- ``runtime``: device, autocast, pooled backbone features;
- ``features``: frozen-encoder features cached by content, in memory and beside patch caches.

:mod:`mclstexp.train` and :mod:`mclstexp.tl` both build on this package and never on each other.
"""

from __future__ import annotations

from mclstexp._lazy import lazy_exports

_EXPORTS = {
    "ModelConfig": "config",
    "TrainConfig": "config",
    "load_preset": "config",
    "load_variants": "config",
    "MclSTExp": "clip",
    "ImageEncoder": "image_encoder",
    "build_backbone": "image_encoder",
    "EncoderInfo": "encoders",
    "list_encoders": "encoders",
    "encoder_info": "encoders",
    "SpotEncoder": "spot_encoder",
    "ProjectionHead": "heads",
    "clip_loss": "loss",
    "soft_target_loss": "loss",
    "all_gather_with_grad": "loss",
    "BatchPlan": "inputs",
    "spot_arrays": "inputs",
    "resolve_device": "runtime",
    "backbone_features": "runtime",
    "FeatureCache": "features",
    "frozen_features": "features",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
