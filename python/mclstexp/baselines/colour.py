"""Colour and texture features of patches: what the colour-ridge and library-size rows read."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["COLOUR_FEATURE_NAMES", "patch_colour_features"]

_PCTS = (10, 50, 90)
_SAT_TISSUE = 0.15  # saturation above which a pixel is counted as stained tissue
_DARK_GREY = 0.4  # grey level below which a pixel is counted as dark (nuclei-rich)


def _feature_names() -> list[str]:
    names: list[str] = []
    for c in "RGB":
        names += [f"{c}_mean", f"{c}_std"] + [f"{c}_p{q}" for q in _PCTS]
    names += [f"OD{c}_mean" for c in "RGB"] + [f"OD{c}_std" for c in "RGB"]
    names += ["chroma_a", "chroma_b", "S_mean", "S_std", "S_p50", "V_mean", "V_std"]
    names += ["grad_mean", "grad_std", "laplacian_absmean", "tissue_fraction", "dark_fraction"]
    return names


#: Names of the columns returned by :func:`patch_colour_features`.
COLOUR_FEATURE_NAMES: tuple[str, ...] = tuple(_feature_names())

#: Patches whose features are computed together (each patch's features depend on it alone, so
#: this bounds the float temporaries without changing any value).
FEATURE_ROWS = 8

_OD_TABLE = -np.log((np.arange(256, dtype=np.float64) + 1.0) / 256.0)
_LEVELS = np.arange(256, dtype=np.float64)


def _hist_stats(hist: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of ``table[value]`` from per-row histograms over the 256 uint8 values."""
    n = hist.sum(axis=1)
    mean = hist @ table / n
    var = hist @ (table**2) / n - mean**2
    return mean, np.sqrt(np.maximum(var, 0.0))


def _hist_percentiles(hist: np.ndarray, qs: tuple[int, ...]) -> np.ndarray:
    """Inverted-CDF percentiles (value units 0..255) of per-row histograms -> (rows, len(qs))."""
    cdf = np.cumsum(hist, axis=1)
    n = cdf[:, -1:]
    out = np.empty((hist.shape[0], len(qs)))
    for j, q in enumerate(qs):
        out[:, j] = np.argmax(cdf >= (q / 100.0) * n, axis=1)
    return out


def _chunk_features(x: np.ndarray) -> np.ndarray:
    """Features of one uint8 chunk (m, H, W, 3) -> float64 (m, F)."""
    m = x.shape[0]
    planes = np.ascontiguousarray(np.moveaxis(x, 3, 0))  # (3, m, H, W) uint8
    npx = x.shape[1] * x.shape[2]
    # One histogram per (patch, channel): mean/std/percentiles of RGB and optical density exactly.
    offsets = ((np.arange(m)[:, None] * 3 + np.arange(3)[None, :]) * 256).T  # (3, m)
    idx = planes.reshape(3, m, npx).astype(np.intp) + offsets[:, :, None]
    hist = np.bincount(idx.ravel(), minlength=m * 3 * 256).reshape(m * 3, 256).astype(np.float64)
    mean, std = _hist_stats(hist, _LEVELS / 255.0)
    pct = _hist_percentiles(hist, _PCTS) / 255.0
    od_mean, od_std = _hist_stats(hist, _OD_TABLE)
    rgb_feats = np.concatenate([mean[:, None], std[:, None], pct], axis=1).reshape(m, 3 * 5)
    od_feats = np.concatenate([od_mean.reshape(m, 3), od_std.reshape(m, 3)], axis=1)

    r8, g8, b8 = planes[0].reshape(m, npx), planes[1].reshape(m, npx), planes[2].reshape(m, npx)
    max8 = np.maximum(np.maximum(r8, g8), b8)
    delta8 = max8 - np.minimum(np.minimum(r8, g8), b8)  # uint8, no overflow (max >= min)
    maxf = max8.astype(np.float32)
    sat = delta8.astype(np.float32) / np.maximum(maxf, np.float32(1.0))
    inv_v = np.float32(1.0) / np.maximum(maxf, np.float32(1.0))  # 1 / (V * 255)
    rf, gf, bf = (c.astype(np.float32) for c in (r8, g8, b8))
    # Opponent chroma over value: saturation-weighted hue direction (pink eosin vs purple
    # haematoxylin), a smooth stand-in for s * (cos h, sin h) of the HSV hue angle.
    chroma_a = ((rf - np.float32(0.5) * (gf + bf)) * inv_v).mean(axis=1)
    chroma_b = ((np.float32(0.8660254) * (gf - bf)) * inv_v).mean(axis=1)
    sat_q = np.minimum((sat * np.float32(255.0) + np.float32(0.5)).astype(np.intp), 255)
    sat_hist = np.bincount(
        (sat_q + (np.arange(m) * 256)[:, None]).ravel(), minlength=m * 256
    ).reshape(m, 256)
    s_p50 = _hist_percentiles(sat_hist.astype(np.float64), (50,))[:, 0] / 255.0
    v_mean = maxf.mean(axis=1) / 255.0
    v_std = maxf.std(axis=1) / 255.0
    hsv_feats = np.stack(
        [chroma_a, chroma_b, sat.mean(1), sat.std(1), s_p50, v_mean, v_std], axis=1
    )

    grey = (
        (np.float32(0.299 / 255) * rf + np.float32(0.587 / 255) * gf) + np.float32(0.114 / 255) * bf
    ).reshape(x.shape[:3])
    gx = grey[:, :-1, 1:] - grey[:, :-1, :-1]
    gy = grey[:, 1:, :-1] - grey[:, :-1, :-1]
    grad = np.sqrt(gx * gx + gy * gy).reshape(m, -1)
    lap = (
        4.0 * grey[:, 1:-1, 1:-1]
        - grey[:, :-2, 1:-1]
        - grey[:, 2:, 1:-1]
        - grey[:, 1:-1, :-2]
        - grey[:, 1:-1, 2:]
    )
    lap_abs = np.abs(lap).reshape(m, -1).mean(axis=1)
    tissue = (sat > _SAT_TISSUE).sum(axis=1) / npx
    dark = (grey.reshape(m, -1) < _DARK_GREY).sum(axis=1) / npx
    tex_feats = np.stack([grad.mean(1), grad.std(1), lap_abs, tissue, dark], axis=1)
    return np.concatenate([rgb_feats, od_feats, hsv_feats, tex_feats], axis=1)


