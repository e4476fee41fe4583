"""One retrieval interface over several backends, for comparison and benchmarking.

Every index returned by :func:`make_index` has ``add(more)``, ``len(index)`` and
``search(queries, k) -> (scores float32 (Q, k), indices int64 (Q, k))``, best first, with the
cosine similarity as score. Backends:

==========  =====================================================  =========  ==================
name        what runs                                              exact      needs
==========  =====================================================  =========  ==================
native      :class:`~mclstexp.retrieval.ExactIndex` (Rust, SIMD)   yes        (built in)
numpy       blocked ``queries @ reference.T`` + ``argpartition``   yes        (built in)
torch       blocked ``torch.mm`` + ``torch.topk``                  yes [1]_   torch (a dependency)
faiss       ``faiss.IndexFlatIP`` on normalised rows               yes [1]_   ``mclstexp[faiss]``
hnswlib     HNSW graph, inner-product space                        no         ``mclstexp[ann]``
usearch     HNSW graph, cosine metric                              no         ``mclstexp[ann]``
==========  =====================================================  =========  ==================

.. [1] Exact up to rounding; the order of equal scores is the library's.

Optional libraries are imported only when their backend is asked for.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from mclstexp._validate import check_n_threads
from mclstexp.retrieval.index import ExactIndex, _as_k, _as_matrix

__all__ = ["BACKENDS", "RetrievalIndex", "make_index"]

BACKENDS = ("native", "numpy", "torch", "faiss", "hnswlib", "usearch")
_EXTRAS = {"faiss": "faiss", "hnswlib": "ann", "usearch": "ann", "torch": None}
_PIP_NAMES = {"faiss": "faiss-cpu", "hnswlib": "hnswlib", "usearch": "usearch", "torch": "torch"}

Result = tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]


class RetrievalIndex(Protocol):
    """The interface every backend implements."""

    def add(self, more: npt.ArrayLike) -> None: ...
    def __len__(self) -> int: ...
    def search(self, queries: npt.ArrayLike, k: int) -> Result: ...


def _require(module: str) -> Any:
    """Import an optional library or raise an ImportError saying what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        extra = _EXTRAS.get(module)
        how = f"pip install 'mclstexp[{extra}]'" if extra else f"pip install {_PIP_NAMES[module]}"
        raise ImportError(
            f"backend={module!r} needs the optional library {_PIP_NAMES[module]!r}: {how}"
        ) from err


