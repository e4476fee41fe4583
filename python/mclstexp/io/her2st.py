"""Reader for the her2st layout (legacy Spatial Transcriptomics, Andersson et al. 2021).

Layout under ``root`` (the repository's ``data`` folder, or its parent)::

    ST-cnts/<S>.tsv.gz                       spots x genes counts; first column "<x>x<y>"
    ST-spotfiles/<S>_selection.tsv           x y new_x new_y pixel_x pixel_y selected
    ST-imgs/<patient letter>/<S>/*.jpg       full-resolution H&E (optional)
    ST-pat/lbl/<S>_labeled_coordinates.tsv   pathologist labels (optional)

Counts are joined to coordinates on ``f"{round(x)}x{round(y)}"`` (the method's inner join):
spot-file rows without counts are ignored with a :class:`~mclstexp.exceptions.DataWarning` (0-3
per section in the public data); counts without coordinates are an error. The counts file's row
order is kept.
"""

from __future__ import annotations

import gzip
import io
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from mclstexp import _keys as K
from mclstexp.io._common import (
    build_anndata,
    check_counts,
    check_inside,
    check_unique,
    image_size,
    pitch_mpp,
    warn_data,
)

SPOT_PITCH_UM = 200.0  # legacy ST: 100 um spots on a 200 um centre-to-centre grid
SPOT_DIAMETER_UM = 100.0
_SPOT_COLUMNS = ("x", "y", "pixel_x", "pixel_y")
_LABEL_COLUMNS = ("x", "y", "label")
_SECTION_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".tif", ".tiff", ".png")


def _data_root(root: str | os.PathLike[str]) -> Path:
    r = Path(root).expanduser()
    for candidate in (r, r / "data", r / "her2st" / "data"):
        if (candidate / "ST-cnts").is_dir():
            return candidate
    raise FileNotFoundError(
        f"{r}: no ST-cnts folder here (nor in {r / 'data'}); pass the her2st repository's data "
        "folder (the one holding ST-cnts, ST-spotfiles, ST-imgs)"
    )


def _sections_in(root: Path) -> list[str]:
    return sorted(p.name[: -len(".tsv.gz")] for p in (root / "ST-cnts").glob("*.tsv.gz"))


def _rounded_ids(x: np.ndarray, y: np.ndarray) -> list[str]:
    # Python's round() on the (integer-valued) array coordinates, as in the original code.
    return [f"{round(float(a))}x{round(float(b))}" for a, b in zip(x, y, strict=True)]