def patch_colour_features(patches: Any, *, chunk_size: int = 32) -> np.ndarray:
    """Simple colour and texture features of H&E patches (the colour-ridge baseline's input).

    Per RGB channel: mean, std, 10/50/90th percentiles; per channel optical density
    ``-log((I+1)/256)``: mean, std; opponent chroma over value (a saturation-weighted hue
    direction, 2 values); HSV saturation mean/std/median and value mean/std; grey-level
    gradient magnitude mean/std, mean absolute Laplacian; fraction of saturated (tissue) and of
    dark pixels. 33 features in all (:data:`COLOUR_FEATURE_NAMES`).

    Parameters
    ----------
    patches
        uint8 ``(n, H, W, 3)`` RGB patches: a numpy array or anything sliceable along the first
        axis with ``shape`` and ``dtype`` (e.g. a zarr array); it is read ``chunk_size`` patches
        at a time, so a large cache streams without being loaded at once.
    chunk_size
        Patches read at a time (the uint8 chunk); the features are computed
        :data:`FEATURE_ROWS` patches at a time, whose float temporaries need about 90 bytes
        per pixel (about 35 MB for 8 patches of 224 x 224; 140 MB for 32 before, a her2st
        run's peak RSS).

    Returns
    -------
    numpy.ndarray
        ``(n, 33)`` float32.

    Examples
    --------
    >>> import numpy as np
    >>> f = patch_colour_features(np.full((2, 8, 8, 3), 255, dtype=np.uint8))
    >>> f.shape, float(f[0, 0])
    ((2, 33), 1.0)
    """
    shape = tuple(getattr(patches, "shape", ()))
    if len(shape) != 4 or shape[3] != 3:
        raise ValueError(
            f"patches must be uint8 RGB of shape (n, H, W, 3) (channels last), got shape {shape}"
        )
    if np.dtype(getattr(patches, "dtype", None)) != np.uint8:
        raise ValueError(
            f"patches must be uint8 (0..255), got dtype {getattr(patches, 'dtype', None)}; "
            "convert with (x * 255).round().astype(np.uint8) for floats in [0, 1]"
        )
    if shape[1] < 3 or shape[2] < 3:
        raise ValueError(f"patches must be at least 3 x 3 pixels, got {shape[1]} x {shape[2]}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    n = shape[0]
    out = np.empty((n, len(COLOUR_FEATURE_NAMES)), dtype=np.float32)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        chunk = np.ascontiguousarray(np.asarray(patches[start:stop]), dtype=np.uint8)
        for s in range(0, stop - start, FEATURE_ROWS):  # bounded float temporaries
            rows = chunk[s : s + FEATURE_ROWS]
            out[start + s : start + s + rows.shape[0]] = _chunk_features(rows)
    return out
