"""Tensor layout conversion: uint8 ``(N, H, W, 3)`` patches <-> float32 ``(N, 3, H, W)`` tensors.

The forward conversion is what a vision model expects after ``ToTensor`` and ``Normalize``:
``(patch / 255 - mean) / std`` per channel, channels first. It runs in the Rust core in one pass
(a 256-entry table per channel), in parallel, with the GIL released, and is bit-identical to numpy's
float32 ``(x.astype(np.float32) / 255 - mean) / std``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mclstexp import _native
from mclstexp._validate import check_n_threads

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "from_tensor_layout", "to_tensor_layout"]

#: ImageNet channel means (RGB, on the 0..1 scale), the usual choice for pretrained backbones.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
#: ImageNet channel standard deviations (RGB, on the 0..1 scale).
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def _as_patches(patches: object, arg: str = "patches") -> tuple[np.ndarray, bool]:
    """Validate uint8 RGB patches; return a C-contiguous ``(N, H, W, 3)`` array and whether the
    input was a single ``(H, W, 3)`` image."""
    array = np.asarray(patches)
    if array.dtype != np.uint8:
        raise ValueError(
            f"{arg}: expected dtype uint8 (RGB bytes), got {array.dtype}; "
            "convert 0..1 floats with (x * 255).round().astype(np.uint8)"
        )
    if array.ndim == 3 and array.shape[-1] == 3:
        return np.ascontiguousarray(array[np.newaxis]), True
    if array.ndim == 4 and array.shape[-1] == 3:
        return np.ascontiguousarray(array), False
    raise ValueError(
        f"{arg}: expected shape (H, W, 3) or (N, H, W, 3) (RGB, channels last), got {array.shape}"
    )


def _as_triplet(values: float | Sequence[float] | np.ndarray, arg: str) -> tuple[float, ...]:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 0:
        array = np.repeat(array, 3)
    if array.shape != (3,):
        raise ValueError(f"{arg}: expected one number or 3 numbers (R, G, B), got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{arg}: must be finite, got {array.tolist()}")
    return tuple(float(v) for v in array)


def to_tensor_layout(
    patches: np.ndarray,
    mean: float | Sequence[float] | np.ndarray = IMAGENET_MEAN,
    std: float | Sequence[float] | np.ndarray = IMAGENET_STD,
    *,
    n_threads: int | None = None,
) -> np.ndarray:
    """Convert uint8 RGB patches to normalised float32 tensors, channels first.

    Computes ``(patches / 255 - mean) / std`` per channel in float32 (bit-identical to numpy's
    float32 arithmetic) and moves the channel axis to the front.

    Parameters
    ----------
    patches
        uint8 array of shape ``(N, H, W, 3)`` or ``(H, W, 3)``.
    mean, std
        Per-channel mean and standard deviation on the 0..1 scale (one number or three); ImageNet's
        by default. ``std`` must be > 0.
    n_threads
        Threads of the native pool (default: ``MCLSTEXP_NUM_THREADS`` or all CPUs).

    Returns
    -------
    numpy.ndarray
        float32 array of shape ``(N, 3, H, W)`` (or ``(3, H, W)`` for a single patch).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.full((2, 4, 4, 3), 255, dtype=np.uint8)
    >>> t = to_tensor_layout(x, mean=0.5, std=0.5)
    >>> t.shape, float(t.max())
    ((2, 3, 4, 4), 1.0)
    """
    array, single = _as_patches(patches)
    m = _as_triplet(mean, "mean")
    s = _as_triplet(std, "std")
    if any(v <= 0 for v in s):
        raise ValueError(f"std: must be > 0 for every channel, got {list(s)}")
    out = _native.normalize_to_tensor_layout(array, m, s, n_threads=check_n_threads(n_threads))
    return out[0] if single else out


def from_tensor_layout(
    tensors: np.ndarray,
    mean: float | Sequence[float] | np.ndarray = IMAGENET_MEAN,
    std: float | Sequence[float] | np.ndarray = IMAGENET_STD,
    *,
    n_threads: int | None = None,
) -> np.ndarray:
    """Convert normalised channels-first tensors back to uint8 RGB patches (for display).

    The inverse of :func:`to_tensor_layout`: ``round((t * std + mean) * 255)`` (half to even),
    clipped to 0..255, channels last. NaN becomes 0.

    Parameters
    ----------
    tensors
        Array of shape ``(N, 3, H, W)`` or ``(3, H, W)``; converted to float32 (a CPU torch tensor
        works too, through ``numpy.asarray``).
    mean, std
        The values given to :func:`to_tensor_layout`.
    n_threads
        Threads of the native pool.

    Returns
    -------
    numpy.ndarray
        uint8 array of shape ``(N, H, W, 3)`` (or ``(H, W, 3)``).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(48, dtype=np.uint8).reshape(1, 4, 4, 3)
    >>> bool((from_tensor_layout(to_tensor_layout(x)) == x).all())
    True
    """
    array = np.asarray(tensors)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"tensors: expected a real-valued array, got dtype {array.dtype}")
    single = array.ndim == 3
    if single:
        array = array[np.newaxis]
    if array.ndim != 4 or array.shape[1] != 3:
        raise ValueError(
            f"tensors: expected shape (N, 3, H, W) or (3, H, W) (channels first), "
            f"got {np.shape(tensors)}"
        )
    array = np.ascontiguousarray(array, dtype=np.float32)
    m = _as_triplet(mean, "mean")
    s = _as_triplet(std, "std")
    if any(v <= 0 for v in s):
        raise ValueError(f"std: must be > 0 for every channel, got {list(s)}")
    out = _native.normalize_from_tensor_layout(array, m, s, n_threads=check_n_threads(n_threads))
    return out[0] if single else out
