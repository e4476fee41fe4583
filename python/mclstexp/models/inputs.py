"""What the spot encoder reads: spot arrays from an AnnData, and the attention sequences.

Spot arrays (:func:`spot_arrays`): ``X`` = normalised expression of the panel genes as dense
float32 ``[n_obs, G]`` and the integer array coordinates ``obs["array_row"/"array_col"]`` as int64
``[n_obs, 2]`` (the indices of the spot encoder's position tables).

What forms one attention sequence (method.md §3, §7):

``"batch"`` (legacy)
    Each training batch is ``batch_size`` random spots pooled over all training sections and is
    one sequence. At inference, runs of ``inference_sequence_length`` consecutive spots (file
    order) are one sequence (the original's behaviour).
``"neighbourhood"`` (default)
    Each section is cut once, deterministically, into groups of about ``sequence_length``
    spatially adjacent spots: spots are ordered along a Hilbert curve over their array
    coordinates (ties by obs order) and the order is split into ``ceil(n / L)`` runs of equal
    size (+-1). A group is one sequence in training and at inference; a training batch holds
    ``max(1, batch_size // L)`` random groups (possibly from different sections).

Training (:mod:`mclstexp.train`) draws its batches from a :class:`BatchPlan`; inference
(:func:`mclstexp.tl.embed_spots`) uses :func:`inference_sequences`; both pad sequences with
:func:`batch_sequences`. No torch import here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mclstexp import _keys

__all__ = [
    "BatchPlan",
    "batch_sequences",
    "dense_float32",
    "downscale_patches",
    "reduced_edge",
    "hilbert_order",
    "inference_sequences",
    "neighbourhood_groups",
    "spot_arrays",
    "spot_expression",
    "spot_positions",
]


def dense_float32(x: Any) -> np.ndarray:
    """A dense, C-contiguous float32 copy (or view) of a matrix that may be sparse.

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> dense_float32(sp.eye(2, format="csr")).tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    """
    if hasattr(x, "toarray"):
        x = x.toarray()
    return np.ascontiguousarray(np.asarray(x), dtype=np.float32)


def reduced_edge(edge: int, input_size: int) -> int:
    """The edge a model with ``input_size`` sees a patch of ``edge`` pixels at: the patch is
    reduced by the largest integer factor ``f`` that divides ``edge`` and keeps
    ``edge / f >= input_size`` (0 or a larger ``input_size``: the patch as cut).

    Examples
    --------
    >>> reduced_edge(224, 112), reduced_edge(224, 100), reduced_edge(64, 112), reduced_edge(224, 0)
    (112, 112, 64, 224)
    """
    if input_size <= 0 or edge <= input_size:
        return int(edge)
    f = max(d for d in range(1, edge // input_size + 1) if edge % d == 0)
    return int(edge // f)


def downscale_patches(patches: Any, size: int) -> np.ndarray:
    """uint8 ``[N, H, W, 3]`` patches reduced to ``size`` x ``size`` by averaging f x f blocks
    (``f = H / size``, an integer), rounded half up: how a model with ``input_size`` sees a
    patch (at :func:`reduced_edge`), in training and at inference alike.

    Examples
    --------
    >>> x = np.arange(16, dtype=np.uint8).reshape(1, 4, 4, 1).repeat(3, axis=3)
    >>> downscale_patches(x, 2)[0, :, :, 0].tolist()
    [[3, 5], [11, 13]]
    >>> downscale_patches(x, 4) is x
    True
    """
    shape = tuple(getattr(patches, "shape", ()))
    if len(shape) != 4 or shape[-1] != 3 or np.dtype(patches.dtype) != np.uint8:
        raise ValueError(f"patches: expected uint8 [N, H, W, 3], got {shape} {patches.dtype}")
    n, h, w, _ = shape
    if size < 1 or h != w or h % size:
        raise ValueError(
            f"size: the patch edge ({h} x {w}) must be square and a multiple of size={size}"
        )
    if size == h:
        return patches
    f = h // size
    blocks = np.asarray(patches, dtype=np.uint32).reshape(n, size, f, size, f, 3)
    total = blocks.sum(axis=(2, 4))
    return ((total + (f * f) // 2) // (f * f)).astype(np.uint8)


def _name(adata: Any, name: str | None) -> str:
    if name is not None:
        return str(name)
    return _keys.section_id(adata)


def spot_expression(adata: Any, *, name: str | None = None) -> np.ndarray:
    """``adata.X`` as dense float32 ``[n_obs, G]``; non-finite values raise ``ValueError``.

    ``name`` labels the section in error messages (default: its section id).

    Examples
    --------
    >>> import anndata as ad
    >>> spot_expression(ad.AnnData(np.ones((2, 3)))).dtype
    dtype('float32')
    """
    x = dense_float32(adata.X)
    if not np.isfinite(x).all():
        raise ValueError(
            f"section {_name(adata, name)}: adata.X has non-finite values; pass normalised "
            "expression (mclstexp.pp.normalize_expression) with zero-count spots handled"
        )
    return x


def spot_positions(adata: Any, *, name: str | None = None) -> np.ndarray:
    """Integer array coordinates ``(array_row, array_col)`` as int64 ``[n_obs, 2]``.

    They must be present, finite and >= 0 (they index the spot encoder's position tables).

    Examples
    --------
    >>> import anndata as ad
    >>> import pandas as pd
    >>> obs = pd.DataFrame({"array_row": [0, 1], "array_col": [2, 0]}, index=["a", "b"])
    >>> spot_positions(ad.AnnData(obs=obs)).tolist()
    [[0, 2], [1, 0]]
    """
    missing = [k for k in (_keys.ARRAY_ROW, _keys.ARRAY_COL) if k not in adata.obs]
    if missing:
        raise ValueError(
            f"section {_name(adata, name)}: adata.obs lacks {missing}; the spot encoder's "
            "position tables are indexed by integer array coordinates"
        )
    pos = adata.obs[[_keys.ARRAY_ROW, _keys.ARRAY_COL]].to_numpy()
    if not np.isfinite(pos.astype(np.float64)).all() or (pos < 0).any():
        raise ValueError(
            f"section {_name(adata, name)}: array_row/array_col must be finite and >= 0"
        )
    return np.ascontiguousarray(np.round(pos).astype(np.int64))


def spot_arrays(adata: Any, *, name: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(expression, positions)`` of a section: :func:`spot_expression`, :func:`spot_positions`.

    Examples
    --------
    >>> import anndata as ad
    >>> import pandas as pd
    >>> obs = pd.DataFrame({"array_row": [0, 1], "array_col": [0, 0]}, index=["a", "b"])
    >>> expr, pos = spot_arrays(ad.AnnData(np.ones((2, 3), np.float32), obs=obs))
    >>> expr.shape, pos.tolist()
    ((2, 3), [[0, 0], [1, 0]])
    """
    return spot_expression(adata, name=name), spot_positions(adata, name=name)


# ----------------------------------------------------------------------------- sequences


def hilbert_order(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Stable order of points along a Hilbert curve over integer grid coordinates.

    Examples
    --------
    >>> hilbert_order(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 0])).tolist()
    [0, 3, 2, 1]
    """
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    if rows.size == 0:
        return np.empty(0, dtype=np.int64)
    rows = rows - rows.min()
    cols = cols - cols.min()
    side = 1 << max(1, int(max(rows.max(), cols.max())).bit_length())
    x, y = cols.copy(), rows.copy()
    d = np.zeros_like(x)
    s = side // 2
    while s > 0:
        rx = ((x & s) > 0).astype(np.int64)
        ry = ((y & s) > 0).astype(np.int64)
        d += s * s * ((3 * rx) ^ ry)
        # rotate the quadrant
        flip = ry == 0
        swap_x = np.where(flip & (rx == 1), s - 1 - x, x)
        swap_y = np.where(flip & (rx == 1), s - 1 - y, y)
        x = np.where(flip, swap_y, swap_x)
        y = np.where(flip, swap_x, swap_y)
        s //= 2
    return np.argsort(d, kind="stable")


def neighbourhood_groups(positions: np.ndarray, length: int) -> list[np.ndarray]:
    """Cut one section into ``ceil(n / length)`` groups of spatially adjacent spots.

    Deterministic (Hilbert order over ``(array_row, array_col)``, ties by obs order); group sizes
    differ by at most one. The same groups are used in training and at inference.

    Examples
    --------
    >>> pos = np.stack(np.meshgrid(np.arange(4), np.arange(4), indexing="ij"), -1).reshape(-1, 2)
    >>> [len(g) for g in neighbourhood_groups(pos, 4)]
    [4, 4, 4, 4]
    """
    n = len(positions)
    if n == 0:
        return []
    order = hilbert_order(positions[:, 0], positions[:, 1])
    n_groups = max(1, math.ceil(n / length))
    return [np.sort(g) for g in np.array_split(order, n_groups)]


def inference_sequences(positions: np.ndarray, mode: str, length: int) -> list[np.ndarray]:
    """The sequences a section's spots are embedded in at inference (see module docstring).

    Examples
    --------
    >>> [s.tolist() for s in inference_sequences(np.zeros((5, 2), np.int64), "batch", 2)]
    [[0, 1], [2, 3], [4]]
    """
    n = len(positions)
    if mode == "neighbourhood":
        return neighbourhood_groups(positions, length)
    if mode == "batch":
        return [np.arange(s, min(n, s + length)) for s in range(0, n, length)]
    raise ValueError(f"sequence mode must be 'batch' or 'neighbourhood', got {mode!r}")


def batch_sequences(
    sequences: Sequence[np.ndarray], expression: np.ndarray, positions: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pad sequences (index arrays) into ``(S, L, G)`` expression, ``(S, L, 2)`` positions and an
    ``(S, L)`` mask; real spots are row-major in the mask, in the order of the concatenated
    sequences.

    Examples
    --------
    >>> expr, pos, mask = batch_sequences([np.array([0, 1]), np.array([2])],
    ...                                   np.ones((3, 4), np.float32), np.zeros((3, 2), np.int64))
    >>> expr.shape, mask.tolist()
    ((2, 2, 4), [[True, True], [True, False]])
    """
    s = len(sequences)
    length = max(len(q) for q in sequences)
    g = expression.shape[1]
    expr = np.zeros((s, length, g), dtype=np.float32)
    pos = np.zeros((s, length, 2), dtype=np.int64)
    mask = np.zeros((s, length), dtype=bool)
    for i, q in enumerate(sequences):
        expr[i, : len(q)] = expression[q]
        pos[i, : len(q)] = positions[q]
        mask[i, : len(q)] = True
    return expr, pos, mask


