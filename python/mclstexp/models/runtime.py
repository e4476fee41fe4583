"""Where and how the model runs: device resolution, mixed precision, pooled backbone features.

What both training (:mod:`mclstexp.train`) and inference (:mod:`mclstexp.tl`) need to run the
model lives here, so that neither imports the other:

- :func:`resolve_device`: ``"auto"`` -> CUDA when available, else CPU;
- :func:`autocast`, :func:`precision`: the mixed-precision context of a device (bf16/fp16 on
  CUDA, none on CPU) and its compute dtype;
- :func:`backbone_features`: pooled backbone features of patches in batches, eval mode (what
  frozen-encoder mode computes once per patch, cached by :mod:`mclstexp.models.features`);
- :func:`check_patches`: the ``[N, H, W, 3]`` uint8 contract of patch arrays.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

__all__ = ["autocast", "backbone_features", "check_patches", "precision", "resolve_device"]


def resolve_device(device: Any = "auto") -> Any:
    """``"auto"`` -> CUDA when available, else CPU; anything else -> ``torch.device(device)``.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    import torch

    if isinstance(device, torch.device):
        return device
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"device: {device!r} is not a device (auto, cpu, cuda, cuda:1, mps, ...): {err}"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available; use device='cpu'")
    return dev


def precision(device: Any, amp: str = "auto") -> str:
    """The compute dtype :func:`autocast` gives on ``device``: ``"float32"``, ``"bfloat16"`` or
    ``"float16"``.

    Examples
    --------
    >>> import torch
    >>> precision(torch.device("cpu"))
    'float32'
    """
    import torch

    if device.type != "cuda" or amp == "none":
        return "float32"
    if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
        return "float16"
    return "bfloat16"


def autocast(device: Any, amp: str = "auto") -> Any:
    """The mixed-precision context for ``device``.

    On CUDA: ``amp="auto"`` uses bf16 where supported, else fp16; ``"bf16"``/``"fp16"`` force one;
    ``"none"`` disables it. On any other device it is a no-op context (float32); see
    :func:`precision`.

    Examples
    --------
    >>> import torch
    >>> with autocast(torch.device("cpu")):
    ...     pass
    """
    import torch

    dtype = precision(device, amp)
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=getattr(torch, dtype))


def check_patches(patches: Any) -> None:
    """Raise ``ValueError`` unless ``patches`` is an ``[N, H, W, 3]`` uint8 array-like.

    Examples
    --------
    >>> check_patches(np.zeros((2, 8, 8, 3), np.uint8))
    >>> check_patches(np.zeros((2, 8, 8), np.uint8))
    Traceback (most recent call last):
    ...
    ValueError: patches must be [N, H, W, 3] uint8, got shape (2, 8, 8)
    """
    shape = tuple(getattr(patches, "shape", ()))
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"patches must be [N, H, W, 3] uint8, got shape {shape}")
    if np.dtype(getattr(patches, "dtype", np.uint8)) != np.uint8:
        raise ValueError(f"patches must be uint8, got {patches.dtype}")


def backbone_features(
    model: Any, patches: Any, *, batch_size: int = 128, device: Any = "auto", progress: bool = False
) -> np.ndarray:
    """Pooled backbone features ``[N, F]`` float32 of every patch (eval mode, no augmentation).

    This is what frozen-encoder mode computes once per patch. ``model`` is an ``MclSTExp`` or
    its ``ImageEncoder``. Patches are read in contiguous slices of ``batch_size`` (numpy or
    zarr), under :func:`autocast` on CUDA.

    Examples
    --------
    >>> from mclstexp.models import MclSTExp, ModelConfig
    >>> model = MclSTExp(ModelConfig(backbone="test_resnet", n_genes=2, position_rows=2,
    ...                              position_cols=2, embed_dim=8))
    >>> backbone_features(model, np.zeros((3, 32, 32, 3), np.uint8), device="cpu").shape[0]
    3
    """
    import torch

    check_patches(patches)
    dev = resolve_device(device)
    enc = getattr(model, "image_encoder", model)
    was_training = enc.training
    enc.eval().to(dev)
    n = patches.shape[0]
    out = np.empty((n, enc.num_features), dtype=np.float32)
    steps: Any = range(0, n, batch_size)
    if progress:
        from mclstexp._progress import progress_bar

        steps = progress_bar(steps, desc="backbone features", unit="batch")
    with torch.no_grad(), autocast(dev):
        for s in steps:
            x = torch.from_numpy(np.ascontiguousarray(patches[s : s + batch_size])).to(dev)
            out[s : s + x.shape[0]] = enc.features(x).float().cpu().numpy()
    enc.train(was_training)
    return out
