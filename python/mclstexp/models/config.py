"""Configuration of the model and of its training: two dataclasses and named JSON presets.

A preset is a JSON file ``{"model": {...}, "train": {...}}`` in ``mclstexp/models/presets``:

``paper``
    The original's settings, unchanged: ImageNet DenseNet-121 (``weights="pretrained"``: the
    torchvision weights from the Hugging Face hub; final ReLU dropped), batch 128, Adam with
    coupled weight decay (lr 1e-4, wd 1e-3), 90 epochs, fp32, the batch is the attention sequence,
    65,536-row position tables, images in [0, 1] without mean/std.
``legacy``
    The original's behaviour where it matters for comparing with the paper (method.md §7), with
    our engineering (AMP on CUDA): ImageNet DenseNet-121, batch-as-sequence, 65,536-row position
    tables indexed by array coordinates, no ImageNet normalisation, legacy expression
    normalisation.
``default``
    The fixed method: one expression normalisation, ImageNet mean/std, position tables sized from
    the data, attention sequences built from spatial neighbourhoods within a section (identical in
    training and inference), negatives gathered across GPUs.
``cpu``
    Small and fast for a CPU, no download: ResNet-18 under the ``default`` spot encoder, 15
    epochs, in two *variants* trained side by side in every fold of ``mclstexp run``, the one
    with the better inner-CV score on the training sections kept (:func:`load_variants`):
    ``frozen`` (the base configuration: features computed once per patch, pooled over every stage
    and averaged over the patch's 8 rotations and flips, standardised on the training spots) and
    ``trained`` (the last two stages trained through the contrastive loss at 112 px, the frozen
    front's outputs cached). Random initialisation unless given weights.
``fm``
    Frozen foundation-model features: H-optimus-0's published weights (the best-ranked encoder
    of HEST-Benchmark that asks for no access request, see
    :func:`mclstexp.models.encoders.default_foundation_encoder`), patches at its geometry (224 px
    at 0.5 um/px), features computed once per patch and stored beside the patch cache; the
    spot encoder and both heads train on top.

``paper`` and ``legacy`` download DenseNet-121's ImageNet weights once (the Hugging Face cache;
offline: ``HF_HUB_OFFLINE=1`` with the cache filled, or ``model__weights=PATH``); ``fm`` its
encoder's (see :mod:`mclstexp.models.hub`).

Examples
--------
>>> from mclstexp.models import load_preset
>>> model_cfg, train_cfg = load_preset("paper")
>>> model_cfg.backbone, train_cfg.batch_size, train_cfg.epochs
('densenet121', 128, 90)
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, NamedTuple

SequenceMode = Literal["batch", "neighbourhood"]

__all__ = ["ModelConfig", "Preset", "TrainConfig", "list_presets", "load_preset", "load_variants"]


@dataclass
class ModelConfig:
    """Architecture of :class:`mclstexp.models.MclSTExp` (method.md §3).

    Parameters
    ----------
    backbone
        A registry encoder (:func:`mclstexp.models.list_encoders`: ``"uni"``,
        ``"h-optimus-0"``, ...), ``"hf-hub:ORG/NAME"`` or any timm model name
        (``timm.list_models()``); built with ``num_classes=0``.
    weights
        ``None`` (random initialisation), ``"pretrained"`` (the encoder's published weights from
        the Hugging Face hub, downloaded once into its cache; ``HF_HOME``, ``HF_HUB_OFFLINE``
        and ``HF_TOKEN`` apply) or a local file (safetensors or a torch state dict).
    drop_final_activation
        Drop the backbone's last activation before pooling (the original does for DenseNet-121).
    pooling
        ``"global"`` (the backbone's own pooling of its last stage; the method) or
        ``"multiscale"`` (the mean of every stage's feature map, concatenated: better frozen
        features from a backbone without pretrained weights, see
        :class:`mclstexp.models.image_encoder.MultiScalePool`).
    feature_views
        ``"single"`` (the patch as it is; the method) or ``"dihedral"``: the backbone features are
        the mean over the patch's 8 rotations and flips, in training and at inference alike, so
        the encoder is exactly invariant to the orientation of the slide (H&E has none). The
        frozen-encoder analogue of flip/rotation augmentation, which frozen features cannot get;
        it costs 8 backbone passes per patch.
    image_normalization
        ``"none"`` (images in [0, 1], the original), ``"imagenet"`` or ``"backbone"`` (the timm
        model's own mean/std).
    input_size
        0: the backbone sees the patch as cut (the method). Else the patch is reduced by block
        averaging by the largest integer factor that keeps at least ``input_size`` pixels
        (112 from 224: 4x fewer pixels, about 4x less compute; a 64 px patch stays as it is),
        in training and at inference alike (:func:`mclstexp.models.inputs.reduced_edge`).
    trained_stages
        0: every backbone stage trains (unless ``TrainConfig.freeze_backbone``). ``k`` >= 1: only
        the last ``k`` stages train; the earlier ones form a frozen front (eval mode, no
        gradients) whose output is rounded to float16, so it can be computed once per patch and
        cached (:mod:`mclstexp.models.stages`, ``TrainConfig.stage_cache``).
    n_genes
        G, the number of panel genes (set from the data by the trainer when 0).
    embed_dim
        D, the shared embedding size (256).
    n_heads, head_dim, n_blocks
        The spot Transformer: 8 heads x 64, 2 pre-norm blocks.
    position_rows, position_cols
        Rows of the position tables Px (indexed by ``array_col``) and Py (indexed by
        ``array_row``); 0 = sized from the training data (max coordinate + 1 + ``position_margin``).
        The original uses 65,536 for both.
    position_margin
        Extra rows added when sizing from data, so held-out sections with slightly larger array
        coordinates still index trained-size tables (coordinates beyond the table are clamped).
    compact_positions
        Store only the rows of fixed-size position tables (e.g. the original's 65,536) that the
        training coordinates can reach: up to the largest training coordinate +
        ``position_margin``. The trainer then sets ``position_rows``/``position_cols`` to the
        stored rows and ``position_init_rows``/``position_init_cols`` to the configured sizes,
        whose N(0, 1) initialisation is drawn in full and cut, so every stored row, the other
        parameters and training are exactly those of the full tables (rows never indexed get no
        gradient; Adam and weight decay act per element). Only a spot whose coordinate lies
        beyond the stored rows is embedded differently: clamped to the last stored row instead
        of its own untrained row. Two 65,536 x 785 tables, their gradients and Adam state are
        about 1.6 GB; stored, a few MB.
    position_init_rows, position_init_cols
        Set by the trainer with ``compact_positions`` (0 = the stored size).
    attention_dropout, head_dropout
        0 in mclSTExp (BLEEP uses 0.1 in the heads).
    sequence
        What forms one attention sequence. ``"batch"`` (legacy): the training mini-batch of
        random spots pooled over sections is one sequence, and inference embeds runs of
        ``inference_sequence_length`` consecutive spots in file order, so a spot's embedding
        depends on the batch it lands in and differs between training and inference.
        ``"neighbourhood"`` (default): each section is cut once into compact groups of
        ``sequence_length`` spatially adjacent spots (Hilbert-curve order on array coordinates);
        a group is one sequence in training and in inference, so embeddings are deterministic
        and the context is the spot's real spatial neighbourhood.
    sequence_length
        Spots per neighbourhood sequence.
    inference_sequence_length
        Run length used by ``"batch"`` mode at inference (32 in the original).
    logit_scale
        1 / tau of the contrastive logits (tau = 1 in mclSTExp).
    learn_logit_scale
        Train log(logit_scale) as CLIP does (off in mclSTExp).
    """

    backbone: str = "densenet121"
    weights: str | None = None
    drop_final_activation: bool = False
    pooling: Literal["global", "multiscale"] = "global"
    feature_views: Literal["single", "dihedral"] = "single"
    image_normalization: Literal["none", "imagenet", "backbone"] = "imagenet"
    input_size: int = 0
    trained_stages: int = 0
    n_genes: int = 0
    embed_dim: int = 256
    n_heads: int = 8
    head_dim: int = 64
    n_blocks: int = 2
    position_rows: int = 0
    position_cols: int = 0
    position_margin: int = 8
    compact_positions: bool = False
    position_init_rows: int = 0
    position_init_cols: int = 0
    attention_dropout: float = 0.0
    head_dropout: float = 0.0
    sequence: SequenceMode = "neighbourhood"
    sequence_length: int = 32
    inference_sequence_length: int = 32
    logit_scale: float = 1.0
    learn_logit_scale: bool = False

    def __post_init__(self) -> None:
        if self.sequence not in ("batch", "neighbourhood"):
            raise ValueError(
                f"ModelConfig.sequence must be 'batch' or 'neighbourhood', got {self.sequence!r}"
            )
        if self.pooling not in ("global", "multiscale"):
            raise ValueError(
                f"ModelConfig.pooling must be 'global' or 'multiscale', got {self.pooling!r}"
            )
        if self.feature_views not in ("single", "dihedral"):
            raise ValueError(
                "ModelConfig.feature_views must be 'single' or 'dihedral', "
                f"got {self.feature_views!r}"
            )
        if self.image_normalization not in ("none", "imagenet", "backbone"):
            raise ValueError(
                "ModelConfig.image_normalization must be 'none', 'imagenet' or 'backbone', "
                f"got {self.image_normalization!r}"
            )
        for name in ("input_size", "trained_stages"):
            if getattr(self, name) < 0:
                raise ValueError(f"ModelConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("embed_dim", "n_heads", "head_dim", "n_blocks", "sequence_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"ModelConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.logit_scale <= 0:
            raise ValueError(f"ModelConfig.logit_scale must be > 0, got {self.logit_scale}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of the fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from a dict; unknown keys raise ``ValueError`` naming them."""
        return _from_dict(cls, data)


@dataclass
class TrainConfig:
    """How to train (method.md §3 "Optimisation" and §2 "Augmentation").

    Parameters
    ----------
    epochs, batch_size
        90 and 128 in the original. ``batch_size`` is per process (per GPU); under DDP the
        contrastive loss sees ``world_size * batch_size`` spots. In ``"neighbourhood"`` mode a
        batch holds ``batch_size // sequence_length`` whole sequences.
    lr, weight_decay, optimizer
        Adam with coupled weight decay (``"adam"``, the original's code) or ``"adamw"``.
    scheduler
        ``"none"`` (the original) or ``"cosine"`` (per epoch, to 0).
    loss
        ``"clip"`` (symmetric InfoNCE, identity targets) or ``"soft"`` (BLEEP's soft targets).
    loss_lambda
        Weight of the spot-to-image term; 1 - lambda weights the image-to-spot term.
    augment
        Colour jitter 0.5/0.5/0.5, horizontal flip, rotation in [-180, 180] (training only).
    augment_on
        Where augmentation runs: ``"loader"`` (CPU, in the DataLoader workers), ``"device"``
        (batched on the training device after the uint8 transfer) or ``"auto"`` (device on
        CUDA, loader on CPU). Same random draws either way.
    amp
        ``"auto"`` (bf16 on CUDA when supported, else fp16; fp32 on CPU), ``"bf16"``,
        ``"fp16"`` or ``"none"``.
    grad_clip
        Clip the global gradient norm to this value (None = off).
    freeze_backbone
        Frozen-encoder mode: backbone features are computed once per patch (eval mode, no
        augmentation) and cached in the run directory; only the spot encoder and both heads train.
    num_workers
        DataLoader worker processes (0 = load in the main process).
    patch_size, patch_mpp
        The patches' side in pixels and microns per pixel (``None``: the slide's own
        resolution); recorded so inference cuts patches as training did.
    stage_cache
        With ``ModelConfig.trained_stages`` >= 1: the frozen front's output is computed once
        for each training patch in each of its 8 rotations and flips (and kept in memory), and
        every step draws one of the 8 per spot instead of the loader's augmentation (colour
        jitter and free rotation would change the front's input, so they are off). Only the
        trained stages run per step.
    """

    epochs: int = 90
    batch_size: int = 128
    lr: float = 1e-4
    weight_decay: float = 1e-3
    optimizer: Literal["adam", "adamw"] = "adam"
    scheduler: Literal["none", "cosine"] = "none"
    loss: Literal["clip", "soft"] = "clip"
    loss_lambda: float = 0.5
    augment: bool = True
    augment_on: Literal["auto", "loader", "device"] = "auto"
    amp: Literal["auto", "bf16", "fp16", "none"] = "auto"
    grad_clip: float | None = None
    freeze_backbone: bool = False
    num_workers: int = 0
    expression_normalization: Literal["default", "legacy_spot"] = "default"
    patch_size: int = 224
    patch_mpp: float | None = None
    stage_cache: bool = False
    ssl_epochs: int = 0
    ssl_temperature: float = 0.2
    ssl_crop: float = 0.75

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("TrainConfig.epochs and TrainConfig.batch_size must be >= 1")
        if self.ssl_epochs < 0 or self.ssl_temperature <= 0 or not 0 < self.ssl_crop <= 1:
            raise ValueError(
                "TrainConfig.ssl_epochs must be >= 0, ssl_temperature > 0 and ssl_crop in (0, 1]"
            )
        if not 0.0 <= self.loss_lambda <= 1.0:
            raise ValueError(f"TrainConfig.loss_lambda must be in [0, 1], got {self.loss_lambda}")
        choices = {
            "optimizer": ("adam", "adamw"),
            "scheduler": ("none", "cosine"),
            "loss": ("clip", "soft"),
            "amp": ("auto", "bf16", "fp16", "none"),
            "expression_normalization": ("default", "legacy_spot"),
            "augment_on": ("auto", "loader", "device"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"TrainConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}"
                )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of the fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a dict; unknown keys raise ``ValueError`` naming them."""
        return _from_dict(cls, data)


class Preset(NamedTuple):
    """A model and a training configuration; unpacks as ``model_cfg, train_cfg = preset``."""

    model: ModelConfig
    train: TrainConfig


def _from_dict(cls: Any, data: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(
            f"unknown {cls.__name__} field(s) {unknown}; valid fields: {sorted(names)}"
        )
    defaults = cls()
    wrong = [
        f"{cls.__name__}.{key}={value!r} (expected {type(default).__name__})"
        for key, value in data.items()
        if not _same_kind(value, default := getattr(defaults, key))
    ]
    if wrong:
        raise ValueError(f"wrong type: {', '.join(wrong)}")
    return cls(**data)


def _same_kind(value: Any, default: Any) -> bool:
    """Whether ``value`` (from JSON) can stand for a field whose default is ``default``."""
    if default is None or value is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) == isinstance(default, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float)) and (
            isinstance(default, float) or value == int(value)
        )
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


def list_presets() -> list[str]:
    """Names of the bundled presets.

    Examples
    --------
    >>> "default" in list_presets()
    True
    """
    folder = resources.files("mclstexp.models") / "presets"
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def _preset_data(name: str | Path) -> tuple[dict[str, Any], str]:
    """A preset's JSON object (bundled name or file) and its label for messages."""
    path = Path(name)
    if path.suffix == ".json" or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"preset file not found: {path}")
        text, label = path.read_text(), str(path)
    else:
        res = resources.files("mclstexp.models") / "presets" / f"{name}.json"
        if not res.is_file():
            raise ValueError(f"unknown preset {name!r}; bundled presets: {list_presets()}")
        text, label = res.read_text(), str(name)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"preset {label} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or set(data) - {"model", "train", "description", "variants"}:
        raise ValueError(f"preset {label} must be an object with keys 'model' and 'train'")
    return data, label


def _build(label: str, model: dict, train: dict, overrides: dict[str, Any]) -> Preset:
    model, train = dict(model), dict(train)
    for key, value in overrides.items():
        part, _, field_name = key.partition("__")
        if part == "model":
            model[field_name] = value
        elif part == "train":
            train[field_name] = value
        else:
            raise ValueError(f"override {key!r} must start with 'model__' or 'train__'")
    try:
        return Preset(ModelConfig.from_dict(model), TrainConfig.from_dict(train))
    except (TypeError, ValueError) as err:  # a wrong type fails a comparison: TypeError
        raise ValueError(f"preset {label}: {err} (check the field's type and range)") from err


def load_preset(name: str | Path, **overrides: Any) -> Preset:
    """Load a named preset (or a JSON file with the same layout).

    Parameters
    ----------
    name
        ``"paper"``, ``"legacy"``, ``"default"``, ``"cpu"``, ``"fm"`` (see :func:`list_presets`) or
        the path
        of a JSON file ``{"model": {...}, "train": {...}}``.
    **overrides
        Field overrides, ``model__<field>=...`` or ``train__<field>=...``.

    Returns
    -------
    Preset
        ``(model, train)`` configurations. A preset with ``"variants"`` (see
        :func:`load_variants`) gives its base configuration here.

    Examples
    --------
    >>> m, t = load_preset("cpu", train__epochs=3)
    >>> t.epochs
    3
    """
    data, label = _preset_data(name)
    load_variants(name)  # a preset with a broken variant fails on load, whatever runs it
    return _build(label, data.get("model", {}), data.get("train", {}), overrides)


def load_variants(name: str | Path, **overrides: Any) -> dict[str, Preset]:
    """A preset's variants: configurations that the fold runner trains side by side, keeping in
    each fold the one with the best inner-CV score on the training sections
    (:func:`mclstexp.workflow.run_fold`); empty for a preset without ``"variants"``.

    ``"variants": {"<name>": {"model": {...}, "train": {...}}, ...}`` in the preset's JSON; each
    variant is the base configuration with its fields replaced, then ``overrides`` on top.

    Examples
    --------
    >>> sorted(load_variants("cpu", train__epochs=2))
    ['frozen', 'trained']
    >>> v = load_variants("cpu", train__epochs=2)["trained"]
    >>> v.model.trained_stages, v.train.freeze_backbone, v.train.epochs
    (2, False, 2)
    >>> load_variants("paper")
    {}
    """
    data, label = _preset_data(name)
    variants = data.get("variants", {})
    if not isinstance(variants, dict):
        raise ValueError(f"preset {label}: 'variants' must be an object of named variants")
    out = {}
    for vname, variant in variants.items():
        if not isinstance(variant, dict) or set(variant) - {"model", "train", "description"}:
            raise ValueError(
                f"preset {label}: variant {vname!r} must be an object with keys 'model' and "
                "'train' (the fields it changes)"
            )
        model = {**data.get("model", {}), **variant.get("model", {})}
        train = {**data.get("train", {}), **variant.get("train", {})}
        out[str(vname)] = _build(f"{label} (variant {vname!r})", model, train, overrides)
    if len(out) == 1:
        raise ValueError(f"preset {label}: 'variants' needs two or more variants to choose from")
    return out