def read_counts_tsv(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """Parse a spots x genes counts TSV (optionally gzipped): ``(spot_ids, genes, counts)``.

    Raises ``ValueError`` naming the file for ragged rows, non-numeric values, duplicated spot ids
    or genes, NaN/negative counts.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise OSError(f"{path}: cannot read the counts file ({err})") from err
    lines = raw.split(b"\n")
    if lines and lines[-1].strip() == b"":
        lines.pop()
    lines = [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]
    if len(lines) < 2:
        raise ValueError(f"{path}: no spots (need a header line and one line per spot)")
    header = lines[0].decode("utf-8", errors="replace").split("\t")
    ids, rows = [], []
    for ln in lines[1:]:
        spot, _, rest = ln.partition(b"\t")
        ids.append(spot.decode("utf-8", errors="replace").strip('"'))
        rows.append(rest)
    n_fields = rows[0].count(b"\t") + 1
    ragged = [i for i, r in enumerate(rows) if r.count(b"\t") + 1 != n_fields]
    if ragged:
        got = rows[ragged[0]].count(b"\t") + 1
        raise ValueError(
            f"{path}: line {ragged[0] + 2} has {got} values, the "
            f"first spot has {n_fields}; every line must hold a spot id and one count per gene"
        )
    if len(header) == n_fields + 1:
        genes = header[1:]
    elif len(header) == n_fields:
        genes = header
    else:
        raise ValueError(
            f"{path}: the header names {len(header)} columns but the spot lines hold "
            f"{n_fields} counts; the header must list the genes (after an optional first cell)"
        )
    genes = [g.strip('"') for g in genes]
    try:
        counts = np.loadtxt(io.BytesIO(b"\n".join(rows)), delimiter="\t", dtype=np.float32, ndmin=2)
    except ValueError as err:
        raise ValueError(
            f"{path}: non-numeric count ({err}); the counts must be numbers (spots x genes)"
        ) from None
    check_unique(ids, "spot ids", str(path), "each spot must appear once")
    check_unique(genes, "gene names", str(path), "rename or sum the duplicated gene columns")
    check_counts(counts, str(path))
    return ids, genes, counts


def _read_table(path: Path, required: tuple[str, ...], what: str, sep: str = "\t") -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    try:
        table = pd.read_csv(path, sep=sep)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise ValueError(f"{path}: cannot parse the {what} as a TSV ({err})") from None
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {missing} (found {list(table.columns)[:10]}); "
            f"the {what} needs columns {list(required)}"
        )
    for c in required:
        if c != "label" and not pd.api.types.is_numeric_dtype(table[c]):
            raise ValueError(f"{path}: column {c!r} is not numeric; fix the {what}")
    return table


def read_her2st_spots(
    path: str | os.PathLike[str], *, selected_only: bool = False, sep: str = "\t"
) -> pd.DataFrame:
    """Spot coordinates of a her2st spot file (``<S>_selection.tsv``), indexed by spot id.

    Parameters
    ----------
    path
        The spot file: columns ``x``, ``y`` (array position), ``pixel_x``, ``pixel_y`` (spot
        centre in full-resolution pixels) and optionally ``selected``.
    selected_only
        Keep only the rows with ``selected == 1`` (when the column exists).
    sep
        Column separator (a TSV in the her2st repository).

    Returns
    -------
    pandas.DataFrame
        Columns ``x``, ``y``, ``pixel_x``, ``pixel_y``; index ``"<x>x<y>"`` (rounded array
        position, as the counts files name their spots).

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        Missing or non-numeric columns, NaN coordinates, two rows at one array position.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = Path(tmp) / "C2_selection.tsv"
    ...     _ = path.write_text("x y pixel_x pixel_y\\n25 13 6930.6 3510.2\\n".replace(" ", "\\t"))
    ...     spots = read_her2st_spots(path)
    >>> list(spots.index), spots["pixel_x"].tolist()
    (['25x13'], [6930.6])
    """
    path = Path(path)
    spots = _read_table(path, _SPOT_COLUMNS, "spot file", sep)
    if selected_only and "selected" in spots.columns:
        spots = spots[spots["selected"] == 1]
    coords = spots.loc[:, list(_SPOT_COLUMNS)]
    if coords.isna().any().any():
        raise ValueError(f"{path}: empty or NaN coordinates; fix the spot file")
    spot_ids = _rounded_ids(coords["x"].to_numpy(), coords["y"].to_numpy())
    check_unique(
        spot_ids,
        "spot ids after rounding x, y",
        str(path),
        "each array position must appear once in the spot file",
    )
    coords.index = pd.Index(spot_ids)
    return coords


def _find_image(root: Path, section: str) -> Path | None:
    folder = root / "ST-imgs" / section[0] / section
    if not folder.is_dir():
        return None
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if len(images) > 1:
        raise ValueError(
            f"{folder}: several images {[p.name for p in images]}; pass image= to choose one"
        )
    return images[0] if images else None


def read_her2st(
    root: str | os.PathLike[str],
    section: str,
    *,
    labels: bool = True,
    image: str | os.PathLike[str] | bool | None = None,
) -> AnnData:
    """Read one her2st section as AnnData.

    Parameters
    ----------
    root
        The her2st ``data`` folder (holding ``ST-cnts``, ``ST-spotfiles``, ...) or its parent.
    section
        Section id, e.g. ``"C2"``; its first letter is the patient.
    labels
        Attach pathologist labels (``obs["label"]``, categorical, missing where unlabelled) when
        ``ST-pat/lbl/<S>_labeled_coordinates.tsv`` exists.
    image
        ``None``: use ``ST-imgs/<patient>/<S>/<the only image>`` when present (else no slide);
        a path: use that image (it must exist); ``False``: attach no image. When an image is
        attached, every spot centre must lie inside it.

    Returns
    -------
    AnnData
        Raw counts (CSR float32, all genes of the file, counts file order), ``obsm["spatial"]``
        = ``(pixel_x, pixel_y)``, ``obs["array_col"]`` = ``x``, ``obs["array_row"]`` = ``y``,
        ``obs["section"]``, ``obs["patient"]``, ``obs["library_size"]``, and ``uns["mclstexp"]``
        with ``slide_path``, ``section``, ``patient``, ``mpp`` (estimated from the 200 um spot
        pitch: about 0.69 for patients B-H, 0.92 for A), ``spot_diameter_px`` and ``source``.

    Raises
    ------
    FileNotFoundError
        Missing counts / spot file / given image.
    ValueError
        Malformed files (non-numeric or negative counts, duplicated ids, missing columns),
        counts without coordinates, spots outside the image.

    Examples
    --------
    >>> adata = read_her2st("../shared/data/her2st", "C2")  # doctest: +SKIP
    >>> adata.uns["mclstexp"]["mpp"]  # doctest: +SKIP
    0.686...
    """
    if not isinstance(section, str) or not _SECTION_RE.match(section):
        raise ValueError(f"section: expected a section id like 'C2', got {section!r}")
    data = _data_root(root)
    counts_path = data / "ST-cnts" / f"{section}.tsv.gz"
    if not counts_path.is_file():
        raise FileNotFoundError(
            f"{counts_path}: no counts for section {section!r}; sections here: {_sections_in(data)}"
        )
    spot_path = data / "ST-spotfiles" / f"{section}_selection.tsv"
    ids, genes, counts = read_counts_tsv(counts_path)
    coords = read_her2st_spots(spot_path)
    missing = [s for s in ids if s not in coords.index]
    if missing:
        raise ValueError(
            f"{counts_path}: {len(missing)} of {len(ids)} spots have no coordinates in "
            f"{spot_path} (e.g. {missing[:5]}); the ids '<x>x<y>' must match round(x), round(y) "
            "of the spot file: check that both files belong to the same section"
        )
    extra = len(coords) - len(ids)
    if extra:
        warn_data(
            f"{spot_path}: {extra} spot-file row(s) have no counts in {counts_path.name} and "
            "were ignored (inner join on '<x>x<y>')"
        )
    coords = coords.loc[ids]
    xy = coords[["pixel_x", "pixel_y"]].to_numpy(np.float64)
    array_xy = coords[["x", "y"]].to_numpy(np.float64)

    slide: Path | None
    if image is False:
        slide = None
    elif image is None or image is True:
        slide = _find_image(data, section)
        if image is True and slide is None:
            raise FileNotFoundError(
                f"{data / 'ST-imgs' / section[0] / section}: no image for section {section!r}"
            )
    else:
        slide = Path(image).expanduser()
        if not slide.is_file():
            raise FileNotFoundError(f"{slide}: image not found; pass an existing image path")
    if slide is not None:
        check_inside(xy, image_size(slide), slide, str(spot_path), ids)

    mpp = pitch_mpp(array_xy, xy, SPOT_PITCH_UM)
    patient = section[0]
    obs_extra: dict[str, Any] = {K.PATIENT: pd.Categorical([patient] * len(ids))}
    sources = {"counts": str(counts_path), "spots": str(spot_path)}
    label_path = data / "ST-pat" / "lbl" / f"{section}_labeled_coordinates.tsv"
    if labels and label_path.is_file():
        obs_extra[K.LABEL] = _read_labels(label_path, ids)
        sources["labels"] = str(label_path)
    adata = build_anndata(
        counts=counts,
        spot_ids=ids,
        genes=genes,
        xy=xy,
        array_row=np.rint(array_xy[:, 1]).astype(np.int64),
        array_col=np.rint(array_xy[:, 0]).astype(np.int64),
        section=section,
        slide_path=None if slide is None else str(slide),
        mpp=mpp,
        obs_extra=obs_extra,
        uns_extra={
            K.UNS_PATIENT: patient,
            K.UNS_SPOT_DIAMETER_PX: None if mpp is None else SPOT_DIAMETER_UM / mpp,
            "mpp_source": "estimated from the 200 um spot pitch",
            K.UNS_SOURCE: sources,
            "n_ignored_spot_rows": int(extra),
        },
    )
    return adata


def _read_labels(path: Path, ids: list[str]) -> pd.Categorical:
    table = _read_table(path, _LABEL_COLUMNS, "label file")
    bad = table[["x", "y"]].isna().any(axis=1).to_numpy()
    if bad.any():
        warn_data(f"{path}: {int(bad.sum())} label row(s) without coordinates were ignored")
        table = table.loc[~bad]
    label_ids = _rounded_ids(table["x"].to_numpy(), table["y"].to_numpy())
    check_unique(label_ids, "label positions", str(path), "each spot must be labelled once")
    lookup = dict(zip(label_ids, table["label"].astype(str), strict=True))
    unmatched = len(set(label_ids) - set(ids))
    if unmatched:
        warn_data(f"{path}: {unmatched} label row(s) match no spot with counts and were ignored")
    values = [lookup.get(s) for s in ids]
    return pd.Categorical(values, categories=sorted(set(lookup.values())))


def read_her2st_all(
    root: str | os.PathLike[str],
    *,
    labels: bool = True,
    with_images_only: bool = False,
) -> list[AnnData]:
    """Read every her2st section found under ``root``, sorted by section id.

    Parameters
    ----------
    root
        As for :func:`read_her2st`.
    labels
        Attach pathologist labels where available.
    with_images_only
        Keep only the sections that have an H&E image.

    Returns
    -------
    list of AnnData

    Examples
    --------
    >>> sections = read_her2st_all("../shared/data/her2st", with_images_only=True)  # doctest: +SKIP
    >>> [a.uns["mclstexp"]["section"] for a in sections]  # doctest: +SKIP
    ['C2', 'C3', 'C4', 'C5', 'C6']
    """
    data = _data_root(root)
    names = _sections_in(data)
    if with_images_only:
        names = [s for s in names if _find_image(data, s) is not None]
    return [read_her2st(data, s, labels=labels) for s in names]
