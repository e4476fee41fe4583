"""Frozen-encoder features: computed once per content, kept in memory and beside the patches.

In frozen-encoder mode the backbone never changes, so its pooled features of a patch
(:func:`mclstexp.models.runtime.backbone_features`) are computed once and reused by every fold,
seed and run that asks for the same thing. What "the same" means is a content hash,
:class:`FeatureKey`, over

- the backbone's weights: sha256 of its ``state_dict`` (names, dtypes, shapes, bytes);
- the feature-relevant configuration: backbone name, pooling, feature views, image
  normalisation, ``drop_final_activation``, and the compute precision (float32 on CPU, the
  autocast dtype on CUDA); for a registry encoder or an ``hf-hub:`` model also its identity
  (hub id, architecture and keyword arguments, output; :mod:`mclstexp.models.encoders`);
- the patches: for a patch cache written by mclstexp, its group name and a digest of its
  recorded attributes (slide checksum, spot centres, patch size, stain normalisation, ...); for
  any other array, a sha256 of its bytes.

:class:`FeatureCache` keeps features in memory for the process (an LRU bounded by count) and,
when the patches come from a writable patch cache on disk, stores them in its Zarr group as
``<group>/features/<key digest>`` (float32 ``[N, F]``, attributes: the key's parts,
``rows_done`` and ``complete``), where a later process finds them. They are computed in blocks
of whole batches and written block by block: ``rows_done`` counts the rows written, so a run
that was killed resumes at the first row not written (and ends with the same array as an
uninterrupted one); ``complete`` marks the copy whole. Before a long extraction (over a minute
by the first batch's time) an estimate is printed. :data:`DEFAULT_CACHE` is the process's cache.

The model is an :class:`~mclstexp.models.MclSTExp` or its
:class:`~mclstexp.models.ImageEncoder` alone (``mclstexp embed``); both give the same key. The
computation is the ``compute`` argument (default :func:`backbone_features`), so other encoders
and precisions can reuse the keying and storage.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import sys
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mclstexp._memory import trim_heap
from mclstexp.models.runtime import backbone_features, precision, resolve_device
from mclstexp.pp.patch_cache import cache_group

__all__ = [
    "DEFAULT_CACHE",
    "FeatureCache",
    "FeatureKey",
    "backbone_digest",
    "encoder_identity",
    "feature_key",
    "frozen_features",
    "image_encoder_of",
    "patches_identity",
]

#: Version of the key scheme (a change of what enters the key bumps it).
KEY_VERSION = 1
#: Rows per stored chunk (rounded down to whole batches): also the unit of resumption.
_ROWS_PER_BLOCK = 1024
#: Print an estimate before an extraction that will take longer than this.
_ESTIMATE_AFTER_S = 60.0


@dataclass(frozen=True)
class FeatureKey:
    """What a feature array was computed from (``parts``) and its sha256 (``digest``)."""

    digest: str
    parts: dict[str, Any] = field(compare=False, hash=False)


#: The last digest of each module, with the (storage, version) of every tensor it hashed: an
#: in-place update (an optimiser step) or a replaced tensor invalidates it.
_DIGESTS: weakref.WeakKeyDictionary[Any, tuple[tuple[tuple[int, int], ...], str]] = (
    weakref.WeakKeyDictionary()
)


def backbone_digest(backbone: Any) -> str:
    """sha256 over a module's ``state_dict`` tensors: names, dtypes, shapes and bytes.

    Remembered per module until one of its tensors changes (a frozen foundation model of a few
    GB is hashed once per process, not once per patch cache).

    Examples
    --------
    >>> from mclstexp.models.image_encoder import build_backbone
    >>> len(backbone_digest(build_backbone("test_resnet")))
    64
    """
    import torch

    state = backbone.state_dict()
    stamp = tuple((t.data_ptr(), t._version) for t in state.values())
    known = _DIGESTS.get(backbone)
    if known is not None and known[0] == stamp:
        return known[1]
    h = hashlib.sha256()
    for name, tensor in state.items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}\0{t.dtype}\0{tuple(tensor.shape)}\0".encode())
        h.update(t.view(torch.uint8).numpy())
    digest = h.hexdigest()
    _DIGESTS[backbone] = (stamp, digest)
    return digest


def _array_digest(patches: Any, block: int = 256) -> str:
    h = hashlib.sha256(f"{tuple(patches.shape)}\0{np.dtype(patches.dtype)}\0".encode())
    for s in range(0, patches.shape[0], block):
        h.update(np.ascontiguousarray(patches[s : s + block]))
    return h.hexdigest()


def patches_identity(patches: Any) -> dict[str, Any]:
    """What identifies a patch array: a complete mclstexp patch cache by its group name and the
    digest of its attributes, anything else by the sha256 of its bytes.

    Examples
    --------
    >>> patches_identity(np.zeros((2, 4, 4, 3), np.uint8))["kind"]
    'array'
    """
    group = cache_group(patches)
    if group is not None and group.attrs.get("complete") is True:
        attrs = {k: v for k, v in group.attrs.items() if k != "complete"}
        text = json.dumps(attrs, sort_keys=True, default=str)
        return {
            "kind": "patch-cache",
            "key": group.path.name,
            "attrs_sha256": hashlib.sha256(text.encode()).hexdigest(),
            "n": int(patches.shape[0]),
        }
    return {"kind": "array", "sha256": _array_digest(patches), "n": int(patches.shape[0])}


def feature_key(model: Any, patches: Any, *, device: Any = "cpu") -> FeatureKey:
    """The :class:`FeatureKey` of ``model``'s backbone features of ``patches`` on ``device``.

    Examples
    --------
    >>> from mclstexp.models import MclSTExp, ModelConfig
    >>> m = MclSTExp(ModelConfig(backbone="test_resnet", n_genes=2, position_rows=2,
    ...                          position_cols=2, embed_dim=8))
    >>> x = np.zeros((2, 16, 16, 3), np.uint8)
    >>> feature_key(m, x) == feature_key(m, x.copy()) != feature_key(m, x + 1)
    True
    """
    return _key(_model_parts(model, resolve_device(device)), patches)


def image_encoder_of(model: Any) -> Any:
    """The :class:`~mclstexp.models.ImageEncoder` of an ``MclSTExp`` (or the encoder itself).

    Examples
    --------
    >>> from mclstexp.models import ImageEncoder
    >>> enc = ImageEncoder("test_resnet", embed_dim=4)
    >>> image_encoder_of(enc) is enc
    True
    """
    return getattr(model, "image_encoder", model)


def encoder_identity(name: str) -> dict[str, Any] | None:
    """What names a registry or ``hf-hub:`` encoder beyond its weights (``None`` for timm names).

    Examples
    --------
    >>> encoder_identity("h-optimus-0")["hub_id"], encoder_identity("resnet18")
    ('bioptimus/H-optimus-0', None)
    """
    from mclstexp.models import encoders

    if encoders.is_registered(name):
        return encoders.encoder_info(name).identity()
    if name.startswith(("hf-hub:", "hf_hub:")):
        return {"hub_id": name.split(":", 1)[1]}
    return None


def _model_parts(model: Any, device: Any) -> dict[str, Any]:
    enc = image_encoder_of(model)
    settings = enc.settings
    parts = {
        "version": KEY_VERSION,
        "backbone_sha256": backbone_digest(enc.backbone),
        "backbone": settings["backbone"],
        "pooling": settings["pooling"],
        "feature_views": settings["feature_views"],
        "image_normalization": settings["image_normalization"],
        "drop_final_activation": settings["drop_final_activation"],
        "precision": precision(device),
    }
    if "input_size" in settings:  # patches reduced before the backbone
        parts["input_size"] = settings["input_size"]
    identity = encoder_identity(settings["backbone"])
    if identity is not None:
        parts["encoder"] = identity
    return parts


def _key(model_parts: dict[str, Any], patches: Any) -> FeatureKey:
    parts = {**model_parts, "patches": patches_identity(patches)}
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return FeatureKey(digest, parts)


class FeatureCache:
    """Frozen-encoder features by :class:`FeatureKey`: in memory (LRU of ``max_items`` arrays)
    and on disk beside a writable patch cache (see module docstring).

    ``stats`` counts ``memory`` hits, ``disk`` hits and ``computed`` arrays.

    Examples
    --------
    >>> from mclstexp.models import MclSTExp, ModelConfig
    >>> m = MclSTExp(ModelConfig(backbone="test_resnet", n_genes=2, position_rows=2,
    ...                          position_cols=2, embed_dim=8))
    >>> cache = FeatureCache()
    >>> x = np.zeros((3, 16, 16, 3), np.uint8)
    >>> a, = cache.features(m, [x], device="cpu")
    >>> b, = cache.features(m, [x], device="cpu")
    >>> a is b, cache.stats["computed"], cache.stats["memory"]
    (True, 1, 1)
    """

    def __init__(self, max_items: int = 32) -> None:
        self.max_items = int(max_items)
        self._memory: OrderedDict[str, np.ndarray] = OrderedDict()
        self.stats = {"memory": 0, "disk": 0, "computed": 0}

    def clear(self) -> None:
        """Forget the in-memory arrays (copies on disk stay)."""
        self._memory.clear()

    def features(
        self,
        model: Any,
        patches: Sequence[Any],
        *,
        device: Any = "auto",
        progress: bool = False,
        compute: Callable[..., np.ndarray] = backbone_features,
        batch_size: int | None = None,
    ) -> list[np.ndarray]:
        """Backbone features ``[N_i, F]`` float32 of each patch array, computed only when no
        copy of the same key is in memory or beside the patches (a partial copy is resumed).

        ``compute(model, patches, device=, progress=, batch_size=)`` computes a block of rows.
        ``batch_size`` (default: 128 on CUDA, 32 on a CPU) does not change the features; on a
        CPU the smaller batch is as fast and its activations take a quarter of the memory
        (ResNet-18 at 224 px: peak RSS 1.27 instead of 1.95 GB, 6.1 against 5.3 patches/s).
        """
        dev = resolve_device(device)
        if batch_size is None:
            batch_size = 128 if dev.type == "cuda" else 32
        model_parts = _model_parts(model, dev)
        out = []
        for p in patches:
            key = _key(model_parts, p)
            feats = self._lookup(key, p)
            if feats is None:
                job = _Extraction(key, model, p, dev, compute, int(batch_size))
                feats = job.run(progress)
                self.stats["computed"] += 1
            self._remember(key, feats)
            out.append(feats)
        return out

    def _lookup(self, key: FeatureKey, patches: Any) -> np.ndarray | None:
        if key.digest in self._memory:
            self._memory.move_to_end(key.digest)
            self.stats["memory"] += 1
            return self._memory[key.digest]
        feats = _load(key, patches)
        if feats is not None:
            self.stats["disk"] += 1
        return feats

    def _remember(self, key: FeatureKey, feats: np.ndarray) -> None:
        self._memory[key.digest] = feats
        self._memory.move_to_end(key.digest)
        while len(self._memory) > self.max_items:
            self._memory.popitem(last=False)


def _features_dir(patches: Any, key: FeatureKey) -> Path | None:
    """``<group>/features`` of a complete mclstexp patch cache, else ``None``."""
    if key.parts["patches"]["kind"] != "patch-cache":
        return None
    group = cache_group(patches)
    return None if group is None else group.path / "features"


def _load(key: FeatureKey, patches: Any) -> np.ndarray | None:
    folder = _features_dir(patches, key)
    if folder is None or not (folder / key.digest / "zarr.json").is_file():
        return None
    import zarr

    arr = zarr.open_array(str(folder / key.digest), mode="r")
    attrs = dict(arr.attrs)
    if attrs.get("complete") is not True or attrs.get("key") != key.parts:
        return None
    if arr.shape[0] != key.parts["patches"]["n"] or np.dtype(arr.dtype) != np.float32:
        return None
    return np.asarray(arr[:])


def _open_copy(key: FeatureKey, patches: Any, dim: int, rows: int) -> tuple[Any, int]:
    """The on-disk copy to write (resumed when a partial one of the same key exists) and its
    ``rows_done``; ``(None, 0)`` when the patches are not in a writable patch cache."""
    folder = _features_dir(patches, key)
    if folder is None or not os.access(folder.parent, os.W_OK):
        return None, 0
    import zarr

    n = int(key.parts["patches"]["n"])
    try:
        group = zarr.open_group(str(folder.parent), mode="a").require_group(folder.name)
        if (folder / key.digest / "zarr.json").is_file():
            arr = zarr.open_array(str(folder / key.digest), mode="a")
            attrs = dict(arr.attrs)
            if attrs.get("key") == key.parts and arr.shape == (n, dim):
                return arr, min(int(attrs.get("rows_done", 0)), n)
        arr = group.create_array(
            key.digest,
            shape=(n, dim),
            chunks=(max(1, min(rows, n)), dim),
            dtype="float32",
            overwrite=True,
        )
        arr.attrs.update({"key": key.parts, "rows_done": 0, "complete": False})
        return arr, 0
    except (OSError, ValueError, TypeError, KeyError):  # full/read-only disk, a corrupt copy
        return None, 0


class _Extraction:
    """Compute one patch array's features block by block, writing each block beside the
    patches (when they are in a writable patch cache) and resuming a partial copy."""

    def __init__(
        self,
        key: FeatureKey,
        model: Any,
        patches: Any,
        device: Any,
        compute: Callable[..., np.ndarray],
        batch_size: int,
    ) -> None:
        self.key, self.model, self.patches, self.device = key, model, patches, device
        self.compute, self.batch_size = compute, max(1, batch_size)
        self.rows = self.batch_size * max(1, _ROWS_PER_BLOCK // self.batch_size)
        self.dim = int(image_encoder_of(model).num_features)

    def _block(self, start: int, stop: int) -> np.ndarray:
        feats = self.compute(
            self.model,
            self.patches[start:stop],
            device=self.device,
            progress=False,
            batch_size=self.batch_size,
        )
        return np.asarray(feats, dtype=np.float32)

    def run(self, progress: bool) -> np.ndarray:
        n = int(self.patches.shape[0])
        arr, start = _open_copy(self.key, self.patches, self.dim, self.rows)
        if arr is None:  # no copy on disk: one call, as in memory
            feats = self.compute(
                self.model,
                self.patches,
                device=self.device,
                progress=progress,
                batch_size=self.batch_size,
            )
            return np.asarray(feats, dtype=np.float32)
        out = np.empty((n, self.dim), dtype=np.float32)
        out[:start] = arr[:start]
        bar = _bar(progress, n, start, self.key)
        # the first block is one batch (for the estimate), then whole stored chunks
        edges = [start, min(n, start + self.batch_size)]
        edges += [*range((edges[1] // self.rows + 1) * self.rows, n, self.rows), n]
        edges = sorted({e for e in edges if start <= e <= n})
        for a, b in itertools.pairwise(edges):
            t0 = time.perf_counter()
            out[a:b] = self._block(a, b)
            if a == start and b < n:
                _estimate(bar, n - b, (time.perf_counter() - t0) / (b - a), self.key, self.device)
            arr = _write(arr, a, b, out)
            if bar is not None:
                bar.update(b - a)
        if bar is not None:
            bar.close()
        if arr is not None:
            _mark_complete(arr)
        return out


def _write(arr: Any, a: int, b: int, out: np.ndarray) -> Any:
    """Rows ``a:b`` to the copy, then ``rows_done`` (a kill before it rewrites them)."""
    if arr is None:
        return None
    try:
        arr[a:b] = out[a:b]
        arr.attrs["rows_done"] = b
        return arr
    except OSError:  # a full disk: keep computing in memory
        return None


def _mark_complete(arr: Any) -> None:
    with contextlib.suppress(OSError):
        arr.attrs["complete"] = True  # last: marks the copy whole


def _bar(progress: bool, total: int, initial: int, key: FeatureKey) -> Any:
    if not progress:
        return None
    from mclstexp._progress import progress_bar

    name = key.parts.get("backbone", "encoder")
    return progress_bar(total=total, initial=initial, desc=f"features {name}", unit="patch")


def _estimate(bar: Any, remaining: int, per_row: float, key: FeatureKey, device: Any) -> None:
    """Say how long the rest will take when that is over a minute (progress bars only)."""
    seconds = remaining * per_row
    if bar is None or seconds < _ESTIMATE_AFTER_S:
        return
    name = key.parts.get("backbone", "encoder")
    text = (
        f"frozen features of {name} on {getattr(device, 'type', device)}: about "
        f"{seconds / 60:.0f} min for {remaining} more patches ({per_row:.2f} s/patch); they are "
        "written beside the patches as they come, and an interrupted run resumes"
    )
    write = getattr(bar, "write", None)
    if callable(write):
        write(text, file=sys.stderr)


#: The process's cache (used by training and the fold runner unless another is passed).
DEFAULT_CACHE = FeatureCache()


def frozen_features(
    model: Any,
    patches: Sequence[Any],
    *,
    device: Any = "auto",
    progress: bool = False,
    cache: FeatureCache | None = None,
) -> list[np.ndarray]:
    """Frozen backbone features of each patch array through ``cache`` (default
    :data:`DEFAULT_CACHE`); see :meth:`FeatureCache.features`.

    Examples
    --------
    >>> feats = frozen_features(model, [cache.patches], device="cpu")  # doctest: +SKIP
    """
    cache = DEFAULT_CACHE if cache is None else cache
    out = cache.features(model, patches, device=device, progress=progress)
    trim_heap()  # the views' temporaries back to the OS
    return out
