"""The encoder registry: named image encoders with their hub id, architecture and geometry.

An entry says everything needed to build an encoder the way its model card prescribes and to
feed it what it was trained on: the Hugging Face hub id of the weights, the timm architecture
and keyword arguments, how the output feature is formed, its size ``dim``, the input size in
pixels and the microns per pixel (``mpp``) of its training patches, the normalisation mean/std,
whether the hub asks for an access request (``gated``) and a licence note. No torch import here:
listing encoders is cheap.

Where each number comes from (sources read for this table):

- **HEST**: mahmoodlab/HEST at commit afd42c3 (2025-09-01), ``src/hest/bench/cpath_model_zoo/
  inference_models.py`` (the benchmark's encoder loaders) and ``README.md`` (the HEST-Benchmark
  table: mean Pearson over 9 tasks, 50 HVGs, PCA-256 + ridge);
  ``bench_config/bench_config.yaml`` marks which encoders need an access request.
- **TRIDENT**: mahmoodlab/TRIDENT at commit a91fa84, ``trident/patch_encoder_models/load.py``
  (the timm keyword arguments used to rebuild each architecture for a local checkpoint, which
  must match the hub's ``config.json`` for a strict load).
- **timm**: the architecture definitions of timm 1.0 (``vision_transformer.py``,
  ``densenet.py``, ``resnet.py``).
- **card**: the model card on the Hugging Face hub, as quoted by the loaders above or by the
  card's own usage code; licence notes are as the cards state them and were not re-checked here
  (there is no network to the hub on this machine): read the model page before use.

``dim`` of every entry is checked by a test that builds the architecture on the ``meta`` device.

Examples
--------
>>> "h-optimus-0" in list_encoders()
True
>>> info = encoder_info("h-optimus-0")
>>> info.dim, info.input_size, info.mpp, info.gated
(1536, 224, 0.5, False)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = [
    "EncoderInfo",
    "default_foundation_encoder",
    "encoder_geometry",
    "encoder_info",
    "is_registered",
    "list_encoders",
]

#: ImageNet normalisation (torchvision/timm ``IMAGENET_DEFAULT_MEAN/STD``).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: H-optimus normalisation. Source: card of bioptimus/H-optimus-0 (quoted by HEST's
#: HOptimus0InferenceEncoder and TRIDENT's HOptimus0/1InferenceEncoder).
HOPTIMUS_MEAN = (0.707223, 0.578729, 0.703617)
HOPTIMUS_STD = (0.211883, 0.230117, 0.177517)

Output = Literal["pooled", "cls+mean", "stage"]


@dataclass(frozen=True)
class EncoderInfo:
    """One registry entry (see the module docstring for the sources).

    Attributes
    ----------
    name
        Registry name (what ``ModelConfig.backbone`` and ``--encoder`` take).
    hub_id
        Hugging Face repository of the weights (``weights="pretrained"`` loads
        ``hf-hub:<hub_id>`` through timm; the model page is ``https://huggingface.co/<hub_id>``).
    architecture
        timm architecture built for ``weights=None`` or a local ``weights=PATH``.
    kwargs
        timm keyword arguments that rebuild the architecture (for ``weights=None`` and
        ``weights=PATH``; JSON-able: layers are named, e.g. ``"mlp_layer": "SwiGLUPacked"``,
        ``"act_layer": "silu"``); ``num_classes=0`` is added.
    hub_kwargs
        The keyword arguments the card passes with ``timm.create_model("hf-hub:<hub_id>",
        pretrained=True, ...)`` (the rest comes from the hub's ``config.json``).
    output
        ``"pooled"``: the model's own pooled output (a ViT's class token, a CNN's global mean);
        ``"cls+mean"``: class token concatenated with the mean of the patch tokens (registers
        excluded); ``"stage"``: the spatial mean of stage ``stage``'s feature map (timm
        ``features_only`` index; HEST's ResNet-50 stops after its third block).
    dim
        Size of the feature the encoder returns.
    input_size
        Patch side in pixels it was trained on (patches of another size are resized for ViTs
        with a fixed input size).
    mpp
        Microns per pixel of its training patches; ``None`` for ImageNet encoders (not trained
        on tissue: no magnification; a preset naming one tiles at the dataset's geometry).
    mean, std
        Normalisation of [0, 1] RGB input (``image_normalization="backbone"`` uses them).
    gated
        The hub asks for an access request (and a token) before the weights download.
    licence
        Licence note (read the model page).
    hest_pearson
        Mean Pearson on HEST-Benchmark as published in HEST's README (``None`` where the README
        does not list the encoder).
    stage
        Stage index for ``output="stage"``.
    """

    name: str
    hub_id: str
    architecture: str
    kwargs: dict[str, Any] = field(hash=False)
    hub_kwargs: dict[str, Any] = field(hash=False)
    output: Output
    dim: int
    input_size: int
    mpp: float | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    gated: bool
    licence: str
    hest_pearson: float | None = None
    stage: int | None = None

    @property
    def model_page(self) -> str:
        """``https://huggingface.co/<hub_id>``: the card, and where access is requested."""
        return f"https://huggingface.co/{self.hub_id}"

    def identity(self) -> dict[str, Any]:
        """What determines the features besides the weights (enters the feature-cache key)."""
        keys = ("name", "hub_id", "architecture", "kwargs", "hub_kwargs", "output", "stage")
        return {k: v for k, v in asdict(self).items() if k in keys}


_VIT_L16 = {"img_size": 224, "patch_size": 16, "init_values": 1e-5, "dynamic_img_size": True}
_SWIGLU = {"mlp_layer": "SwiGLUPacked", "act_layer": "silu"}
#: UNI2-h's card passes these to timm.create_model("hf-hub:MahmoodLab/UNI2-h", ...) (quoted by
#: TRIDENT UNIv2InferenceEncoder).
_UNI2_H = {
    "img_size": 224,
    "patch_size": 14,
    "depth": 24,
    "num_heads": 24,
    "init_values": 1e-5,
    "embed_dim": 1536,
    "mlp_ratio": 2.66667 * 2,
    "no_embed_class": True,
    **_SWIGLU,
    "reg_tokens": 8,
    "dynamic_img_size": True,
}

_ENTRIES = (
    # The paper's encoder: torchvision's ImageNet DenseNet-121 (timm tag tv_in1k; timm's default
    # tag is ra_in1k). Source: timm densenet.py default_cfgs; 1024 = norm5 channels.
    EncoderInfo(
        name="densenet121",
        hub_id="timm/densenet121.tv_in1k",
        architecture="densenet121",
        kwargs={},
        hub_kwargs={},
        output="pooled",
        dim=1024,
        input_size=224,
        mpp=None,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        gated=False,
        licence="BSD-3-Clause (torchvision ImageNet weights)",
    ),
    # HEST's baseline: resnet50.tv_in1k, features_only=True, out_indices=[3] + global average
    # pool -> 1024-d (the third residual stage). Source: HEST ResNet50InferenceEncoder, TRIDENT
    # ResNet50InferenceEncoder; HEST README: 0.326.
    EncoderInfo(
        name="resnet50",
        hub_id="timm/resnet50.tv_in1k",
        architecture="resnet50",
        kwargs={},
        hub_kwargs={},
        output="stage",
        stage=3,
        dim=1024,
        input_size=224,
        mpp=None,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        gated=False,
        licence="BSD-3-Clause (torchvision ImageNet weights)",
        hest_pearson=0.326,
    ),
    # UNI: ViT-L/16, init_values=1e-5 (card; HEST passes 1.0, the same once weights load),
    # dynamic_img_size=True; class token 1024-d; 0.5 um/px (20x); ImageNet mean/std. Sources:
    # card usage quoted by TRIDENT UNIInferenceEncoder; HEST README: 0.3862.
    EncoderInfo(
        name="uni",
        hub_id="MahmoodLab/UNI",
        architecture="vit_large_patch16_224",
        kwargs=dict(_VIT_L16),
        hub_kwargs={"init_values": 1e-5, "dynamic_img_size": True},
        output="pooled",
        dim=1024,
        input_size=224,
        mpp=0.5,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        gated=True,
        licence="CC-BY-NC-ND-4.0 (card); access request on the model page",
        hest_pearson=0.3862,
    ),
    # UNI2-h: ViT-H/14-like giant (depth 24, 24 heads, embed 1536, SwiGLU, 8 registers);
    # class token 1536-d. Source: card's timm_kwargs as in TRIDENT UNIv2InferenceEncoder.
    EncoderInfo(
        name="uni2-h",
        hub_id="MahmoodLab/UNI2-h",
        architecture="vit_giant_patch14_224",
        kwargs=dict(_UNI2_H),
        hub_kwargs=dict(_UNI2_H),
        output="pooled",
        dim=1536,
        input_size=224,
        mpp=0.5,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        gated=True,
        licence="CC-BY-NC-ND-4.0 (card); access request on the model page",
    ),
    # H-optimus-0: DINOv2 ViT-g/14 with 4 registers, init_values=1e-5, dynamic_img_size=False
    # (card usage, quoted by HEST HOptimus0InferenceEncoder); its own mean/std; 224 px at
    # 0.5 um/px; class token 1536-d. No access request (HEST bench_config lists it without
    # "uncomment after requesting the weights"); Apache-2.0 (hub page). HEST README: 0.4146,
    # the best-ranked encoder there.
    EncoderInfo(
        name="h-optimus-0",
        hub_id="bioptimus/H-optimus-0",
        architecture="vit_giant_patch14_reg4_dinov2",
        kwargs={"img_size": 224, "init_values": 1e-5, "dynamic_img_size": False},
        hub_kwargs={"init_values": 1e-5, "dynamic_img_size": False},
        output="pooled",
        dim=1536,
        input_size=224,
        mpp=0.5,
        mean=HOPTIMUS_MEAN,
        std=HOPTIMUS_STD,
        gated=False,
        licence="Apache-2.0 (hub page)",
        hest_pearson=0.4146,
    ),
    # H-optimus-1: the same architecture and normalisation as H-optimus-0 (TRIDENT
    # HOptimus1InferenceEncoder); gated (access for academic research, hub discussions show
    # pending requests). Not in HEST's README table; Bioptimus reports a higher HEST mean than
    # H-optimus-0 (not verified here).
    EncoderInfo(
        name="h-optimus-1",
        hub_id="bioptimus/H-optimus-1",
        architecture="vit_giant_patch14_reg4_dinov2",
        kwargs={"img_size": 224, "init_values": 1e-5, "dynamic_img_size": False},
        hub_kwargs={"init_values": 1e-5, "dynamic_img_size": False},
        output="pooled",
        dim=1536,
        input_size=224,
        mpp=0.5,
        mean=HOPTIMUS_MEAN,
        std=HOPTIMUS_STD,
        gated=True,
        licence="non-commercial research terms (card); access request on the model page",
    ),
    # H0-mini: ViT-B/14 with 4 registers distilled from H-optimus-0, SwiGLUPacked + SiLU (card
    # usage); the card's output is (1, 261, 768) tokens and it shows the class token and its
    # concatenation with the patch mean; HEST benchmarks the class token (return_cls=True), as
    # here: 768-d. H-optimus mean/std (docs.bioptimus.com ModelSpec). kwargs' mlp_ratio is
    # inferred, not published outside the hub's config.json (which pretrained loads use): DINOv2's
    # SwiGLU width 2/3 * 4 * 768 = 2048, packed 4096 = 768 * 5.3333, as timm's dinov2 giants; a
    # weights=PATH file that does not fit says so. Gated. HEST README: 0.3957.
    EncoderInfo(
        name="h0-mini",
        hub_id="bioptimus/H0-mini",
        architecture="vit_base_patch14_reg4_dinov2",
        kwargs={"img_size": 224, "mlp_ratio": 2.66667 * 2, "global_pool": "token", **_SWIGLU},
        hub_kwargs={"global_pool": "token", **_SWIGLU},
        output="pooled",
        dim=768,
        input_size=224,
        mpp=0.5,
        mean=HOPTIMUS_MEAN,
        std=HOPTIMUS_STD,
        gated=True,
        licence="CC-BY-NC-ND-4.0 (card); access request on the model page",
        hest_pearson=0.3957,
    ),
    # Virchow2: ViT-H/14, 4 registers, SwiGLUPacked + SiLU, mlp_ratio 5.3375, init_values 1e-5;
    # output = class token ++ mean of the patch tokens (tokens 5:) = 2560-d (card, HEST
    # Virchow2InferenceEncoder); ImageNet mean/std; trained at 5x-40x, used at 0.5 um/px here.
    # Kwargs: TRIDENT Virchow2InferenceEncoder. Gated. HEST README: 0.3984.
    EncoderInfo(
        name="virchow2",
        hub_id="paige-ai/Virchow2",
        architecture="vit_huge_patch14_224",
        kwargs={
            "img_size": 224,
            "init_values": 1e-5,
            "reg_tokens": 4,
            "mlp_ratio": 5.3375,
            "global_pool": "",
            "dynamic_img_size": True,
            **_SWIGLU,
        },
        hub_kwargs=dict(_SWIGLU),
        output="cls+mean",
        dim=2560,
        input_size=224,
        mpp=0.5,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        gated=True,
        licence="CC-BY-NC-ND-4.0 (card); access request on the model page",
        hest_pearson=0.3984,
    ),
    # Prov-GigaPath tile encoder: DINOv2 ViT-g with patch 16, embed 1536, depth 40, 24 heads,
    # mlp_ratio 5.33334 (SwiGLU from the timm dinov2 giant definition); class token 1536-d;
    # ImageNet mean/std; the card resizes 256 -> centre crop 224, here patches are cut at 224 px.
    # Kwargs: TRIDENT GigaPathInferenceEncoder. Gated. HEST README: 0.3853.
    EncoderInfo(
        name="gigapath",
        hub_id="prov-gigapath/prov-gigapath",
        architecture="vit_giant_patch14_dinov2",
        kwargs={
            "img_size": 224,
            "in_chans": 3,
            "patch_size": 16,
            "embed_dim": 1536,
            "depth": 40,
            "num_heads": 24,
            "mlp_ratio": 5.33334,
            "dynamic_img_size": True,
        },
        hub_kwargs={},
        output="pooled",
        dim=1536,
        input_size=224,
        mpp=0.5,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        gated=True,
        licence="Prov-GigaPath terms (card); access request on the model page",
        hest_pearson=0.3853,
    ),
)

#: name -> entry (tests may add entries pointed at a fake hub).
REGISTRY: dict[str, EncoderInfo] = {e.name: e for e in _ENTRIES}


def list_encoders() -> list[str]:
    """Names of the registered encoders, in table order.

    Examples
    --------
    >>> list_encoders()[:2]
    ['densenet121', 'resnet50']
    """
    return list(REGISTRY)


def is_registered(name: str) -> bool:
    """Whether ``name`` is a registry name (not a plain timm name or ``hf-hub:`` id).

    Examples
    --------
    >>> is_registered("uni"), is_registered("resnet18")
    (True, False)
    """
    return name in REGISTRY


def encoder_info(name: str) -> EncoderInfo:
    """The registry entry ``name``.

    Raises
    ------
    mclstexp.WeightsError
        ``name`` is not registered (the message lists the names).

    Examples
    --------
    >>> encoder_info("virchow2").dim
    2560
    """
    try:
        return REGISTRY[name]
    except KeyError:
        from mclstexp.exceptions import WeightsError

        raise WeightsError(
            f"unknown encoder {name!r}: registered encoders are {list_encoders()}; a timm model "
            "name or 'hf-hub:ORG/NAME' also works as ModelConfig.backbone"
        ) from None


def encoder_geometry(name: str) -> tuple[int, float] | None:
    """``(input_size, mpp)`` patches for encoder ``name`` are cut at, or ``None`` when it has no
    preferred magnification (not registered, or an ImageNet entry).

    Examples
    --------
    >>> encoder_geometry("uni"), encoder_geometry("densenet121"), encoder_geometry("resnet18")
    ((224, 0.5), None, None)
    """
    info = REGISTRY.get(name)
    if info is None or info.mpp is None:
        return None
    return info.input_size, float(info.mpp)


def default_foundation_encoder() -> str:
    """The best-ranked registered encoder (HEST README mean Pearson) that asks for no access
    request: the encoder of the ``fm`` preset.

    Examples
    --------
    >>> default_foundation_encoder()
    'h-optimus-0'
    """
    open_ = [e for e in REGISTRY.values() if not e.gated and e.hest_pearson and e.mpp]
    return max(open_, key=lambda e: e.hest_pearson or 0.0).name
