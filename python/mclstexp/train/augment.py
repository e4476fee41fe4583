"""Training-time image augmentation: colour jitter, flip and rotation (method.md §2).

:func:`augment_batch` augments a uint8 batch with parameters drawn by
:func:`draw_augment_params` from a ``torch.Generator``: on CPU through the fused native kernel
(:func:`augment_native`, the one place that calls it, also used by the batch loader), on other
devices with torch ops (:func:`augment_torch`, also the oracle of the native kernel's tests).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

__all__ = [
    "AugmentParams",
    "augment_batch",
    "augment_native",
    "augment_torch",
    "draw_augment_params",
]

_GRAY = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class AugmentParams:
    """The random parameters of one augmented batch (float64 / bool CPU arrays of length B).

    Drawn by :func:`draw_augment_params` from a ``torch.Generator`` in a fixed order
    (brightness, contrast, saturation, flip, angle), so a batch's augmentation depends only on
    the generator's seed, whichever implementation applies it.
    """

    brightness: np.ndarray
    contrast: np.ndarray
    saturation: np.ndarray
    flip: np.ndarray
    angle: np.ndarray  # degrees, counter-clockwise for positive angles

    def take(self, where: np.ndarray) -> AugmentParams:
        """The parameters of images ``where`` (contiguous copies, as the native kernel reads).

        Examples
        --------
        >>> p = AugmentParams(*(np.arange(4.0) for _ in range(3)), np.zeros(4, bool), np.zeros(4))
        >>> p.take(np.array([3, 1])).brightness.tolist()
        [3.0, 1.0]
        """
        return AugmentParams(
            *(np.ascontiguousarray(getattr(self, f.name)[where]) for f in fields(self))
        )


def draw_augment_params(
    b: int, generator: Any, *, jitter: float = 0.5, flip: bool = True, rotation: float = 180.0
) -> AugmentParams:
    """Draw the parameters of ``b`` augmentations (see :func:`augment_batch`).

    Examples
    --------
    >>> import torch
    >>> p = draw_augment_params(3, torch.Generator().manual_seed(0))
    >>> p.brightness.shape, p.flip.dtype
    ((3,), dtype('bool'))
    """
    import torch

    def uniform(lo: float, hi: float) -> np.ndarray:
        u = torch.rand(b, generator=generator, dtype=torch.float64).mul_(hi - lo).add_(lo)
        return u.numpy()

    bf = uniform(1 - jitter, 1 + jitter)
    cf = uniform(1 - jitter, 1 + jitter)
    sf = uniform(1 - jitter, 1 + jitter)
    flips = torch.rand(b, generator=generator, dtype=torch.float64) < (0.5 if flip else 0.0)
    angle = uniform(-rotation, rotation)
    return AugmentParams(bf, cf, sf, flips.numpy(), angle)


def _check_images(images: Any) -> None:
    shape = tuple(getattr(images, "shape", ()))
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"images: expected a (B, H, W, 3) uint8 tensor, got shape {shape}")
    if str(images.dtype) not in ("torch.uint8", "uint8"):
        raise ValueError(f"images: expected dtype uint8, got {images.dtype}")


def augment_batch(
    images: Any,
    generator: Any,
    *,
    jitter: float = 0.5,
    flip: bool = True,
    rotation: float = 180.0,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    out: Any = None,
    n_threads: int | None = None,
) -> Any:
    """Colour jitter, horizontal flip and random rotation of a uint8 batch (method.md §2).

    Per image: brightness, contrast and saturation factors ~ U[1 - jitter, 1 + jitter] applied in
    that order as one affine colour map (torchvision's ColorJitter formulas with a fixed order,
    the contrast mean taken on the source image, and a single final clamp), then a horizontal
    flip with probability 1/2, then a rotation by an angle ~ U[-rotation, rotation] degrees
    (counter-clockwise for positive angles) about the centre with nearest-neighbour sampling and
    black fill (torchvision's RandomRotation defaults). Randomness comes only from ``generator``
    (a CPU ``torch.Generator``, see :func:`draw_augment_params`), so a batch's augmentation is
    reproducible.

    Where it runs is decided by the tensor's device, nothing else: a CPU tensor (or numpy array)
    goes through the fused native kernel (one pass per output pixel: geometry, colour,
    conversion; parallel over images in ``n_threads`` native threads, GIL released); a tensor
    on another device (CUDA) is augmented there with torch ops. Both give the same uint8 result
    up to rare +-1 grey levels (rounding of the colour map).

    Parameters
    ----------
    images
        ``(B, H, W, 3)`` uint8 torch tensor (any device) or numpy array.
    generator
        ``torch.Generator`` (CPU) the parameters are drawn from.
    jitter, flip, rotation
        Colour jitter strength, whether to flip, maximum rotation in degrees.
    normalize
        ``None``: return uint8 ``(B, H, W, 3)``. ``(mean, std)``: return float32
        ``(B, 3, H, W)`` = ``(v / 255 - mean) / std`` per channel (``((0, 0, 0), (1, 1, 1))``
        gives [0, 1]); black fill becomes ``(0 - mean) / std``, exactly as a black uint8 pixel
        normalised later would.
    out
        Optional preallocated CPU output tensor of the returned shape and dtype (e.g. in shared
        memory); CPU only.
    n_threads
        Native threads (CPU; default ``MCLSTEXP_NUM_THREADS`` or all CPUs).

    Returns
    -------
    torch.Tensor
        On the device of ``images``.

    Examples
    --------
    >>> import torch
    >>> x = torch.zeros(2, 16, 16, 3, dtype=torch.uint8)
    >>> augment_batch(x, torch.Generator().manual_seed(0)).shape
    torch.Size([2, 16, 16, 3])
    >>> augment_batch(x, torch.Generator().manual_seed(0), normalize=((0, 0, 0), (1, 1, 1))).shape
    torch.Size([2, 3, 16, 16])
    """
    import torch

    _check_images(images)
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    b, h, w, _ = images.shape
    params = draw_augment_params(b, generator, jitter=jitter, flip=flip, rotation=rotation)
    if normalize is not None:
        mean, std = (tuple(float(v) for v in x) for x in normalize)
        if len(mean) != 3 or len(std) != 3:
            raise ValueError("normalize: expected (mean, std) with 3 values each")
    if images.device.type != "cpu":
        if out is not None:
            raise ValueError("out: only supported for CPU images")
        res = augment_torch(images, params)
        if normalize is None:
            return res
        m = torch.tensor(mean, device=res.device).view(1, 3, 1, 1)
        s = torch.tensor(std, device=res.device).view(1, 3, 1, 1)
        return (res.permute(0, 3, 1, 2).float().div_(255.0) - m) / s
    src = np.ascontiguousarray(images.numpy())
    out_np = None
    if out is not None:
        want = (b, h, w, 3) if normalize is None else (b, 3, h, w)
        dtype = torch.uint8 if normalize is None else torch.float32
        if not isinstance(out, torch.Tensor) or out.device.type != "cpu":
            raise ValueError("out: must be a CPU torch tensor")
        if tuple(out.shape) != want or out.dtype != dtype or not out.is_contiguous():
            raise ValueError(
                f"out: expected a contiguous {dtype} tensor of shape {want}, got "
                f"{out.dtype} {tuple(out.shape)}"
            )
        out_np = out.numpy()
    norm = None if normalize is None else (mean, std)
    res = augment_native(src, params, out=out_np, normalize=norm, n_threads=n_threads)
    return out if out is not None else torch.from_numpy(res)


def augment_native(
    patches: np.ndarray,
    params: AugmentParams,
    *,
    rows: np.ndarray | None = None,
    out: np.ndarray | None = None,
    out_rows: np.ndarray | None = None,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    n_threads: int | None = None,
) -> np.ndarray:
    """Augment patches with the fused native kernel (one pass per output pixel: geometry, colour
    and, with ``normalize``, conversion to float ``(B, 3, H, W)``), GIL released.

    The one place that calls the kernel: :func:`augment_batch` (CPU tensors) and the batch
    loader (:class:`mclstexp.train.loader.BatchDataset`, which gathers rows straight from a
    section's patches into its batch) both go through here.

    Parameters
    ----------
    patches
        C-contiguous uint8 ``[N, H, W, 3]`` source patches.
    params
        One set of parameters per augmented image (:func:`draw_augment_params`).
    rows
        Source row of each augmented image (default: ``0 .. len(params) - 1``).
    out
        Output array (default: a new one of ``len(params)`` images).
    out_rows
        Row of ``out`` each augmented image goes to (default: ``0 .. len(params) - 1``).
    normalize
        ``None``: uint8 ``(B, H, W, 3)`` output; ``(mean, std)``: float32 ``(B, 3, H, W)`` =
        ``(v / 255 - mean) / std``.
    n_threads
        Native threads (default ``MCLSTEXP_NUM_THREADS`` or all CPUs).

    Returns
    -------
    numpy.ndarray
        ``out`` (or the new output array).

    Examples
    --------
    >>> import torch
    >>> x = np.zeros((4, 8, 8, 3), np.uint8)
    >>> p = draw_augment_params(2, torch.Generator().manual_seed(0))
    >>> augment_native(x, p, rows=np.array([3, 0])).shape
    (2, 8, 8, 3)
    """
    from mclstexp import _native

    p = params
    args = (patches, p.brightness, p.contrast, p.saturation, p.flip, p.angle)
    kw = {"indices": rows, "out_rows": out_rows, "out": out, "n_threads": n_threads}
    if normalize is None:
        return _native.augment_patches_uint8(*args, **kw)
    mean, std = normalize
    return _native.augment_patches_tensor(*args, mean, std, **kw)


def augment_torch(images: Any, params: AugmentParams, *, chunk: int = 4) -> Any:
    """The torch implementation of :func:`augment_batch` (any device; used for CUDA tensors,
    and the oracle of the native kernel's tests). Returns uint8 ``(B, H, W, 3)``.

    On CPU it works in small chunks (the working set stays in cache) on one thread: these small
    ops gain nothing from intra-op threads.
    """
    import torch

    if images.device.type == "cpu" and torch.get_num_threads() > 1:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return augment_torch(images, params, chunk=chunk)
        finally:
            torch.set_num_threads(threads)
    b, h, w, _ = images.shape
    dev = images.device
    bf = torch.from_numpy(params.brightness).float()
    cf = torch.from_numpy(params.contrast).float()
    sf = torch.from_numpy(params.saturation).float()
    flips = torch.from_numpy(params.flip)
    angle = torch.from_numpy(params.angle).mul(math.pi / 180)  # float64 radians
    wgt = torch.tensor(_GRAY, dtype=torch.float32, device=dev)
    eye = torch.eye(3, device=dev)
    # colour: out = a x + bg gray(x) + off (brightness, contrast, saturation composed), as one
    # (R, G, B, V) -> (R, G, B) matrix; V = 255 inside the image, 0 in the rotation's fill, so
    # the offset (and the +0.5 that turns the final truncation into rounding) stays off the fill
    a = (sf * cf * bf).to(dev)
    bg = ((1 - sf) * cf * bf).to(dev)
    contrast_shift = ((1 - cf) * bf).to(dev)
    # geometry: output pixel (dx, dy) about the centre <- source (s (c dx - si dy), si dx + c dy),
    # s = -1 when flipped (flip first); positive angles turn the image counter-clockwise on
    # screen (y axis down); nearest
    # neighbour = truncation of (coordinate + 0.5) since padded coordinates are >= 0;
    # cos/sin in float64, rounded once (the native kernel does the same)
    cos, sin = angle.cos().float().to(dev), angle.sin().float().to(dev)
    sign = torch.where(flips, -1.0, 1.0).float().to(dev)
    # room for any rotation (also non-square):
    # half diagonal - min(h, w) / 2 <= max(h, w) (sqrt 2 - 1) / 2 + (max - min) / 2
    pad = math.ceil(max(h, w) * (math.sqrt(2) - 1) / 2) + 1 + (abs(h - w) + 1) // 2
    hp, wp = h + 2 * pad, w + 2 * pad
    ys = (torch.arange(h, dtype=torch.float32, device=dev) - (h - 1) / 2).view(1, h, 1)
    xs = (torch.arange(w, dtype=torch.float32, device=dev) - (w - 1) / 2).view(1, 1, w)
    out = torch.empty_like(images)
    chunk = max(1, min(chunk, b)) if dev.type == "cpu" else b
    buf = torch.zeros(chunk, hp, wp, 4, dtype=torch.uint8, device=dev)
    buf[:, pad : pad + h, pad : pad + w, 3] = 255  # 4th byte marks pixels inside the image
    step = max(1, min(h, w) // 56)  # the contrast mean is taken on a sub-grid
    # work buffers reused across chunks (fresh large temporaries cost page faults on CPU)
    f32 = {"dtype": torch.float32, "device": dev}
    sx = torch.empty(chunk, h, w, **f32)
    sy = torch.empty(chunk, h, w, **f32)
    ix = torch.empty(chunk, h, w, dtype=torch.int32, device=dev)
    iy = torch.empty(chunk, h, w, dtype=torch.int32, device=dev)
    idx = torch.empty(chunk, h * w, dtype=torch.int64, device=dev)
    pix = torch.empty(chunk, h * w, dtype=torch.int32, device=dev)
    fl = torch.empty(chunk, h * w, 4, **f32)
    o = torch.empty(chunk, h * w, 3, **f32)
    x0 = xs.expand(1, h, w) * 0 + ((w - 1) / 2 + pad + 0.5)
    y0 = ys.expand(1, h, w) * 0 + ((h - 1) / 2 + pad + 0.5)
    for s in range(0, b, chunk):
        e = min(b, s + chunk)
        n = e - s
        src = images[s:e]
        for ch in range(3):  # per-channel copies are much faster than one 3-of-4-byte copy
            buf[:n, pad : pad + h, pad : pad + w, ch] = src[..., ch]
        mgray = src[:, ::step, ::step].reshape(n, -1, 3).float().mean(1) @ wgt  # (n,)
        mat = bg[s:e].view(n, 1, 1) * wgt.view(1, 3, 1) + a[s:e].view(n, 1, 1) * eye  # (n,3,3)
        off = (contrast_shift[s:e] * mgray + 0.5) / 255.0  # per unit of V
        mat = torch.cat([mat, off.view(n, 1, 1).expand(n, 1, 3)], dim=1)  # (n, 4, 3)
        c = cos[s:e].view(n, 1, 1)
        si = sin[s:e].view(n, 1, 1)
        sg = sign[s:e].view(n, 1, 1)
        torch.addcmul(x0, c * sg, xs, out=sx[:n]).addcmul_(-si * sg, ys)  # source column
        torch.addcmul(y0, c, ys, out=sy[:n]).addcmul_(si, xs)  # source row
        ix[:n].copy_(sx[:n])  # truncation of (coordinate + 0.5) = nearest
        iy[:n].copy_(sy[:n]).mul_(wp).add_(ix[:n])
        idx[:n].copy_(iy[:n].view(n, h * w))
        torch.gather(buf[:n].view(torch.int32).view(n, hp * wp), 1, idx[:n], out=pix[:n])
        fl[:n].copy_(pix[:n].view(torch.uint8).view(n, h * w, 4))  # (n, HW, RGBV) float
        torch.bmm(fl[:n], mat, out=o[:n])  # (n, HW, 3); fill pixels (V = 0) stay black
        out[s:e].view(n, h * w, 3).copy_(o[:n].clamp_(0, 255))
    return out
