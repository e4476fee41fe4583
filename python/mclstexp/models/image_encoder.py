"""The image encoder: a backbone (timm model, ``hf-hub:`` model or registry encoder) + head.

Backbones are built with ``num_classes=0`` (the pooled feature, no classifier). Their weights:

- ``weights=None``: random initialisation (nothing is read or downloaded);
- ``weights="pretrained"``: the published weights through timm and ``huggingface_hub`` (the
  standard Hugging Face cache, ``HF_HOME``, ``HF_HUB_OFFLINE``, ``HF_TOKEN``; see
  :mod:`mclstexp.models.hub`);
- ``weights=PATH``: a local safetensors file or torch state dict, read with
  ``torch.load(weights_only=True)``.

A registry name (:mod:`mclstexp.models.encoders`) builds the architecture with the keyword
arguments its card prescribes, forms the output as the card says (class token, class token ++
patch mean, or a stage's spatial mean) and carries the card's mean/std as
``pretrained_cfg["mean"/"std"]`` (``image_normalization="backbone"`` uses them).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from mclstexp._memory import skip_unusable_triton
from mclstexp.exceptions import WeightsError
from mclstexp.models import encoders, hub
from mclstexp.models.heads import ProjectionHead
from mclstexp.models.inputs import downscale_patches, reduced_edge
from mclstexp.models.stages import FrontOutput, StagedBackbone, dihedral_view

__all__ = [
    "ClsMeanPool",
    "ImageEncoder",
    "MultiScalePool",
    "StagePool",
    "build_backbone",
    "load_backbone_weights",
]

IMAGENET_MEAN = encoders.IMAGENET_MEAN
IMAGENET_STD = encoders.IMAGENET_STD
_HUB_PREFIXES = ("hf-hub:", "hf_hub:")


def timm_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A registry entry's JSON-able keyword arguments with named layers resolved for timm.

    Examples
    --------
    >>> import timm.layers
    >>> timm_kwargs({"mlp_layer": "SwiGLUPacked"})["mlp_layer"] is timm.layers.SwiGLUPacked
    True
    """
    import timm.layers

    out = dict(kwargs)
    if isinstance(out.get("mlp_layer"), str):
        out["mlp_layer"] = getattr(timm.layers, out["mlp_layer"])
    return out


def _create(name: str, weights: str | Path | None) -> tuple[nn.Module, Any]:
    """The timm model for ``name`` (with published weights when ``weights == "pretrained"``)
    and its registry entry (``None`` for timm and ``hf-hub:`` names)."""
    skip_unusable_triton()  # before timm -> torchvision -> torch._dynamo: -75 MB RSS on a CPU
    import timm

    pretrained = isinstance(weights, str) and weights == "pretrained"
    if encoders.is_registered(name):
        info = encoders.encoder_info(name)
        if pretrained:  # as the card does; the rest of the architecture comes from config.json
            model = hub.create_timm_model(
                f"hf-hub:{info.hub_id}",
                pretrained=True,
                label=name,
                architecture=info.architecture,
                **timm_kwargs(info.hub_kwargs),
            )
        else:
            kwargs = timm_kwargs(info.kwargs)
            model = timm.create_model(info.architecture, pretrained=False, num_classes=0, **kwargs)
        return model, info
    if name.startswith(_HUB_PREFIXES):  # config.json from the hub (cache) even without weights
        return hub.create_timm_model(name, pretrained=pretrained), None
    if not timm.is_model(name):
        raise WeightsError(
            f"unknown backbone {name!r}: not a registered encoder ({encoders.list_encoders()}), "
            "not 'hf-hub:ORG/NAME' and not a timm model name. List timm names with "
            "`python -c \"import timm; print(timm.list_models('*resnet*'))\"` (any pattern)."
        )
    if pretrained:
        return hub.create_timm_model(name, pretrained=True), None
    return timm.create_model(name, pretrained=False, num_classes=0), None


