"""Whole-slide images: the native Rust reader, with OpenSlide behind the same interface.

The native reader handles classic and BigTIFF files, tiled or stripped, compressed with JPEG
(including abbreviated streams with ``JPEGTables`` and Aperio's RGB/YCbCr conventions), LZW,
Deflate or nothing; pyramid levels of generic pyramidal TIFF, OME-TIFF and Aperio SVS; and plain
JPEG/PNG images (decoded once, on first read). Formats it does not handle (NDPI, MRXS, SCN,
DICOM, JPEG 2000 SVS, ...) are read through OpenSlide (``openslide-python`` + ``openslide-bin``).
"""

from __future__ import annotations

import errno
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mclstexp._validate import check_n_threads, check_points
from mclstexp.exceptions import SlideFormatError

Backend = Literal["auto", "native", "openslide"]

# Formats that OpenSlide reads and the native reader does not even try in "auto" mode.
_OPENSLIDE_SUFFIXES = {".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".dcm", ".svslide"}
DEFAULT_CACHE_BYTES = 256 << 20


class _OpenSlideReader:
    """OpenSlide behind the native reader's method names (level-0 coordinates, RGB on white)."""

    vendor: str

    def __init__(self, path: Path) -> None:
        import openslide

        try:
            self._os = openslide.OpenSlide(str(path))
        except openslide.OpenSlideUnsupportedFormatError as err:
            raise SlideFormatError(f"{path}: not a slide format OpenSlide can read") from err
        except openslide.OpenSlideError as err:
            raise SlideFormatError(f"{path}: {err}") from err
        props = self._os.properties
        self.vendor = str(props.get("openslide.vendor", "openslide"))
        self.path = path
        self.file_size = path.stat().st_size if path.is_file() else 0
        self.level_dimensions = [tuple(map(int, d)) for d in self._os.level_dimensions]
        self.level_downsamples = [float(d) for d in self._os.level_downsamples]
        try:
            self.mpp: tuple[float, float] | None = (
                float(props["openslide.mpp-x"]),
                float(props["openslide.mpp-y"]),
            )
        except (KeyError, ValueError):
            self.mpp = None
        self.description = props.get("tiff.ImageDescription")

    def read_region(
        self, x: int, y: int, level: int, width: int, height: int, *, n_threads: int | None = None
    ) -> np.ndarray:
        rgba = np.asarray(self._os.read_region((x, y), level, (width, height)), dtype=np.float32)
        alpha = rgba[..., 3:4] / 255.0
        rgb = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)

    def read_patches(
        self,
        centers: np.ndarray,
        *,
        size: int = 224,
        level: int = 0,
        mpp: float | None = None,
        slide_mpp: float | None = None,
        n_threads: int | None = None,
        out: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        from mclstexp import _native

        slide_mpp = slide_mpp if slide_mpp is not None else _mean(self.mpp)
        if mpp is None:
            scale = 1.0
        else:
            if slide_mpp is None:
                raise ValueError(
                    "mpp: the slide declares no microns per pixel; pass the slide's mpp "
                    "explicitly or use mpp=None"
                )
            target = mpp / slide_mpp
            level = _best_level(self.level_downsamples, target)
            scale = target / self.level_downsamples[level]
            if abs(scale - 1.0) < 1e-6:
                scale = 1.0
            if scale * size > 32768:
                raise ValueError(f"mpp: {mpp} um/px is too coarse for this slide")
        ds = self.level_downsamples[level]
        lw, lh = self.level_dimensions[level]

        def one(c: np.ndarray) -> tuple[np.ndarray, bool]:
            fx, fy = math.floor(c[0]), math.floor(c[1])
            if scale == 1.0:
                left = math.floor(fx / ds) - size // 2
                top = math.floor(fy / ds) - size // 2
                img = self.read_region(round(left * ds), round(top * ds), level, size, size)
                inside = left >= 0 and top >= 0 and left + size <= lw and top + size <= lh
                return img, inside
            fov = size * scale
            half = 0.5 if size % 2 else 0.0
            bx, by = (fx + half) / ds - fov / 2, (fy + half) / ds - fov / 2
            m = math.ceil(max(scale, 1.0)) + 1  # filter support beyond the box
            x0, y0 = math.floor(bx) - m, math.floor(by) - m
            w, h = math.ceil(bx + fov) + m - x0, math.ceil(by + fov) + m - y0
            region = self.read_region(round(x0 * ds), round(y0 * ds), level, w, h)
            box = (bx - x0, by - y0, bx - x0 + fov, by - y0 + fov)
            img = _native.resize_rgb(region, size, size, box=box)
            inside = bx >= 0 and by >= 0 and bx + fov <= lw and by + fov <= lh
            return img, inside

        with ThreadPoolExecutor(max_workers=n_threads or 1) as pool:
            results = list(pool.map(one, list(centers)))
        if out is None:
            out = np.empty((len(centers), size, size, 3), dtype=np.uint8)
        mask = np.zeros(len(centers), dtype=bool)
        for i, (img, inside) in enumerate(results):
            out[i], mask[i] = img, inside
        return out, mask

    def thumbnail(self, max_size: int, *, n_threads: int | None = None) -> np.ndarray:
        w0, h0 = self.level_dimensions[0]
        f = min(max_size / max(w0, h0), 1.0)
        tw, th = max(1, round(w0 * f)), max(1, round(h0 * f))
        level = _best_level(self.level_downsamples, min(w0 / tw, h0 / th))
        lw, lh = self.level_dimensions[level]
        full = self.read_region(0, 0, level, lw, lh)
        if (lw, lh) == (tw, th):
            return full
        from mclstexp import _native

        return _native.resize_rgb(full, tw, th)

    def close(self) -> None:
        self._os.close()


def _mean(mpp: tuple[float, float] | None) -> float | None:
    return None if mpp is None else (mpp[0] + mpp[1]) / 2.0


def _best_level(downsamples: Sequence[float], target: float) -> int:
    best = 0
    for i, d in enumerate(downsamples):
        if d <= target * (1 + 1e-6) and d >= downsamples[best]:
            best = i
    return best


class Slide:
    """An open whole-slide image (OpenSlide-like interface).

    Use :func:`open_slide` to create one. Coordinates follow OpenSlide: ``location`` of
    :meth:`read_region` is in level-0 pixels, ``size`` in pixels of the level read. Pixels outside
    the slide are white.

    Attributes
    ----------
    path
        The slide file.
    backend
        ``"native"`` or ``"openslide"``.
    vendor
        The detected format (``aperio``, ``generic-tiff``, ``ome-tiff``, ``jpeg``, ``png``, or
        OpenSlide's vendor name).

    Examples
    --------
    >>> import mclstexp as mx  # doctest: +SKIP
    >>> slide = mx.io.open_slide("slide.svs")  # doctest: +SKIP
    >>> slide.read_region((0, 0), 0, (256, 256)).shape  # doctest: +SKIP
    (256, 256, 3)
    """

    def __init__(self, reader: Any, backend: str, path: Path, mpp: float | None = None) -> None:
        self._reader = reader
        self.backend = backend
        self.path = path
        self.vendor: str = reader.vendor
        self._mpp_override = mpp

    def __repr__(self) -> str:
        return (
            f"Slide({str(self.path)!r}, backend={self.backend!r}, vendor={self.vendor!r}, "
            f"dimensions={self.dimensions}, levels={self.level_count}, mpp={self.mpp})"
        )

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the file (OpenSlide backend); the native reader closes on garbage collection."""
        if hasattr(self._reader, "close"):
            self._reader.close()

    @property
    def dimensions(self) -> tuple[int, int]:
        """``(width, height)`` of level 0."""
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        """Number of pyramid levels."""
        return len(self._reader.level_dimensions)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """``(width, height)`` of every level, level 0 first."""
        return tuple((int(w), int(h)) for w, h in self._reader.level_dimensions)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        """Downsample factor of every level relative to level 0."""
        return tuple(float(d) for d in self._reader.level_downsamples)

    @property
    def mpp(self) -> float | None:
        """Microns per pixel of level 0 (the ``mpp=`` given to :func:`open_slide`, else the
        file's metadata; the mean of x and y), or ``None`` when unknown."""
        if self._mpp_override is not None:
            return self._mpp_override
        return _mean(self._reader.mpp)

    @property
    def file_size(self) -> int:
        """Size of the slide file in bytes."""
        return int(self._reader.file_size)

    def get_best_level_for_downsample(self, downsample: float) -> int:
        """The coarsest level whose downsample is at most ``downsample`` (as OpenSlide)."""
        return _best_level(self.level_downsamples, float(downsample))

    def read_region(
        self,
        location: tuple[int, int],
        level: int,
        size: tuple[int, int],
        *,
        n_threads: int | None = None,
    ) -> np.ndarray:
        """Read a region as uint8 ``(height, width, 3)`` RGB.

        Parameters
        ----------
        location
            ``(x, y)`` of the top-left pixel in level-0 coordinates.
        level
            Pyramid level to read.
        size
            ``(width, height)`` in pixels of ``level``.
        n_threads
            Threads for large regions, >= 1 (default: ``MCLSTEXP_NUM_THREADS`` or all CPUs).

        Returns
        -------
        numpy.ndarray
            uint8 ``(height, width, 3)``; white outside the slide.

        Examples
        --------
        >>> slide.read_region((1000, 2000), 0, (224, 224)).shape  # doctest: +SKIP
        (224, 224, 3)
        """
        x, y = (int(v) for v in location)
        w, h = (int(v) for v in size)
        if w <= 0 or h <= 0:
            raise ValueError(f"size: both sides must be >= 1, got {size}")
        if not 0 <= int(level) < self.level_count:
            raise ValueError(f"level: must be in [0, {self.level_count}), got {level}")
        threads = check_n_threads(n_threads)
        return self._reader.read_region(x, y, int(level), w, h, n_threads=threads)

    def read_patches(
        self,
        centers: np.ndarray | Sequence[Sequence[float]],
        *,
        size: int = 224,
        mpp: float | None = None,
        level: int = 0,
        n_threads: int | None = None,
        return_mask: bool = False,
        out: np.ndarray | None = None,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Cut square patches centred on level-0 points.

        A patch around ``(cx, cy)`` read at level ``L`` (downsample ``d``) starts at
        ``floor(floor(cx) / d) - size // 2``: at level 0 it is the crop
        ``[floor(cx) - size // 2, floor(cx) - size // 2 + size)``. With ``mpp`` the patch covers
        ``size * mpp / slide.mpp`` level-0 pixels, read from the best level and resampled
        (antialiased bilinear).

        Parameters
        ----------
        centers
            ``(n, 2)`` level-0 pixel centres, x (column) then y (row): finite real numbers
            (any other shape or dtype raises ``ValueError`` naming ``centers``).
        size
            Side of the output patches in pixels.
        mpp
            Target microns per pixel; ``None`` reads ``level`` as is.
        level
            Level read when ``mpp`` is ``None``.
        n_threads
            Threads, >= 1 (default: ``MCLSTEXP_NUM_THREADS`` or all CPUs).
        return_mask
            Also return a bool ``(n,)`` array, True where the patch lies fully inside the slide.
        out
            Optional C-contiguous uint8 ``(n, size, size, 3)`` array to write the patches into
            (reusing one buffer across batches avoids page-faulting fresh memory each time).

        Returns
        -------
        numpy.ndarray or tuple
            uint8 ``(n, size, size, 3)``, white outside the slide (and the mask).

        Examples
        --------
        >>> patches, inside = slide.read_patches(  # doctest: +SKIP
        ...     [[500, 600]], size=224, return_mask=True
        ... )
        """
        pts = check_points(centers, "centers")
        threads = check_n_threads(n_threads)
        if int(size) < 1:
            raise ValueError(f"size: must be >= 1, got {size}")
        if int(level) < 0:
            raise ValueError(f"level: must be >= 0, got {level}")
        if out is not None and (
            out.dtype != np.uint8
            or out.shape != (len(pts), int(size), int(size), 3)
            or not out.flags.c_contiguous
        ):
            raise ValueError(
                f"out: expected a C-contiguous uint8 array of shape ({len(pts)}, {size}, {size}, "
                f"3), got {out.dtype} {out.shape}"
            )
        patches, inside = self._reader.read_patches(
            pts,
            size=int(size),
            level=int(level),
            mpp=None if mpp is None else float(mpp),
            slide_mpp=self.mpp,
            n_threads=threads,
            out=out,
        )
        return (patches, inside) if return_mask else patches

    def thumbnail(self, max_size: int = 1024, *, n_threads: int | None = None) -> np.ndarray:
        """A thumbnail (uint8 ``(h, w, 3)``) whose longer side is at most ``max_size``.

        Examples
        --------
        >>> slide.thumbnail(512).shape  # doctest: +SKIP
        """
        if int(max_size) < 1:
            raise ValueError(f"max_size: must be >= 1, got {max_size}")
        return self._reader.thumbnail(int(max_size), n_threads=check_n_threads(n_threads))


def _openslide_available() -> bool:
    try:
        import openslide  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def open_slide(
    path: str | Path,
    *,
    backend: Backend = "auto",
    mpp: float | None = None,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
) -> Slide:
    """Open a whole-slide image (or a plain JPEG/PNG) for reading.

    Parameters
    ----------
    path
        The slide file.
    backend
        ``"auto"`` (native reader; OpenSlide for formats the native reader does not handle),
        ``"native"`` or ``"openslide"``.
    mpp
        Microns per pixel of level 0, overriding the file's metadata (e.g. for plain JPEGs).
    cache_bytes
        Budget of the native reader's decoded-tile cache.

    Returns
    -------
    Slide
        The open slide.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    mclstexp.SlideFormatError
        The file is not a readable slide, or it is corrupt.

    Examples
    --------
    >>> from mclstexp.io import open_slide
    >>> slide = open_slide("slide.svs")  # doctest: +SKIP
    >>> slide.level_dimensions  # doctest: +SKIP
    """
    path = Path(path)
    if backend not in ("auto", "native", "openslide"):
        raise ValueError(f"backend: must be 'auto', 'native' or 'openslide', got {backend!r}")
    if mpp is not None and not (math.isfinite(mpp) and mpp > 0):
        raise ValueError(f"mpp: must be a positive number, got {mpp}")
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, "slide not found", str(path))
    if path.is_dir() and path.suffix.lower() not in _OPENSLIDE_SUFFIXES:
        raise IsADirectoryError(errno.EISDIR, "a folder, not a slide file", str(path))
    if backend == "openslide" or (
        backend == "auto" and path.suffix.lower() in _OPENSLIDE_SUFFIXES and _openslide_available()
    ):
        if not _openslide_available():
            raise ImportError(
                "backend='openslide' needs openslide-python and openslide-bin: "
                "pip install 'mclstexp[openslide]'"
            )
        return Slide(_OpenSlideReader(path), "openslide", path, mpp)
    from mclstexp import _native

    try:
        native = _native.NativeSlide(str(path), cache_bytes=int(cache_bytes))
    except SlideFormatError as err:
        if backend == "auto" and "unsupported" in str(err) and _openslide_available():
            try:
                return Slide(_OpenSlideReader(path), "openslide", path, mpp)
            except SlideFormatError:
                raise err from None
        raise
    return Slide(native, "native", path, mpp)


def read_thumbnail(
    path: str | Path, max_size: int = 1024, *, backend: Backend = "auto"
) -> tuple[np.ndarray, float]:
    """A slide's thumbnail and its scale to level-0 (full-resolution) pixels.

    Parameters
    ----------
    path
        The slide file (any format :func:`open_slide` reads).
    max_size
        Longest side of the thumbnail in pixels.
    backend
        As in :func:`open_slide`.

    Returns
    -------
    tuple
        ``(image, scale)``: uint8 ``(h, w, 3)`` and thumbnail pixels per level-0 pixel, so a
        spot at full-resolution ``(x, y)`` is drawn at ``(x * scale, y * scale)`` (the ``image``
        and ``scale`` of :func:`mclstexp.pl.spatial_expression`).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     Image.new("RGB", (400, 200), (230, 200, 220)).save(Path(tmp) / "he.png")
    ...     image, scale = read_thumbnail(Path(tmp) / "he.png", max_size=100)
    >>> image.shape, scale
    ((50, 100, 3), 0.25)
    """
    with open_slide(path, backend=backend) as slide:
        image = slide.thumbnail(max_size)
        return image, image.shape[1] / slide.dimensions[0]
