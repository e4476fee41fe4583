"""Every AnnData key mclstexp reads or writes, defined once, and its accessors.

Coordinates follow the scverse convention: ``obsm["spatial"]`` holds full-resolution pixel centres
with x = column and y = row.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SPATIAL = "spatial"  # obsm: (n_spots, 2) float, full-resolution pixel (x = column, y = row)
ARRAY_ROW = "array_row"  # obs: integer array coordinate (row)
ARRAY_COL = "array_col"  # obs: integer array coordinate (column)
SECTION = "section"  # obs: section id of each spot
LABEL = "label"  # obs: pathologist region label, when present
LIBRARY_SIZE = "library_size"  # obs: total counts of a spot over all genes of its source file
UNS = "mclstexp"  # uns: provenance and parameters recorded by mclstexp
UNS_SLIDE_PATH = "slide_path"  # uns[UNS]: path of the H&E image / slide of the section
UNS_SECTION = "section"  # uns[UNS]: section id
UNS_MPP = "mpp"  # uns[UNS]: microns per pixel of the full-resolution image
LAYER_COUNTS = "counts"  # layers: raw counts kept when X is normalised
PATIENT = "patient"  # obs: patient / donor id of each spot (leave-one-patient-out folds)
UNS_PATIENT = "patient"  # uns[UNS]: patient / donor id of the section
UNS_SPOT_DIAMETER_PX = "spot_diameter_px"  # uns[UNS]: spot diameter in full-resolution pixels
UNS_NORMALIZATION = "normalization"  # uns[UNS]: how X was normalised (flavor, constants, zeros)
UNS_SOURCE = "source"  # uns[UNS]: the file(s) the section was read from
SYNTH_REGIONS = "synthetic_regions"  # obsm: synthetic ground truth, region fractions under a spot
SYNTH_CELLULARITY = "synthetic_cellularity"  # obs: synthetic ground truth, mean cellularity field
SYNTH_EOSIN = "synthetic_eosin"  # obs: synthetic ground truth, mean eosin-intensity field


def section_id(adata: Any, default: str | None = "section") -> str:
    """The section id of an AnnData, derived the same way everywhere.

    ``uns["mclstexp"]["section"]`` (what the readers record); else the single value of
    ``obs["section"]``; else ``default`` (``None``: raise ``ValueError``).

    Examples
    --------
    >>> import anndata as ad
    >>> a = ad.AnnData(uns={"mclstexp": {"section": "C2"}})
    >>> section_id(a), section_id(ad.AnnData()), section_id(ad.AnnData(), default="S0")
    ('C2', 'section', 'S0')
    """
    meta = getattr(adata, "uns", {}).get(UNS, {})
    value = meta.get(UNS_SECTION) if isinstance(meta, Mapping) else None
    if value not in (None, ""):
        return str(value)
    obs = getattr(adata, "obs", None)
    if obs is not None and SECTION in obs and len(obs):
        values = set(map(str, obs[SECTION]))
        if len(values) == 1:
            return values.pop()
    if default is None:
        raise ValueError(
            "the AnnData has no section id (uns['mclstexp']['section'] or one obs['section'] "
            "value); set one or pass section ids"
        )
    return default
