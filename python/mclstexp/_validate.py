"""Argument checks shared by every layer (a shared leaf, like ``_keys``): one copy of each.

``check_n_threads`` is the thread-count argument of every native call (``pp`` layout and stain,
``retrieval``); ``dense_matrix`` is the dense ``float64`` (spots x genes) input of the statistics
(``metrics``, ``baselines``); ``check_points`` is the float64 ``(n, 2)`` array of ``(x, y)`` points
of every patch read (``io``, ``pp``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["check_n_threads", "check_points", "dense_matrix"]


def check_n_threads(n_threads: Any) -> int | None:
    """Validate a thread count: an int >= 1, or ``None`` for the default pool size.

    Parameters
    ----------
    n_threads
        ``None``, a Python int or a numpy integer (not a bool).

    Returns
    -------
    int or None
        ``n_threads`` as a Python int, or ``None``.

    Raises
    ------
    TypeError
        Not an integer (``True``, ``2.0``, ``"2"``).
    ValueError
        Smaller than 1.

    Examples
    --------
    >>> import numpy as np
    >>> check_n_threads(np.int64(2)), check_n_threads(None)
    (2, None)
    >>> check_n_threads(0)
    Traceback (most recent call last):
    ...
    ValueError: n_threads: must be >= 1 (or None for the default), got 0
    """
    if n_threads is None:
        return None
    if isinstance(n_threads, bool) or not isinstance(n_threads, int | np.integer):
        raise TypeError(f"n_threads: expected an int >= 1 or None, got {type(n_threads).__name__}")
    if n_threads < 1:
        raise ValueError(f"n_threads: must be >= 1 (or None for the default), got {n_threads}")
    return int(n_threads)


def dense_matrix(x: Any, name: str) -> np.ndarray:
    """A validated dense ``float64`` ``(n_spots, n_genes)`` array of an array or sparse matrix.

    Parameters
    ----------
    x
        Array-like or scipy sparse matrix (``toarray`` is called).
    name
        Argument name used in error messages.

    Returns
    -------
    numpy.ndarray
        2-D float64; ``x`` itself when it already is one (no copy).

    Raises
    ------
    ValueError
        Not 2-D, or NaN / infinite values.

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> dense_matrix(sp.eye(2, format="csr"), "y").tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    >>> dense_matrix([1.0, 2.0], "y")
    Traceback (most recent call last):
    ...
    ValueError: y must be a 2-D (n_spots, n_genes) matrix, got shape (2,)
    """
    if hasattr(x, "toarray") and not isinstance(x, np.ndarray):
        x = x.toarray()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n_spots, n_genes) matrix, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values; clean or impute them first")
    return arr


def check_points(points: Any, name: str) -> np.ndarray:
    """Validate ``(x, y)`` points: an ``(n, 2)`` array of finite real numbers.

    Parameters
    ----------
    points
        Array-like of shape ``(n, 2)``; integers and floats are real numbers, booleans, complex
        numbers, strings and other objects are not.
    name
        Argument name used in error messages.

    Returns
    -------
    numpy.ndarray
        C-contiguous float64 ``(n, 2)``.

    Raises
    ------
    ValueError
        Another shape, a dtype that is not a real number, or NaN / infinite values.

    Examples
    --------
    >>> check_points([[1, 2], [3, 4]], "centers").dtype
    dtype('float64')
    >>> check_points(np.zeros((4, 3)), "centers")
    Traceback (most recent call last):
    ...
    ValueError: centers: expected an (n, 2) array of (x, y) points, got shape (4, 3)
    """
    arr = np.asarray(points)
    if arr.dtype.kind not in "iuf":
        raise ValueError(
            f"{name}: expected an (n, 2) array of (x, y) points as real numbers, got dtype "
            f"{arr.dtype}"
        )
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(
            f"{name}: expected an (n, 2) array of (x, y) points, got shape {arr.shape}"
        )
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: must be finite")
    return arr