class BatchPlan:
    """The batches of every epoch: attention sequences over several sections, sharded by rank.

    Every rank builds the same global list of batches from ``(seed, epoch)``; step ``t`` of rank
    ``r`` is global batch ``t * world_size + r`` (like ``DistributedSampler``; with more than one
    rank the trailing incomplete round is dropped so that all ranks take the same number of steps).
    A batch is a list of sequences; a sequence is an array of global spot ids (section offsets
    applied in the order of ``positions``).

    Parameters
    ----------
    positions
        ``(array_row, array_col)`` arrays, one per section.
    mode
        ``"batch"`` or ``"neighbourhood"``.
    batch_size
        Spots per batch (per rank).
    sequence_length
        Spots per neighbourhood group.
    seed, rank, world_size
        Shuffling seed and sharding.

    Examples
    --------
    >>> plan = BatchPlan([np.zeros((10, 2), np.int64)], mode="batch", batch_size=4)
    >>> [sum(len(q) for q in b) for b in plan.batches(0)]
    [4, 4, 2]
    """

    def __init__(
        self,
        positions: Sequence[np.ndarray],
        *,
        mode: str,
        batch_size: int,
        sequence_length: int = 32,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if mode not in ("batch", "neighbourhood"):
            raise ValueError(f"mode must be 'batch' or 'neighbourhood', got {mode!r}")
        self.mode = mode
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        sizes = [len(p) for p in positions]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.n_spots = int(self.offsets[-1])
        self.groups: list[np.ndarray] = []
        if mode == "neighbourhood":
            for off, pos in zip(self.offsets[:-1], positions, strict=True):
                self.groups.extend(g + off for g in neighbourhood_groups(pos, sequence_length))
            self.groups_per_batch = max(1, self.batch_size // sequence_length)
        if self.n_spots == 0:
            raise ValueError("no training spots")

    def batches(self, epoch: int) -> list[list[np.ndarray]]:
        """The global list of batches of ``epoch`` (same on every rank)."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        if self.mode == "batch":
            perm = rng.permutation(self.n_spots)
            return [
                [perm[s : s + self.batch_size]] for s in range(0, self.n_spots, self.batch_size)
            ]
        perm = rng.permutation(len(self.groups))
        k = self.groups_per_batch
        return [[self.groups[i] for i in perm[s : s + k]] for s in range(0, len(perm), k)]

    def rank_batches(self, epoch: int) -> list[list[np.ndarray]]:
        """This rank's batches of ``epoch``."""
        all_b = self.batches(epoch)
        if self.world_size == 1:
            return all_b
        steps = len(all_b) // self.world_size
        if steps == 0:
            raise ValueError(
                f"{len(all_b)} batches cannot feed {self.world_size} ranks; lower batch_size"
            )
        return [all_b[t * self.world_size + self.rank] for t in range(steps)]
