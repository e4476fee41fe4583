"""Training data: sections with their patch caches, augmentation.

A :class:`TrainingSection` pairs an AnnData (``X`` = normalised expression of the panel genes)
with the spot patches (``[n_obs, H, W, 3]`` uint8, a numpy array or the ``zarr.Array`` of a patch
cache, aligned with ``obs_names``). Patches are sliced from the cache per batch; slides are
never decoded here.

Attention sequences and batch plans live in :mod:`mclstexp.models.inputs`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mclstexp import _keys
from mclstexp.models.inputs import spot_arrays

__all__ = [
    "AugmentParams",
    "ChunkReader",
    "TrainingSection",
    "augment_batch",
    "draw_augment_params",
]


@dataclass
class TrainingSection:
    """One section ready for training: normalised expression, positions and patches.

    Parameters
    ----------
    adata
        AnnData; ``X`` = normalised expression (float, dense or sparse) of the panel genes,
        ``obs["array_row"]``/``obs["array_col"]`` integer array coordinates.
    patches
        ``[n_obs, H, W, 3]`` uint8 array-like aligned with ``adata.obs_names`` (numpy array or
        ``zarr.Array``; sliced lazily).
    name
        Section id (default: ``adata.uns["mclstexp"]["section"]`` or ``"section"``).
    in_memory
        Read a Zarr (or other lazy) patch array into RAM once, in contiguous slices, so that
        epochs slice numpy instead of decoding one chunk per spot per batch. ``None`` (default)
        does so when the patches take at most ``MCLSTEXP_PATCH_RAM_GB`` GiB (default 4);
        ``False`` always reads lazily.

    Examples
    --------
    >>> import anndata as ad
    >>> import pandas as pd
    >>> obs = pd.DataFrame({"array_row": [0, 1], "array_col": [0, 0]}, index=["a", "b"])
    >>> sec = TrainingSection(ad.AnnData(np.ones((2, 3), np.float32), obs=obs),
    ...                       np.zeros((2, 8, 8, 3), np.uint8))
    >>> sec.expression.shape, sec.positions.tolist()
    ((2, 3), [[0, 0], [1, 0]])
    """

    adata: Any
    patches: Any
    name: str | None = None
    in_memory: bool | None = None
    expression: np.ndarray = field(init=False, repr=False)
    positions: np.ndarray = field(init=False, repr=False)
    _chunks: ChunkReader | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        adata = self.adata
        n = adata.n_obs
        if self.name is None:
            self.name = _keys.section_id(adata)
        shape = tuple(getattr(self.patches, "shape", ()))
        dtype = np.dtype(getattr(self.patches, "dtype", np.uint8))
        if len(shape) != 4 or shape[-1] != 3 or shape[0] != n:
            raise ValueError(
                f"section {self.name}: patches must be [n_obs={n}, H, W, 3], got shape {shape}"
            )
        if dtype != np.uint8:
            raise ValueError(f"section {self.name}: patches must be uint8, got {dtype}")
        self.expression, self.positions = spot_arrays(adata, name=self.name)
        if not isinstance(self.patches, np.ndarray) and self._load_into_memory():
            self.patches = read_all(self.patches)
        self._chunks = (
            None if isinstance(self.patches, np.ndarray) else ChunkReader.maybe(self.patches)
        )

    def _load_into_memory(self) -> bool:
        if self.in_memory is not None:
            return bool(self.in_memory)
        limit = float(os.environ.get("MCLSTEXP_PATCH_RAM_GB", "4")) * 2**30
        return int(np.prod(self.patches.shape)) <= limit

    @property
    def n_obs(self) -> int:
        """Number of spots."""
        return int(self.adata.n_obs)

    @property
    def patch_shape(self) -> tuple[int, int, int]:
        """``(H, W, 3)``."""
        return tuple(self.patches.shape[1:])  # type: ignore[return-value]

    def read_patches(
        self, idx: np.ndarray, out: np.ndarray | None = None, *, n_threads: int = 1
    ) -> np.ndarray:
        """Patches ``[len(idx), H, W, 3]`` in the order of ``idx`` (sorted reads from the store),
        written into ``out`` when given; a local Zarr cache is decoded on ``n_threads``."""
        if self._chunks is not None:
            return self._chunks.take(idx, out=out, n_threads=n_threads)
        if out is not None and isinstance(self.patches, np.ndarray):
            idx = np.asarray(idx, dtype=np.int64)
            if idx.size and (idx.min() < 0 or idx.max() >= self.n_obs):
                raise IndexError(f"section {self.name}: patch index out of range")
            # mode="clip" (indices checked above): "raise" would buffer the whole result
            return np.take(self.patches, idx, axis=0, out=out, mode="clip")
        rows = take_rows(self.patches, idx)
        if out is None:
            return rows
        out[...] = rows
        return out


class ChunkReader:
    """Direct reads of a Zarr v3 patch cache on a local disk: chunk files are read and zstd-decoded
    into the result without zarr's per-chunk machinery (about 5x less CPU per patch).

    Used for arrays in the layout :func:`mclstexp.pp.extract_patches` writes (local store,
    regular chunks over the first axis only, codecs ``bytes`` + ``zstd``, no sharding); for
    anything else :meth:`maybe` returns ``None`` and reads go through zarr. A missing chunk
    reads as the fill value; a chunk that does not decode to exactly its size raises
    ``ValueError`` naming the file.

    Examples
    --------
    >>> import zarr
    >>> z = zarr.open_array("p.zarr", mode="w", shape=(4, 8, 8, 3), chunks=(2, 8, 8, 3),
    ...                     dtype="uint8")  # doctest: +SKIP
    >>> ChunkReader.maybe(z).take(np.array([3, 0])).shape  # doctest: +SKIP
    (2, 8, 8, 3)
    """

    def __init__(self, root: Any, shape: tuple[int, ...], chunk: int, fill: int, key: Any) -> None:
        from numcodecs import Zstd

        self.root = root
        self.shape = shape
        self.chunk = chunk
        self.fill = fill
        self.key = key
        self.codec = Zstd()

    @classmethod
    def maybe(cls, arr: Any) -> ChunkReader | None:
        """A reader for ``arr`` when it has the supported layout, else ``None``."""
        from pathlib import Path

        try:
            meta = arr.metadata
            store = arr.store
            if (
                meta.zarr_format != 3
                or type(store).__name__ != "LocalStore"
                or [type(c).__name__ for c in meta.codecs] != ["BytesCodec", "ZstdCodec"]
                or type(meta.chunk_grid).__name__ != "RegularChunkGrid"
                or tuple(meta.chunk_grid.chunk_shape[1:]) != tuple(arr.shape[1:])
                or np.dtype(arr.dtype) != np.uint8
            ):
                return None
            root = Path(store.root) / arr.path if arr.path else Path(store.root)
            fill = int(meta.fill_value or 0)
            return cls(
                root,
                tuple(arr.shape),
                int(meta.chunk_grid.chunk_shape[0]),
                fill,
                meta.encode_chunk_key,
            )
        except Exception:  # any other layout or zarr version: zarr reads it
            return None

    def _chunk(self, c: int, out: np.ndarray | None = None) -> np.ndarray:
        rows = (self.chunk, *self.shape[1:])
        if out is None:
            out = np.empty(rows, dtype=np.uint8)
        path = self.root / self.key((c,) + (0,) * (len(self.shape) - 1))
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            out[...] = self.fill
            return out
        try:
            self.codec.decode(raw, out=out.reshape(-1))
        except Exception as e:
            raise ValueError(f"{path}: corrupt patch cache chunk ({e})") from e
        return out

    def take(
        self, idx: np.ndarray, out: np.ndarray | None = None, *, n_threads: int = 1
    ) -> np.ndarray:
        """Rows ``idx`` (any order, repeats allowed) as ``[len(idx), ...]`` uint8; chunks are read
        and decoded on ``n_threads`` threads (file reads and zstd release the GIL)."""
        idx = np.asarray(idx, dtype=np.int64)
        n = self.shape[0]
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"patch index out of range for {n} patches")
        if out is None:
            out = np.empty((idx.size, *self.shape[1:]), dtype=np.uint8)
        chunks = idx // self.chunk
        target = out

        def one(c: int) -> None:
            where = np.flatnonzero(chunks == c)
            if self.chunk == 1 and where.size == 1:  # decode straight into the result
                self._chunk(c, out=target[int(where[0])].reshape(1, *self.shape[1:]))
                return
            block = self._chunk(c)
            target[where] = block[idx[where] - c * self.chunk]

        todo = [int(c) for c in np.unique(chunks)]
        if n_threads > 1 and len(todo) > 1:
            list(self._executor(n_threads).map(one, todo))
        else:
            for c in todo:
                one(c)
        return out

    def _executor(self, n_threads: int) -> Any:
        """A thread pool of this process (rebuilt after a fork: a parent's threads are gone)."""
        from concurrent.futures import ThreadPoolExecutor

        key = (os.getpid(), n_threads)
        if getattr(self, "_pool_key", None) != key:
            self._pool = ThreadPoolExecutor(n_threads, thread_name_prefix="mclstexp-read")
            self._pool_key = key
        return self._pool


def read_all(arr: Any, block: int = 256) -> np.ndarray:
    """Read a lazy ``[n, ...]`` array into a numpy array in contiguous blocks of rows."""
    out = np.empty(arr.shape, dtype=np.dtype(arr.dtype))
    for s in range(0, arr.shape[0], block):
        out[s : s + block] = np.asarray(arr[s : s + block])
    return out


def take_rows(arr: Any, idx: np.ndarray) -> np.ndarray:
    """``arr[idx]`` for numpy or zarr arrays, reading each row once in sorted order."""
    idx = np.asarray(idx, dtype=np.int64)
    if idx.size == 0:
        return np.empty((0, *arr.shape[1:]), dtype=arr.dtype)
    uniq, inverse = np.unique(idx, return_inverse=True)
    if isinstance(arr, np.ndarray):
        return arr[idx]
    if hasattr(arr, "get_orthogonal_selection"):
        # contiguous runs are read as slices (one request per chunk run), the rest orthogonally
        if uniq[-1] - uniq[0] + 1 == uniq.size:
            rows = np.asarray(arr[int(uniq[0]) : int(uniq[-1]) + 1])
        else:
            rows = np.asarray(arr.get_orthogonal_selection((uniq,)))
    else:
        rows = np.stack([np.asarray(arr[int(i)]) for i in uniq])
    return rows[inverse]


# ----------------------------------------------------------------------------- augmentation

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
        res = _augment_torch(images, params)
        if normalize is None:
            return res
        m = torch.tensor(mean, device=res.device).view(1, 3, 1, 1)
        s = torch.tensor(std, device=res.device).view(1, 3, 1, 1)
        return (res.permute(0, 3, 1, 2).float().div_(255.0) - m) / s
    from mclstexp import _native

    src = np.ascontiguousarray(images.numpy())
    args = (src, params.brightness, params.contrast, params.saturation, params.flip, params.angle)
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
    if normalize is None:
        res = _native.augment_patches_uint8(*args, out=out_np, n_threads=n_threads)
    else:
        res = _native.augment_patches_tensor(*args, mean, std, out=out_np, n_threads=n_threads)
    return out if out is not None else torch.from_numpy(res)


def _augment_torch(images: Any, params: AugmentParams, *, chunk: int = 4) -> Any:
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
            return _augment_torch(images, params, chunk=chunk)
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
