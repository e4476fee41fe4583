"""Training sections: a section's model inputs and its patches, read per batch.

A :class:`TrainingSection` pairs an AnnData (``X`` = normalised expression of the panel genes,
integer array coordinates in ``obs``; see :func:`mclstexp.models.inputs.spot_arrays`) with the
spot patches (``[n_obs, H, W, 3]`` uint8, a numpy array or the ``zarr.Array`` of a patch cache,
aligned with ``obs_names``). Patches that training reads as images are read into RAM once when
small enough, else sliced from the cache per batch (:class:`mclstexp.pp.patch_cache.ChunkReader`);
slides are never decoded here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mclstexp import _keys
from mclstexp.models.inputs import downscale_patches, spot_arrays
from mclstexp.pp.patch_cache import ChunkReader, read_all, take_rows

__all__ = ["TrainingSection"]


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
        Read a Zarr (or other lazy) patch array into RAM once, in contiguous slices, when
        training needs images (:meth:`hold_in_memory`), so that epochs slice numpy instead of
        decoding one chunk per spot per batch. ``None`` (default) does so when the patches take
        at most ``MCLSTEXP_PATCH_RAM_GB`` GiB (default 4); ``False`` always reads lazily.

    Attributes
    ----------
    expression, positions
        The spot arrays (:func:`mclstexp.models.inputs.spot_arrays`).
    source
        The patches as given (e.g. the patch cache's ``zarr.Array``), also after ``patches``
        was read into RAM: frozen features are keyed by it (:mod:`mclstexp.models.features`).

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
    source: Any = field(init=False, repr=False)
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
        self.source = self.patches  # before a RAM copy: identifies the patch cache
        self.release_memory()

    def hold_in_memory(self) -> None:
        """Read lazy patches into RAM once (when ``in_memory`` allows it), so that epochs slice
        numpy; training calls it in image mode only (frozen features and cached fronts never
        read patches in the loader)."""
        if not isinstance(self.patches, np.ndarray) and self._load_into_memory():
            self.patches = read_all(self.patches)
            self._chunks = None

    def release_memory(self) -> None:
        """Drop the RAM copy: read the patches from :attr:`source` again."""
        self.patches = self.source
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

    def downscaled(self, size: int) -> TrainingSection:
        """This section with its patches read into RAM and reduced to ``size`` pixels
        (:func:`mclstexp.models.inputs.downscale_patches`, as a model with that ``input_size``
        reduces them): the loader then augments the small patches.

        Examples
        --------
        >>> import anndata as ad
        >>> import pandas as pd
        >>> obs = pd.DataFrame({"array_row": [0], "array_col": [0]}, index=["a"])
        >>> sec = TrainingSection(ad.AnnData(np.ones((1, 2), np.float32), obs=obs),
        ...                       np.zeros((1, 8, 8, 3), np.uint8), name="S")
        >>> sec.downscaled(4).patch_shape
        (4, 4, 3)
        """
        if self.patch_shape[0] == size:
            return self
        small = downscale_patches(read_all(self.patches), size)
        return TrainingSection(self.adata, small, name=self.name, in_memory=True)

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