def _with_output(model: nn.Module, info: Any, name: str, pooling: str) -> nn.Module:
    """Wrap ``model`` so its output is the registry entry's feature, or the multiscale pool."""
    if pooling not in ("global", "multiscale"):
        raise ValueError(f"pooling must be 'global' or 'multiscale', got {pooling!r}")
    output = "pooled" if info is None else info.output
    if pooling == "multiscale":
        if output != "pooled":
            raise ValueError(f"pooling='multiscale' is not defined for encoder {name!r}")
        return MultiScalePool(model, name)
    if output == "cls+mean":
        return ClsMeanPool(model)
    if output == "stage":
        return StagePool(model, int(info.stage))
    return model


def build_backbone(
    name: str,
    *,
    weights: str | Path | None = None,
    drop_final_activation: bool = False,
    pooling: str = "global",
) -> nn.Module:
    """Create a backbone without classifier: a timm model, ``hf-hub:ORG/NAME`` or a registry
    encoder (:func:`mclstexp.models.list_encoders`).

    Parameters
    ----------
    name
        A registry name (``"uni"``, ``"h-optimus-0"``, ...), ``"hf-hub:ORG/NAME"`` or a timm
        model name (``"resnet18"``, ``"vit_base_patch32_224"``, ...).
    weights
        ``None`` (random initialisation), ``"pretrained"`` (the published weights from the
        Hugging Face hub or its local cache; never downloaded offline) or a local weights file.
    drop_final_activation
        Replace the activation of DenseNet's final ``norm5`` by identity (the original feeds the
        pre-ReLU features to the pooling).
    pooling
        ``"global"``: the backbone's own pooled output (its last stage; the method), or the
        registry entry's output. ``"multiscale"``: the spatial mean of every stage's feature
        map, concatenated (:class:`MultiScalePool`); for frozen backbones without pretrained
        weights, whose last stage alone keeps little of the colour and texture a spot's
        expression depends on.

    Raises
    ------
    mclstexp.WeightsError
        Unknown name; weights that cannot be downloaded or read from the cache (gated model,
        no token, offline); weights that do not fit the architecture. The message says what
        to do.

    Examples
    --------
    >>> build_backbone("resnet18").num_features
    512
    >>> build_backbone("resnet18", pooling="multiscale").num_features
    1024
    >>> with torch.device("meta"):
    ...     build_backbone("uni")(torch.zeros(1, 3, 224, 224)).shape
    torch.Size([1, 1024])
    """
    model, info = _create(name, weights)
    if drop_final_activation:
        norm5 = getattr(getattr(model, "features", None), "norm5", None)
        if norm5 is None or not hasattr(norm5, "act"):
            raise ValueError(
                f"drop_final_activation is only defined for DenseNet backbones, not {name!r}"
            )
        norm5.act = nn.Identity()
    if weights is not None and not (isinstance(weights, str) and weights == "pretrained"):
        load_backbone_weights(model, weights)
    if info is not None:  # the card's normalisation, whatever source the weights came from
        model.pretrained_cfg = {
            **dict(getattr(model, "pretrained_cfg", {}) or {}),
            "mean": tuple(info.mean),
            "std": tuple(info.std),
        }
    model = _with_output(model, info, name, pooling)
    if info is not None and pooling == "global" and int(model.num_features) != info.dim:
        raise WeightsError(
            f"encoder {name!r} gives {model.num_features}-d features, the registry says "
            f"{info.dim}: the hub's config.json or this timm version builds another architecture"
        )
    return model


