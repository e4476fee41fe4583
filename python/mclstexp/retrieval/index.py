"""Exact top-k cosine retrieval over the native (Rust) index.

The index stores L2-normalised ``float32`` rows packed for a SIMD kernel that scores a tile of
queries against a panel of references in registers and keeps each query's best ``k`` on the fly:
the full queries x references score matrix is never built, so a search needs only a normalised
copy of the queries and ``k`` hits per query beyond the index itself. The GIL is released while
the native code runs.

Ordering: best (highest cosine) first; equal scores go to the lower reference index.
Zero vectors have no direction: a zero query or reference row scores exactly ``0`` against
everything (never ``NaN``).

File format (:meth:`ExactIndex.save`), little-endian, ``32 + 4 * n_rows * dim`` bytes::

    offset 0   8 bytes   magic b"MCLSTIDX"
    offset 8   uint32    format version (1)
    offset 12  uint32    metric (0 = cosine)
    offset 16  uint64    n_rows
    offset 24  uint64    dim
    offset 32  float32   the normalised rows, row-major (n_rows x dim)

so the rows read back with ``numpy.fromfile(path, "<f4", offset=32).reshape(n_rows, dim)``.
"""

from __future__ import annotations

import operator
import os
from typing import Any

import numpy as np
import numpy.typing as npt

from mclstexp import _native
from mclstexp._validate import check_n_threads

__all__ = ["ExactIndex", "topk_cosine"]

_METRICS = ("cosine",)


def _as_matrix(
    x: Any, arg: str, dim: int | None = None, other: str = "the index"
) -> npt.NDArray[np.float32]:
    """Validate a 2-D numeric array and convert it once to C-contiguous ``float32``."""
    a = np.asarray(x)
    if a.dtype.kind not in "fiu":
        raise TypeError(f"{arg}: expected a numeric array, got dtype {a.dtype}")
    if a.ndim != 2:
        raise ValueError(
            f"{arg}: expected a 2-D array of shape (n_rows, dim), got shape {a.shape}"
            + (" (use x[None, :] for a single vector)" if a.ndim == 1 else "")
        )
    if a.shape[0] == 0:
        raise ValueError(f"{arg}: is empty (shape {a.shape}); pass at least one row")
    if a.shape[1] == 0:
        raise ValueError(f"{arg}: has 0 columns; vectors need dim >= 1")
    if dim is not None and a.shape[1] != dim:
        raise ValueError(f"{arg}: has {a.shape[1]} columns but {other} has dim {dim}")
    if a.dtype == np.float32:
        return np.ascontiguousarray(a)
    with np.errstate(over="ignore"):
        out = np.ascontiguousarray(a, dtype=np.float32)
    if a.dtype.kind == "f" and not np.isfinite(out).all() and np.isfinite(a).all():
        raise ValueError(f"{arg}: has values beyond the float32 range (|x| > 3.4e38); rescale it")
    return out


def _as_k(k: Any, n: int) -> int:
    try:
        k = operator.index(k)
    except TypeError:
        raise TypeError(f"k: expected an integer, got {type(k).__name__}") from None
    if k < 1:
        raise ValueError(f"k: must be >= 1, got {k}")
    if k > n:
        raise ValueError(f"k: must be <= the number of reference rows ({n}), got {k}")
    return k


