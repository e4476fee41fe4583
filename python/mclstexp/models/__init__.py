"""The mclSTExp model: configs, presets, encoders, projection heads, losses (needs torch)."""

from __future__ import annotations

from mclstexp._lazy import lazy_exports

_EXPORTS = {
    "ModelConfig": "config",
    "TrainConfig": "config",
    "load_preset": "config",
    "MclSTExp": "clip",
    "ImageEncoder": "image_encoder",
    "SpotEncoder": "spot_encoder",
    "ProjectionHead": "heads",
    "clip_loss": "loss",
    "soft_target_loss": "loss",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