def _normalise(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Row-wise L2 normalisation in float64, zero rows left at zero."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return (x * inv[:, None]).astype(np.float32)


def _sort_rows(scores: np.ndarray, indices: np.ndarray) -> Result:
    """Sort each row best first (score descending, then index ascending)."""
    order = np.lexsort((indices, -scores), axis=-1)
    return (
        np.take_along_axis(scores, order, -1).astype(np.float32),
        np.take_along_axis(indices, order, -1).astype(np.int64),
    )


class _Base:
    """Shared validation: dimension, ``k``, thread count."""

    dim: int
    n_threads: int | None

    def _check(self, queries: npt.ArrayLike, k: int) -> tuple[npt.NDArray[np.float32], int]:
        return _as_matrix(queries, "queries", self.dim), _as_k(k, len(self))

    def __len__(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError


class NumpyIndex(_Base):
    """Exact search with numpy: blocks of ``queries @ reference.T`` and ``argpartition``.

    ``max_block_bytes`` bounds the score block held at once (default 256 MiB).
    """

    def __init__(
        self,
        reference: npt.ArrayLike,
        *,
        n_threads: int | None = None,
        max_block_bytes: int = 256 << 20,
    ) -> None:
        ref = _as_matrix(reference, "reference")
        self.dim = ref.shape[1]
        self.n_threads = check_n_threads(n_threads)
        self._rows = [_normalise(ref)]
        self._ref = self._rows[0]
        self.max_block_bytes = int(max_block_bytes)

    def add(self, more: npt.ArrayLike) -> None:
        self._rows.append(_normalise(_as_matrix(more, "reference", self.dim)))
        self._ref = np.concatenate(self._rows) if len(self._rows) > 1 else self._rows[0]
        self._rows = [self._ref]

    def __len__(self) -> int:
        return int(self._ref.shape[0])

    def search(self, queries: npt.ArrayLike, k: int) -> Result:
        q, k = self._check(queries, k)
        qn = _normalise(q)
        n = len(self)
        block = max(1, min(len(qn), self.max_block_bytes // (4 * n)))
        scores = np.empty((len(qn), k), np.float32)
        indices = np.empty((len(qn), k), np.int64)
        with _blas_threads(self.n_threads):
            for s in range(0, len(qn), block):
                sim = qn[s : s + block] @ self._ref.T
                if k < n:
                    part = np.argpartition(-sim, k - 1, axis=1)[:, :k]
                else:
                    part = np.broadcast_to(np.arange(n), sim.shape).copy()
                top = np.take_along_axis(sim, part, 1)
                scores[s : s + block], indices[s : s + block] = _sort_rows(top, part)
        return scores, indices


@contextlib.contextmanager
def _blas_threads(n_threads: int | None) -> Iterator[None]:
    """Limit BLAS threads inside the block when ``n_threads`` is given (threadpoolctl)."""
    if n_threads is None:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        yield
        return
    with threadpool_limits(limits=n_threads, user_api="blas"):
        yield


class TorchIndex(_Base):
    """Exact search with PyTorch: blocks of ``torch.mm`` and ``torch.topk``, on the CPU or a GPU.

    ``device="cuda"`` keeps the normalised reference on the GPU; each search moves the queries
    there and the top-k back (the exact-retrieval counterpart of the native CPU index on a GPU
    node). Scores equal the other exact backends' up to float32 rounding of the products.
    """

    def __init__(
        self,
        reference: npt.ArrayLike,
        *,
        n_threads: int | None = None,
        max_block_bytes: int = 256 << 20,
        device: str = "cpu",
    ) -> None:
        self._torch = _require("torch")
        ref = _as_matrix(reference, "reference")
        self.dim = ref.shape[1]
        self.n_threads = check_n_threads(n_threads)
        self.device = self._torch.device(device)
        self._ref = self._torch.from_numpy(_normalise(ref)).to(self.device)
        self.max_block_bytes = int(max_block_bytes)

    def add(self, more: npt.ArrayLike) -> None:
        rows = self._torch.from_numpy(_normalise(_as_matrix(more, "reference", self.dim)))
        self._ref = self._torch.cat([self._ref, rows.to(self.device)])

    def __len__(self) -> int:
        return int(self._ref.shape[0])

    def search(self, queries: npt.ArrayLike, k: int) -> Result:
        torch = self._torch
        q, k = self._check(queries, k)
        qn = torch.from_numpy(_normalise(q)).to(self.device)
        n = len(self)
        block = max(1, min(len(qn), self.max_block_bytes // (4 * n)))
        previous = torch.get_num_threads()
        if self.n_threads is not None:
            torch.set_num_threads(self.n_threads)
        try:
            out_s, out_i = [], []
            with torch.inference_mode():
                for s in range(0, len(qn), block):
                    top = torch.topk(qn[s : s + block] @ self._ref.T, k, dim=1, sorted=True)
                    out_s.append(top.values.cpu().numpy())
                    out_i.append(top.indices.cpu().numpy())
        finally:
            torch.set_num_threads(previous)
        return np.concatenate(out_s).astype(np.float32), np.concatenate(out_i).astype(np.int64)


class FaissIndex(_Base):
    """faiss ``IndexFlatIP`` (exact, BLAS) on normalised rows."""

    def __init__(self, reference: npt.ArrayLike, *, n_threads: int | None = None) -> None:
        self._faiss = _require("faiss")
        ref = _as_matrix(reference, "reference")
        self.dim = ref.shape[1]
        self.n_threads = check_n_threads(n_threads)
        self._index = self._faiss.IndexFlatIP(self.dim)
        self._index.add(_normalise(ref))

    def add(self, more: npt.ArrayLike) -> None:
        self._index.add(_normalise(_as_matrix(more, "reference", self.dim)))

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def search(self, queries: npt.ArrayLike, k: int) -> Result:
        q, k = self._check(queries, k)
        if self.n_threads is not None:
            self._faiss.omp_set_num_threads(self.n_threads)
        scores, indices = self._index.search(_normalise(q), k)
        return scores.astype(np.float32), indices.astype(np.int64)


class HnswlibIndex(_Base):
    """hnswlib HNSW graph in inner-product space on normalised rows (approximate).

    Options: ``M`` (16), ``ef_construction`` (200), ``ef`` (search breadth, default
    ``max(2k, 64)``).
    """

    def __init__(
        self,
        reference: npt.ArrayLike,
        *,
        n_threads: int | None = None,
        M: int = 16,
        ef_construction: int = 200,
        ef: int | None = None,
        seed: int = 0,
    ) -> None:
        hnswlib = _require("hnswlib")
        ref = _as_matrix(reference, "reference")
        self.dim = ref.shape[1]
        self.n_threads = check_n_threads(n_threads)
        self.ef = ef
        self._index = hnswlib.Index(space="ip", dim=self.dim)
        self._index.init_index(
            max_elements=len(ref), ef_construction=ef_construction, M=M, random_seed=seed
        )
        self._index.add_items(_normalise(ref), np.arange(len(ref)), num_threads=self._threads())

    def _threads(self) -> int:
        return -1 if self.n_threads is None else self.n_threads

    def add(self, more: npt.ArrayLike) -> None:
        rows = _normalise(_as_matrix(more, "reference", self.dim))
        n = len(self)
        self._index.resize_index(n + len(rows))
        self._index.add_items(rows, np.arange(n, n + len(rows)), num_threads=self._threads())

    def __len__(self) -> int:
        return int(self._index.get_current_count())

    def search(self, queries: npt.ArrayLike, k: int) -> Result:
        q, k = self._check(queries, k)
        self._index.set_ef(max(k, self.ef if self.ef is not None else max(2 * k, 64)))
        labels, dist = self._index.knn_query(_normalise(q), k=k, num_threads=self._threads())
        return (1.0 - dist).astype(np.float32), labels.astype(np.int64)


class UsearchIndex(_Base):
    """usearch HNSW graph with the cosine metric (approximate).

    Options: ``connectivity`` (16), ``expansion_add`` (128), ``expansion_search``
    (default ``max(2k, 64)``).
    """

    def __init__(
        self,
        reference: npt.ArrayLike,
        *,
        n_threads: int | None = None,
        connectivity: int = 16,
        expansion_add: int = 128,
        expansion_search: int | None = None,
    ) -> None:
        _require("usearch")
        from usearch.index import Index

        ref = _as_matrix(reference, "reference")
        self.dim = ref.shape[1]
        self.n_threads = check_n_threads(n_threads)
        self.expansion_search = expansion_search
        self._index = Index(
            ndim=self.dim,
            metric="cos",
            dtype="f32",
            connectivity=connectivity,
            expansion_add=expansion_add,
        )
        self._index.add(np.arange(len(ref)), _normalise(ref), threads=self._threads())

    def _threads(self) -> int:
        return 0 if self.n_threads is None else self.n_threads

    def add(self, more: npt.ArrayLike) -> None:
        rows = _normalise(_as_matrix(more, "reference", self.dim))
        n = len(self)
        self._index.add(np.arange(n, n + len(rows)), rows, threads=self._threads())

    def __len__(self) -> int:
        return len(self._index)

    def search(self, queries: npt.ArrayLike, k: int) -> Result:
        q, k = self._check(queries, k)
        self._index.expansion_search = max(
            k, self.expansion_search if self.expansion_search is not None else max(2 * k, 64)
        )
        found = self._index.search(_normalise(q), k, threads=self._threads())
        keys = np.asarray(found.keys, dtype=np.int64).reshape(len(q), -1)
        dist = np.asarray(found.distances, dtype=np.float32).reshape(len(q), -1)
        return (1.0 - dist).astype(np.float32), keys


class NativeIndex(_Base):
    """:class:`~mclstexp.retrieval.ExactIndex` behind the common interface."""

    def __init__(self, reference: npt.ArrayLike, *, n_threads: int | None = None) -> None:
        self.index = ExactIndex(reference, n_threads=n_threads)
        self.dim = self.index.dim
        self.n_threads = n_threads

    def add(self, more: npt.ArrayLike) -> None:
        self.index.add(more)

    def __len__(self) -> int:
        return len(self.index)

    def search(self, queries: npt.ArrayLike, k: int) -> Result:
        return self.index.search(queries, k)


_CLASSES: dict[str, type[Any]] = {
    "native": NativeIndex,
    "numpy": NumpyIndex,
    "torch": TorchIndex,
    "faiss": FaissIndex,
    "hnswlib": HnswlibIndex,
    "usearch": UsearchIndex,
}


def make_index(reference: npt.ArrayLike, *, backend: str = "native", **opts: Any) -> RetrievalIndex:
    """Build a cosine top-k index over ``reference`` with the chosen backend.

    Parameters
    ----------
    reference
        ``(n_rows, dim)`` reference vectors.
    backend
        One of ``"native"`` (default, exact, Rust), ``"numpy"``, ``"torch"``, ``"faiss"``
        (exact), ``"hnswlib"``, ``"usearch"`` (approximate). See the module docs.
    **opts
        ``n_threads`` for every backend, plus the backend's own options (see its class).

    Returns
    -------
    RetrievalIndex
        An object with ``add``, ``len`` and ``search(queries, k) -> (scores, indices)``.

    Examples
    --------
    >>> import numpy as np
    >>> from mclstexp.retrieval import make_index
    >>> index = make_index(np.eye(3), backend="numpy")
    >>> index.search(np.array([[0.0, 0.0, 1.0]]), k=1)[1].tolist()
    [[2]]
    """
    if backend not in _CLASSES:
        raise ValueError(f"backend: must be one of {BACKENDS}, got {backend!r}")
    index: RetrievalIndex = _CLASSES[backend](reference, **opts)
    return index
