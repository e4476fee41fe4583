"""Spot centres and ids from a table, an ``.h5ad`` or a her2st spot file (where the tiler cuts)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np

__all__ = ["read_spots"]

_ID_COLUMNS = ("id", "spot_id", "barcode", "spot")


def read_spots(path: str | os.PathLike[str]) -> tuple[np.ndarray, list[str]]:
    """Read spot centres (level-0 pixels) and ids.

    Parameters
    ----------
    path
        A CSV/TSV with ``x`` and ``y`` columns and an id column (``id``, ``spot_id``, ``barcode``
        or ``spot``; row numbers otherwise), an ``.h5ad`` (``obsm["spatial"]`` and
        ``obs_names``), or a her2st ``*_selection.tsv`` (selected spots, ``pixel_x``/``pixel_y``).

    Returns
    -------
    tuple
        ``(xy, ids)``: float64 ``(n, 2)`` centres (x = column, y = row) and ``n`` unique ids.

    Raises
    ------
    FileNotFoundError, IsADirectoryError
        No such file, or a folder.
    ValueError
        Not a table, no spots (a header only), a coordinate that is not a finite number, or an
        id used twice; the message names the file and the row (or spot).

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "spots.csv"
    >>> _ = path.write_text("id,x,y\\na,10,20\\nb,30.5,40\\n")
    >>> xy, ids = read_spots(path)
    >>> xy.tolist(), ids
    ([[10.0, 20.0], [30.5, 40.0]], ['a', 'b'])
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, "spot file not found", str(path))
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "a folder, not a spot file", str(path))
    if path.suffix == ".h5ad":
        xy, ids = _from_h5ad(path)
        shown = [(repr(float(x)), repr(float(y))) for x, y in xy]
        where = [f"spot {i!r}" for i in ids]
    else:
        xy, ids, where, shown = _from_table(path)
    _check(path, xy, ids, where, shown)
    return xy, ids


def _from_h5ad(path: Path) -> tuple[np.ndarray, list[str]]:
    from mclstexp.io.h5ad import _spatial, read_anndata

    adata = read_anndata(path)
    return _spatial(adata, path), [str(s) for s in adata.obs_names]


def _from_table(path: Path) -> tuple[np.ndarray, list[str], list[str], list[tuple[str, str]]]:
    """Centres, ids, a name for each row (``row 3 (spot 'a')``) and its x, y as written."""
    import pandas as pd

    sep = "\t" if path.suffix in (".tsv", ".txt") or path.name.endswith(".tsv.gz") else ","
    try:
        df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a spot table ({' '.join(str(err).split())})") from None
    cols = {c.lower(): c for c in df.columns}
    if {"pixel_x", "pixel_y", "x", "y"} <= set(cols):  # her2st *_selection.tsv
        from mclstexp.io.her2st import read_her2st_spots

        spots = read_her2st_spots(path, selected_only=True, sep=sep)
        ids = [str(s) for s in spots.index]
        xy = spots[["pixel_x", "pixel_y"]].to_numpy(dtype=np.float64)
        shown = [(repr(float(x)), repr(float(y))) for x, y in xy]
        return xy, ids, [f"spot {i!r}" for i in ids], shown
    if "x" not in cols or "y" not in cols:
        raise ValueError(f"{path}: expected columns id, x, y (got {list(df.columns)})")
    id_col = next((cols[c] for c in _ID_COLUMNS if c in cols), None)
    ids = list(df[id_col]) if id_col else [str(i) for i in range(len(df))]
    raw = df[[cols["x"], cols["y"]]]
    xy = raw.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    where = [f"row {r + 1} (spot {i!r})" for r, i in enumerate(ids)]
    return xy, ids, where, list(raw.itertuples(index=False, name=None))


def _check(
    path: Path, xy: np.ndarray, ids: list[str], where: list[str], shown: list[tuple[str, str]]
) -> None:
    """No spots, a coordinate that is not a finite number, or an id used twice: refused, naming
    the file and the (first) row."""
    if len(ids) == 0:
        raise ValueError(f"{path}: no spots (a header but no rows); nothing to cut")
    bad = np.flatnonzero(~np.isfinite(xy).all(axis=1))
    if bad.size:
        x, y = shown[bad[0]]
        more = f" ({bad.size - 1} more rows like it)" if bad.size > 1 else ""
        raise ValueError(
            f"{path}: {where[bad[0]]}: x and y must be finite numbers, got x={x!r}, y={y!r}{more}"
        )
    first: dict[str, int] = {}
    for r, spot in enumerate(ids):
        if spot in first:
            raise ValueError(
                f"{path}: {where[r]}: the same id as {where[first[spot]]}; spot ids must be unique"
            )
        first[spot] = r
