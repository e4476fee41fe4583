"""Tissue detection on a slide thumbnail, and the centres of a patch grid over the tissue.

``detect_tissue`` thresholds the HSV saturation of a thumbnail (Otsu, with a floor so a blank slide
has no tissue) and cleans the mask by closing then opening; ``grid_centers`` keeps the cells of a
regular grid (one patch's field of view each) whose tissue fraction is high enough. Both run in
the Rust core.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mclstexp.exceptions import NoTissueError

__all__ = ["TissueMask", "detect_tissue", "grid_centers"]


@dataclass(frozen=True)
class TissueMask:
    """A tissue mask on a thumbnail of a slide.

    Attributes
    ----------
    mask
        bool ``(h, w)``; True on tissue.
    downsample
        Level-0 pixels per mask pixel along ``(x, y)``.
    threshold
        The saturation threshold used (0-255).
    thumbnail
        The RGB thumbnail the mask was computed on.
    """

    mask: np.ndarray
    downsample: tuple[float, float]
    threshold: int
    thumbnail: np.ndarray

    @property
    def fraction(self) -> float:
        """Fraction of the thumbnail covered by tissue."""
        return float(self.mask.mean())


def detect_tissue(
    slide: Any,
    *,
    max_size: int = 2048,
    min_saturation: int = 20,
    radius: int = 2,
    n_threads: int | None = None,
) -> TissueMask:
    """Detect tissue on a thumbnail: Otsu's threshold on HSV saturation, closing then opening.

    Parameters
    ----------
    slide
        A :class:`mclstexp.io.Slide` or a path to one.
    max_size
        Longer side of the thumbnail in pixels.
    min_saturation
        Lower bound of the threshold (0-255), so a blank slide yields no tissue.
    radius
        Radius of the square structuring element of the morphology, in thumbnail pixels.
    n_threads
        Threads for reading the thumbnail.

    Returns
    -------
    TissueMask
        The mask and its geometry.

    Examples
    --------
    >>> from mclstexp.pp import detect_tissue
    >>> tissue = detect_tissue("slide.svs")  # doctest: +SKIP
    >>> tissue.fraction  # doctest: +SKIP
    """
    from mclstexp import _native
    from mclstexp.io.slide import Slide, open_slide

    if not isinstance(slide, Slide):
        slide = open_slide(slide)
    if not 0 <= int(min_saturation) <= 255:
        raise ValueError(f"min_saturation: must be in [0, 255], got {min_saturation}")
    thumb = slide.thumbnail(int(max_size), n_threads=n_threads)
    mask, threshold = _native.tissue_mask(
        np.ascontiguousarray(thumb), min_saturation=int(min_saturation), radius=int(radius)
    )
    w0, h0 = slide.dimensions
    return TissueMask(
        mask=mask,
        downsample=(w0 / thumb.shape[1], h0 / thumb.shape[0]),
        threshold=int(threshold),
        thumbnail=thumb,
    )


def grid_centers(
    slide: Any,
    *,
    size: int = 224,
    mpp: float | None = None,
    level: int = 0,
    min_tissue: float = 0.5,
    tissue: TissueMask | None = None,
) -> np.ndarray:
    """Centres (level-0 ``(x, y)``) of a regular patch grid over the tissue of a slide.

    The grid cell is the patch's field of view (``size`` pixels of ``level``, or ``size * mpp``
    microns); cells whose tissue fraction is at least ``min_tissue`` are kept.

    Examples
    --------
    >>> centers = grid_centers("slide.svs", size=224, mpp=0.5)  # doctest: +SKIP
    """
    from mclstexp import _native
    from mclstexp.io.slide import Slide, open_slide

    if not isinstance(slide, Slide):
        slide = open_slide(slide)
    tissue = tissue if tissue is not None else detect_tissue(slide)
    if mpp is not None:
        if slide.mpp is None:
            raise ValueError("mpp: the slide declares no microns per pixel; use mpp=None")
        fov = size * mpp / slide.mpp
    else:
        fov = size * slide.level_downsamples[level]
    w0, h0 = slide.dimensions
    centers = _native.grid_centers(
        w0, h0, float(fov), np.ascontiguousarray(tissue.mask), min_fraction=float(min_tissue)
    )
    if len(centers) == 0:
        raise NoTissueError(
            f"{slide.path}: no grid cell of {fov:.0f} px has at least {min_tissue:.0%} tissue "
            f"(tissue covers {tissue.fraction:.1%} of the thumbnail); lower min_tissue or check "
            "the slide"
        )
    return centers
