"""Frozen-encoder features: computed once per content, kept in memory and beside the patches.

In frozen-encoder mode the backbone never changes, so its pooled features of a patch
(:func:`mclstexp.models.runtime.backbone_features`) are computed once and reused by every fold,
seed and run that asks for the same thing. What "the same" means is a content hash,
:class:`FeatureKey`, over

- the backbone's weights: sha256 of its ``state_dict`` (names, dtypes, shapes, bytes);
- the feature-relevant configuration: backbone name, pooling, feature views, image
  normalisation, ``drop_final_activation``, and the compute precision (float32 on CPU, the
  autocast dtype on CUDA);
- the patches: for a patch cache written by mclstexp, its group name and a digest of its
  recorded attributes (slide checksum, spot centres, patch size, stain normalisation, ...); for
  any other array, a sha256 of its bytes.

:class:`FeatureCache` keeps features in memory for the process (an LRU bounded by count) and,
when the patches come from a writable patch cache on disk, stores them in its Zarr group as
``<group>/features/<key digest>`` (float32 ``[N, F]``, attributes: the key's parts and
``complete``), where a later process finds them. A copy whose writing was interrupted has no
``complete`` attribute and is recomputed. :data:`DEFAULT_CACHE` is the process's cache.

The computation is the ``compute`` argument (default :func:`backbone_features`), so other
encoders and precisions can reuse the keying and storage.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mclstexp.models.runtime import backbone_features, precision, resolve_device
from mclstexp.pp.patch_cache import cache_group

__all__ = [
    "DEFAULT_CACHE",
    "FeatureCache",
    "FeatureKey",
    "backbone_digest",
    "feature_key",
    "frozen_features",
    "patches_identity",
]

#: Version of the key scheme (a change of what enters the key bumps it).
KEY_VERSION = 1
_ROWS_PER_CHUNK = 4096


@dataclass(frozen=True)
class FeatureKey:
    """What a feature array was computed from (``parts``) and its sha256 (``digest``)."""

    digest: str
    parts: dict[str, Any] = field(compare=False, hash=False)


def backbone_digest(backbone: Any) -> str:
    """sha256 over a module's ``state_dict`` tensors: names, dtypes, shapes and bytes.

    Examples
    --------
    >>> from mclstexp.models.image_encoder import build_backbone
    >>> len(backbone_digest(build_backbone("test_resnet")))
    64
    """
    import torch

    h = hashlib.sha256()
    for name, tensor in backbone.state_dict().items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}\0{t.dtype}\0{tuple(tensor.shape)}\0".encode())
        h.update(t.view(torch.uint8).numpy())
    return h.hexdigest()


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


def _model_parts(model: Any, device: Any) -> dict[str, Any]:
    cfg = model.config
    return {
        "version": KEY_VERSION,
        "backbone_sha256": backbone_digest(model.image_encoder.backbone),
        "backbone": cfg.backbone,
        "pooling": cfg.pooling,
        "feature_views": cfg.feature_views,
        "image_normalization": cfg.image_normalization,
        "drop_final_activation": cfg.drop_final_activation,
        "precision": precision(device),
    }


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
    ) -> list[np.ndarray]:
        """Backbone features ``[N_i, F]`` float32 of each patch array, computed only when no
        copy of the same key is in memory or beside the patches."""
        dev = resolve_device(device)
        model_parts = _model_parts(model, dev)
        out = []
        for p in patches:
            key = _key(model_parts, p)
            feats = self._lookup(key, p)
            if feats is None:
                feats = np.asarray(compute(model, p, device=dev, progress=progress), np.float32)
                self.stats["computed"] += 1
                _store(key, p, feats)
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


def _store(key: FeatureKey, patches: Any, feats: np.ndarray) -> None:
    """Write ``feats`` beside the patches when their cache folder is writable (else nothing)."""
    folder = _features_dir(patches, key)
    if folder is None or not os.access(folder.parent, os.W_OK):
        return
    import zarr

    rows = max(1, min(_ROWS_PER_CHUNK, feats.shape[0]))
    try:
        group = zarr.open_group(str(folder.parent), mode="a").require_group(folder.name)
        arr = group.create_array(
            key.digest,
            shape=feats.shape,
            chunks=(rows, feats.shape[1]),
            dtype="float32",
            overwrite=True,
        )
        arr[:] = feats
        arr.attrs.update({"key": key.parts, "complete": True})  # last: marks the copy whole
    except OSError:  # a full or read-only disk: the features are still returned
        return


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
    return cache.features(model, patches, device=device, progress=progress)