class MultiScalePool(nn.Module):
    """A timm backbone whose output is the spatial mean of every stage's feature map.

    The concatenated means (``num_features`` = the sum of the stages' channels) keep what the
    early, high-resolution stages see (colour, nuclei, texture at the scale of cells) next to the
    last stage's context. Weights load as for the wrapped model (``load_backbone_weights`` is
    applied before wrapping).

    Parameters
    ----------
    model
        A timm model that implements ``forward_intermediates`` (ResNets, ConvNeXts, ViTs, ...).
    name
        Its timm name, for error messages.

    Examples
    --------
    >>> m = MultiScalePool(build_backbone("test_resnet"), "test_resnet")
    >>> m(torch.zeros(2, 3, 32, 32)).shape[1] == m.num_features
    True
    """

    def __init__(self, model: nn.Module, name: str) -> None:
        super().__init__()
        info = getattr(model, "feature_info", None)
        if not hasattr(model, "forward_intermediates") or not info:
            raise ValueError(
                f"pooling='multiscale' needs a timm backbone with forward_intermediates and "
                f"feature_info; {name!r} has none. Use pooling='global'."
            )
        self.model = model
        self.num_features = int(sum(int(f["num_chs"]) for f in info))
        self.pretrained_cfg = getattr(model, "pretrained_cfg", {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, stages = self.model.forward_intermediates(x)
        return torch.cat([f.float().mean(dim=(2, 3)) for f in stages], dim=1)


class ClsMeanPool(nn.Module):
    """A timm ViT whose output is its class token concatenated with the mean of its patch
    tokens (registers excluded): ``2 * embed_dim`` features (Virchow2's card).

    Examples
    --------
    >>> import timm
    >>> vit = timm.create_model("test_vit", num_classes=0, global_pool="")
    >>> ClsMeanPool(vit)(torch.zeros(2, 3, 160, 160)).shape[1] == 2 * vit.num_features
    True
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not hasattr(model, "forward_features") or not hasattr(model, "num_prefix_tokens"):
            raise ValueError("output 'cls+mean' needs a timm vision transformer")
        self.model = model
        self.num_features = 2 * int(cast(int, model.num_features))
        self.pretrained_cfg = getattr(model, "pretrained_cfg", {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.model.forward_features(x)  # (B, prefix + patches, C), final norm applied
        prefix = int(cast(int, self.model.num_prefix_tokens))
        return torch.cat([tokens[:, 0], tokens[:, prefix:].mean(dim=1)], dim=1)  # (B, 2C)


class StagePool(nn.Module):
    """A timm CNN whose output is the spatial mean of one stage's feature map (timm's
    ``features_only`` index ``stage``); later stages are not computed (HEST's ResNet-50).

    Examples
    --------
    >>> m = StagePool(build_backbone("resnet18"), 3)
    >>> m.num_features, m(torch.zeros(1, 3, 64, 64)).shape[1]
    (256, 256)
    """

    def __init__(self, model: nn.Module, stage: int) -> None:
        super().__init__()
        info = getattr(model, "feature_info", None)
        if not hasattr(model, "forward_intermediates") or not info or stage >= len(info):
            raise ValueError(f"output 'stage' {stage} needs a timm CNN with that many stages")
        self.model = model
        self.stage = int(stage)
        self.num_features = int(info[stage]["num_chs"])
        self.pretrained_cfg = getattr(model, "pretrained_cfg", {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (feats,) = self.model.forward_intermediates(
            x, indices=[self.stage], intermediates_only=True, stop_early=True
        )
        return feats.float().mean(dim=(2, 3))  # (B, C)


def fixed_input_size(backbone: nn.Module) -> int | None:
    """The input side a vision transformer was built for when it accepts no other (timm
    ``strict_img_size`` without ``dynamic_img_size``), else ``None`` (CNNs, dynamic ViTs).

    Examples
    --------
    >>> fixed_input_size(build_backbone("resnet18")) is None
    True
    """
    inner = getattr(backbone, "model", backbone)
    embed = getattr(inner, "patch_embed", None)
    if embed is None or getattr(inner, "dynamic_img_size", False):
        return None
    size = getattr(embed, "img_size", None)
    if not getattr(embed, "strict_img_size", False) or not size:
        return None
    return int(size[0])


def _read_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights file not found: {path}")
    with path.open("rb") as fh:
        head = fh.read(8)
    is_torch = head[:2] == b"PK" or head[:1] == b"\x80"
    try:
        if path.suffix == ".safetensors" or not is_torch:
            from safetensors.torch import load_file

            state: Any = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or unsupported file: one clear error
        raise ValueError(
            f"cannot read backbone weights {path}: {exc}. Expected a safetensors file or a torch "
            "state dict saved with torch.save (loaded with weights_only=True)."
        ) from exc
    if isinstance(state, Mapping):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in state and isinstance(state[key], Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ValueError(f"backbone weights {path} do not contain a state dict of tensors")
    return state


def load_backbone_weights(model: nn.Module, path: str | Path) -> None:
    """Load a local state dict into a ``num_classes=0`` timm backbone.

    Classifier weights in the file (the model's ``pretrained_cfg["classifier"]``) are ignored; a
    ``module.`` prefix (DDP) is stripped. Missing or unexpected keys, or shape mismatches, raise
    :class:`mclstexp.WeightsError` (a ``ValueError``) naming them.

    Examples
    --------
    >>> import tempfile, os
    >>> m = build_backbone("test_resnet")
    >>> p = os.path.join(tempfile.mkdtemp(), "w.pt"); torch.save(m.state_dict(), p)
    >>> load_backbone_weights(build_backbone("test_resnet"), p)
    """
    path = Path(path)
    state = dict(_read_state_dict(path))
    state = {k.removeprefix("module."): v for k, v in state.items()}
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier")
    if classifier:
        heads = classifier if isinstance(classifier, (list, tuple)) else (classifier,)
        state = {k: v for k, v in state.items() if not any(k.startswith(f"{h}.") for h in heads)}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise WeightsError(
            f"backbone weights {path} do not match the backbone: missing keys {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''} ({len(missing)}), unexpected keys "
            f"{unexpected[:10]}{' ...' if len(unexpected) > 10 else ''} ({len(unexpected)}). "
            "Check that the file was saved from the same timm architecture."
        )
    bad = [k for k in own if own[k].shape != state[k].shape]
    if bad:
        raise WeightsError(
            f"backbone weights {path}: shape mismatch for {bad[:10]} (e.g. {bad[0]}: file "
            f"{tuple(state[bad[0]].shape)} vs model {tuple(own[bad[0]].shape)})"
        )
    model.load_state_dict(state, strict=True)


class ImageEncoder(nn.Module):
    """Backbone features -> standardisation -> projection head.

    Images enter as ``uint8`` ``(B, H, W, 3)`` or ``(B, 3, H, W)`` (scaled to [0, 1]) or as float
    ``(B, 3, H, W)`` already in [0, 1]; the configured mean/std is applied inside the model (so the
    host sends compact uint8 batches to the device).

    Between backbone and head the features are standardised with a per-feature shift and scale
    (buffers saved with the model). They are the identity unless set by
    :meth:`fit_feature_standardization`, which frozen-encoder training calls with the training
    spots' features: the stages of a frozen backbone without pretrained weights differ in scale by
    orders of magnitude, and an unstandardised head then learns mostly from the largest ones.

    Parameters
    ----------
    backbone
        A registry name, ``"hf-hub:ORG/NAME"`` or a timm model name.
    embed_dim
        D.
    weights, drop_final_activation
        See :func:`build_backbone`.
    normalization
        ``"none"``, ``"imagenet"`` or ``"backbone"``.
    head_dropout
        Dropout of the projection head.
    pooling
        ``"global"`` or ``"multiscale"``, see :func:`build_backbone`.
    feature_views
        ``"single"`` or ``"dihedral"`` (features averaged over the 8 rotations and flips of the
        patch; see :class:`mclstexp.models.ModelConfig`).
    input_size
        0, or the smallest edge uint8 patches are reduced towards before the backbone
        (:func:`mclstexp.models.inputs.reduced_edge`, :func:`~mclstexp.models.inputs.
        downscale_patches`).
    trained_stages
        0, or the number of last backbone stages that train; the others form a frozen front
        (:class:`mclstexp.models.stages.StagedBackbone`, used for every forward pass).

    Attributes
    ----------
    settings
        The arguments that determine the backbone features (name, pooling, views,
        normalisation, ``drop_final_activation``): part of the frozen-feature cache key.
    resize_to
        The side patches are resized to (bilinear, antialiased) when it differs from theirs:
        the input size of a vision transformer that accepts no other, else ``None``.

    Examples
    --------
    >>> enc = ImageEncoder("test_resnet", embed_dim=8)
    >>> enc(torch.zeros(2, 32, 32, 3, dtype=torch.uint8)).shape
    torch.Size([2, 8])
    """

    mean: torch.Tensor
    std: torch.Tensor
    feature_shift: torch.Tensor
    feature_scale: torch.Tensor

    def __init__(
        self,
        backbone: str,
        *,
        embed_dim: int = 256,
        weights: str | Path | None = None,
        drop_final_activation: bool = False,
        normalization: str = "imagenet",
        head_dropout: float = 0.0,
        pooling: str = "global",
        feature_views: str = "single",
        input_size: int = 0,
        trained_stages: int = 0,
    ) -> None:
        super().__init__()
        if feature_views not in ("single", "dihedral"):
            raise ValueError(f"feature_views must be 'single' or 'dihedral', got {feature_views!r}")
        self.feature_views = feature_views
        self.settings = {
            "backbone": backbone,
            "pooling": pooling,
            "feature_views": feature_views,
            "image_normalization": normalization,
            "drop_final_activation": drop_final_activation,
        }
        if input_size:  # reduced patches give other features
            self.settings["input_size"] = int(input_size)
        self.backbone = build_backbone(
            backbone,
            weights=weights,
            drop_final_activation=drop_final_activation,
            pooling=pooling,
        )
        self.num_features = int(cast(int, self.backbone.num_features))
        self.input_size = int(input_size)
        self.staged: StagedBackbone | None = None
        if trained_stages:
            self.staged = StagedBackbone(
                self.backbone, trained_stages, multiscale=pooling == "multiscale"
            )
        self.resize_to = fixed_input_size(self.backbone)
        if normalization == "none":
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        elif normalization == "imagenet":
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        elif normalization == "backbone":
            cfg = getattr(self.backbone, "pretrained_cfg", {}) or {}
            mean = tuple(cfg.get("mean", IMAGENET_MEAN))
            std = tuple(cfg.get("std", IMAGENET_STD))
        else:
            raise ValueError(
                f"normalization must be 'none', 'imagenet' or 'backbone', got {normalization!r}"
            )
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("feature_shift", torch.zeros(self.num_features))
        self.register_buffer("feature_scale", torch.ones(self.num_features))
        self.head = ProjectionHead(self.num_features, embed_dim, head_dropout)

    @classmethod
    def from_config(cls, config: Any) -> ImageEncoder:
        """The image encoder a :class:`mclstexp.models.ModelConfig` describes (what
        :class:`mclstexp.models.MclSTExp` and ``mclstexp embed`` build)."""
        return cls(
            config.backbone,
            embed_dim=config.embed_dim,
            weights=config.weights,
            drop_final_activation=config.drop_final_activation,
            normalization=config.image_normalization,
            head_dropout=config.head_dropout,
            pooling=config.pooling,
            feature_views=config.feature_views,
            input_size=config.input_size,
            trained_stages=config.trained_stages,
        )

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # Checkpoints written before the standardisation existed: it was the identity.
        state_dict.setdefault(prefix + "feature_shift", torch.zeros_like(self.feature_shift))
        state_dict.setdefault(prefix + "feature_scale", torch.ones_like(self.feature_scale))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    @torch.no_grad()
    def fit_feature_standardization(self, features: torch.Tensor) -> None:
        """Set the shift and scale to the mean and standard deviation of ``features`` ``(N, F)``.

        A feature that is constant over the ``N`` rows keeps the scale 1 (it is only centred).

        Examples
        --------
        >>> enc = ImageEncoder("test_resnet", embed_dim=4)
        >>> f = torch.randn(50, enc.num_features) * 7 + 3
        >>> enc.fit_feature_standardization(f)
        >>> z = enc.standardize(f)
        >>> float(z.mean(0).abs().max()) < 1e-4, float((z.std(0) - 1).abs().max()) < 0.02
        (True, True)
        """
        f = torch.as_tensor(features, dtype=torch.float64)
        if f.dim() != 2 or f.shape[1] != self.num_features or f.shape[0] < 1:
            raise ValueError(
                f"features must be (N >= 1, {self.num_features}), got {tuple(f.shape)}"
            )
        if not torch.isfinite(f).all():
            raise ValueError("features contain NaN or infinite values")
        mean = f.mean(0)
        std = f.std(0, unbiased=False)
        floor = 1e-6 * float(std.max()) if float(std.max()) > 0 else 1.0
        scale = torch.where(std > floor, std, torch.ones_like(std))
        self.feature_shift.copy_(mean.to(self.feature_shift))
        self.feature_scale.copy_(scale.to(self.feature_scale))

    def standardize(self, features: torch.Tensor) -> torch.Tensor:
        """``(features - shift) / scale``, ``(B, F)``."""
        return (features - self.feature_shift) / self.feature_scale

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """Backbone features ``(B, F)`` -> embeddings ``(B, D)`` (standardisation + head)."""
        return self.head(self.standardize(features))

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8/float images -> normalised float ``(B, 3, H, W)``."""
        if images.dim() != 4:
            raise ValueError(f"images must be 4-D (B, H, W, 3) or (B, 3, H, W), got {images.shape}")
        if self.input_size and images.dtype == torch.uint8:
            nhwc = images if images.shape[-1] == 3 else images.permute(0, 2, 3, 1)
            edge = reduced_edge(int(nhwc.shape[1]), self.input_size)
            if nhwc.shape[1] != edge:  # as cut: reduce it
                small = downscale_patches(nhwc.contiguous().cpu().numpy(), edge)
                images = torch.from_numpy(small).to(images.device)
        if images.shape[1] != 3 and images.shape[-1] == 3:
            images = images.permute(0, 3, 1, 2)  # (B, 3, H, W)
        if images.dtype == torch.uint8:
            images = images.float().div_(255.0)
        size = self.resize_to
        if size is not None and tuple(images.shape[2:]) != (size, size):
            images = nn.functional.interpolate(
                images.float(), size=(size, size), mode="bilinear", antialias=True
            )
        return (images - self.mean) / self.std

    def _backbone(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x) if self.staged is None else self.staged(x)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features ``(B, F)`` (averaged over 8 views when ``"dihedral"``)."""
        x = self.prepare(images)  # (B, 3, H, W)
        if self.feature_views == "single":
            return self._backbone(x)
        # One view at a time: the eight copies of a batch are not held together.
        views = (dihedral_view(x, i) for i in range(8))
        return torch.stack([self._backbone(v).float() for v in views]).mean(0)

    def front_modules(self) -> list[nn.Module]:
        """The frozen front's modules (none without ``trained_stages``)."""
        return [] if self.staged is None else self.staged.front_modules()

    def forward(self, images: torch.Tensor | FrontOutput) -> torch.Tensor:
        """Embeddings ``(B, D)`` of images, or of a frozen front's cached output."""
        if isinstance(images, FrontOutput):
            if self.staged is None:
                raise ValueError("a FrontOutput needs an encoder built with trained_stages >= 1")
            return self.project(self.staged.back(images))
        return self.project(self.features(images))  # (B, D)