class ExactIndex:
    """Exact top-k cosine-similarity index over ``float32`` vectors (native, multi-threaded).

    Parameters
    ----------
    reference
        ``(n_rows, dim)`` reference vectors (any real dtype; converted once to ``float32``).
        Rows are L2-normalised on the way in; a zero row stays zero (cosine 0 with everything).
    metric
        Only ``"cosine"``.
    n_threads
        Threads for building and, by default, searching (``None``: ``MCLSTEXP_NUM_THREADS`` or
        the number of CPUs).

    Examples
    --------
    >>> import numpy as np
    >>> from mclstexp.retrieval import ExactIndex
    >>> index = ExactIndex(np.eye(3, dtype=np.float32))
    >>> scores, indices = index.search(np.array([[1.0, 0.1, 0.0]]), k=2)
    >>> indices.tolist()
    [[0, 1]]
    """

    def __init__(
        self, reference: npt.ArrayLike, *, metric: str = "cosine", n_threads: int | None = None
    ) -> None:
        if metric not in _METRICS:
            raise ValueError(f"metric: must be one of {_METRICS}, got {metric!r}")
        self._n_threads = check_n_threads(n_threads)
        ref = _as_matrix(reference, "reference")
        self._native = _native._ExactIndex(ref.shape[1])
        self._native.add(ref, n_threads=self._n_threads)

    @classmethod
    def _wrap(cls, native: _native._ExactIndex, n_threads: int | None) -> ExactIndex:
        self = cls.__new__(cls)
        self._native = native
        self._n_threads = n_threads
        return self

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return self._native.dim

    @property
    def metric(self) -> str:
        """The similarity (always ``"cosine"``)."""
        return "cosine"

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored (normalised, packed) rows."""
        return self._native.nbytes

    @property
    def kernel(self) -> str:
        """The SIMD kernel the search runs (``"avx512f"``, ``"avx2+fma"`` or ``"portable"``)."""
        return self._native.kernel

    def __len__(self) -> int:
        return len(self._native)

    def __repr__(self) -> str:
        return f"ExactIndex(n_rows={len(self)}, dim={self.dim}, metric='cosine')"

    def add(self, more: npt.ArrayLike) -> None:
        """Append rows; they get the indices ``len(self) .. len(self) + len(more) - 1``.

        Stored rows are never copied again.

        Examples
        --------
        >>> import numpy as np
        >>> index = ExactIndex(np.ones((2, 4)))
        >>> index.add(np.zeros((3, 4)))
        >>> len(index)
        5
        """
        rows = _as_matrix(more, "reference", self.dim)
        self._native.add(rows, n_threads=self._n_threads)

    def search(
        self, queries: npt.ArrayLike, k: int, *, n_threads: int | None = None
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """The ``k`` most cosine-similar stored rows of every query, best first.

        Parameters
        ----------
        queries
            ``(n_queries, dim)`` vectors (normalised internally; a zero query scores 0).
        k
            Neighbours per query, ``1 <= k <= len(self)``.
        n_threads
            Threads for this search (default: the index's ``n_threads``).

        Returns
        -------
        scores
            ``float32 (n_queries, k)`` cosine similarities, descending.
        indices
            ``int64 (n_queries, k)`` reference rows; equal scores go to the lower index.

        Examples
        --------
        >>> import numpy as np
        >>> index = ExactIndex(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        >>> scores, indices = index.search(np.array([[2.0, 0.0]]), k=2)
        >>> indices.tolist(), np.round(scores.astype(float), 3).tolist()
        ([[0, 2]], [[1.0, 0.707]])
        """
        q = _as_matrix(queries, "queries", self.dim)
        k = _as_k(k, len(self))
        threads = self._n_threads if n_threads is None else check_n_threads(n_threads)
        return self._native.search(q, k, n_threads=threads)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index to ``path`` (format in the module docs; no pickle).

        Examples
        --------
        >>> import numpy as np, tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "ref.mclidx"
        >>> ExactIndex(np.eye(2)).save(path)
        >>> len(ExactIndex.load(path))
        2
        """
        self._native.save(os.fspath(path))

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, n_threads: int | None = None) -> ExactIndex:
        """Read an index written by :meth:`save`.

        The header is checked against the file size before anything is allocated; a truncated or
        foreign file raises :class:`OSError` naming it. Rows are used exactly as stored, so a
        round trip gives bit-identical search results.

        Examples
        --------
        >>> ExactIndex.load("missing.mclidx")  # doctest: +SKIP
        """
        threads = check_n_threads(n_threads)
        return cls._wrap(_native._ExactIndex.load(os.fspath(path), n_threads=threads), threads)


def topk_cosine(
    queries: npt.ArrayLike,
    reference: npt.ArrayLike,
    k: int,
    *,
    n_threads: int | None = None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """One-off exact top-k cosine search (builds a temporary :class:`ExactIndex`).

    Returns ``(scores float32 (Q, k), indices int64 (Q, k))``, best first, ties to the lower
    index. For repeated searches over the same reference, build an :class:`ExactIndex` once.

    Examples
    --------
    >>> import numpy as np
    >>> from mclstexp.retrieval import topk_cosine
    >>> scores, indices = topk_cosine(np.array([[0.0, 1.0]]), np.eye(2), k=1)
    >>> indices.tolist()
    [[1]]
    """
    ref = _as_matrix(reference, "reference")
    q = _as_matrix(queries, "queries", ref.shape[1], "reference")
    k = _as_k(k, ref.shape[0])
    return _native.topk_cosine(q, ref, k, n_threads=check_n_threads(n_threads))
