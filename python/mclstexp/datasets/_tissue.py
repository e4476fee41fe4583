"""Drawing H&E-like tissue for the synthetic dataset: stain colours, nuclei, fat cells, fields.

Sizes are in pixels of the full-resolution level (2 um per pixel by default). Tumour, stroma and
immune nuclei share one colour and one expected nuclear area fraction, so that only the nuclei's
shape and size tell the regions apart (see :mod:`mclstexp.datasets._synthetic`).
"""

from __future__ import annotations

import numpy as np

LOWRES = 4  # the region / tissue maps are computed at 1/4 scale

# Stain colours, RGB: eosin (cytoplasm, stroma), haematoxylin (nuclei), glass (and fat vacuoles).
EOSIN_RGB = np.array([226, 160, 202], dtype=np.float32)
NUCLEUS_RGB = np.array([70, 44, 128], dtype=np.float32)
GLASS_RGB = np.array([244, 242, 241], dtype=np.float32)
# Nuclear semi-axes (px at level 0, 2 um/px by default) per region, whether the nuclei follow the
# local fibre direction, and their density (per 1000 px^2). Tumour, stroma and immune get the same
# expected nuclear area fraction, so that only the nuclei's shape and size tell them apart.
NUCLEUS_AXES = np.array([[3.4, 2.7], [5.2, 1.1], [1.6, 1.6], [4.0, 1.0]], dtype=np.float64)
NUCLEUS_ALIGNED = np.array([False, True, False, True])
NUCLEAR_AREA_FRACTION = 0.14
NUCLEI_DENSITY = np.r_[
    1000.0 * NUCLEAR_AREA_FRACTION / (np.pi * NUCLEUS_AXES[:3].prod(axis=1)), 0.5
]
NUCLEUS_OPACITY = 0.92
# Fat cells: Voronoi cells of a jittered grid (pitch, jitter, membrane width in px at level 0).
FAT_PITCH, FAT_JITTER, FAT_MEMBRANE = 24, 6.0, 2.0


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """White noise blurred with a Gaussian of ``sigma`` cells (periodic), scaled to unit sd."""
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return (field / (field.std() + 1e-12)).astype(np.float32)


def upsample(field: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D field to ``shape``."""
    from scipy.ndimage import zoom

    factors = (shape[0] / field.shape[0], shape[1] / field.shape[1])
    out = zoom(field, factors, order=1, mode="nearest", grid_mode=True)
    return out[: shape[0], : shape[1]]


def fat_vacuoles(rng: np.random.Generator, fat: np.ndarray) -> np.ndarray:
    """Opacity (0..1) of fat-cell vacuoles over the ``fat`` mask: Voronoi cells of jittered grid
    points, empty inside and separated by thin membranes (where the two nearest points are about
    equally far)."""
    from scipy.spatial import cKDTree

    size = fat.shape[0]
    centres = np.arange(FAT_PITCH / 2, size, FAT_PITCH, dtype=np.float64)
    gy, gx = (g.ravel() for g in np.meshgrid(centres, centres, indexing="ij"))
    jitter = rng.uniform(-FAT_JITTER, FAT_JITTER, size=(2, gy.size))
    tree = cKDTree(np.column_stack([gy + jitter[0], gx + jitter[1]]))
    out = np.zeros(fat.shape, dtype=np.float32)
    py, px = np.nonzero(fat)
    if py.size:
        dist, _ = tree.query(np.column_stack([py + 0.5, px + 0.5]), k=2)
        gap = dist[:, 1] - dist[:, 0]  # 0 on a cell border
        out[py, px] = np.clip((gap - FAT_MEMBRANE) / 1.5, 0.0, 1.0) * 0.97
    return out


def nuclei_alpha(
    rng: np.random.Generator,
    size: int,
    counts_lr: np.ndarray,
    region_lr: np.ndarray,
    fibre_lr: np.ndarray,
    chunk: int = 8192,
) -> np.ndarray:
    """Haematoxylin opacity of the nuclei: one soft-edged ellipse per nucleus.

    ``counts_lr`` nuclei fall uniformly in each low-resolution cell; each takes its region's
    semi-axes (x a small log-normal size variation) and an orientation, the local fibre direction
    (stroma, adipose) or a random one. Ellipses are rasterised analytically at sub-pixel centres,
    ``chunk`` nuclei at a time (memory bounded by the chunk and its band of rows), and summed
    with saturation.
    """
    cy, cx = np.nonzero(counts_lr)
    reps = counts_lr[cy, cx]
    cy, cx = np.repeat(cy, reps), np.repeat(cx, reps)
    n = cy.size
    y = cy * LOWRES + rng.uniform(0, LOWRES, n)
    x = cx * LOWRES + rng.uniform(0, LOWRES, n)
    kind = region_lr[cy, cx]
    scale = rng.lognormal(0.0, 0.12, n)
    a, b = NUCLEUS_AXES[kind, 0] * scale, NUCLEUS_AXES[kind, 1] * scale
    theta = np.where(
        NUCLEUS_ALIGNED[kind], fibre_lr[cy, cx] + rng.normal(0.0, 0.2, n), rng.uniform(0, np.pi, n)
    )
    half = int(np.ceil(NUCLEUS_AXES.max())) + 1
    off = np.arange(-half, half + 1)
    oy, ox = (o.ravel() for o in np.meshgrid(off, off, indexing="ij"))
    alpha = np.zeros(size * size, dtype=np.float64)
    for s in range(0, n, chunk):
        sl = slice(s, min(n, s + chunk))
        py = np.floor(y[sl]).astype(np.int64)[:, None] + oy
        px = np.floor(x[sl]).astype(np.int64)[:, None] + ox
        dy, dx = py + 0.5 - y[sl, None], px + 0.5 - x[sl, None]
        cos, sin = np.cos(theta[sl])[:, None], np.sin(theta[sl])[:, None]
        r2 = ((dx * cos + dy * sin) / a[sl, None]) ** 2 + ((dy * cos - dx * sin) / b[sl, None]) ** 2
        value = np.clip((1.0 - r2) * 2.5, 0.0, 1.0)
        inside = (value > 0) & (py >= 0) & (py < size) & (px >= 0) & (px < size)
        flat = (py * size + px)[inside]
        if flat.size:
            # nuclei come in row-major order, so a chunk touches one band of rows only
            lo, hi = int(flat.min()), int(flat.max()) + 1
            alpha[lo:hi] += np.bincount(flat - lo, weights=value[inside], minlength=hi - lo)
    return (np.minimum(alpha, 1.0) * NUCLEUS_OPACITY).astype(np.float32).reshape(size, size)
