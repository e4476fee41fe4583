"""A deterministic synthetic spatial transcriptomics dataset: tissue-like slides, learnable spots.

Each section is a small tiled, JPEG-compressed pyramidal TIFF (3 levels, 256 px tiles, microns per
pixel in the resolution tags and in a JSON ``ImageDescription``) showing H&E-like tissue: smooth
regions of four types (``tumour``, ``stroma``, ``immune``, ``adipose``) on a white background.
Spots sit on a square grid (legacy ST layout, ids ``"<col>x<row>"``) over the tissue. Their counts
are negative-binomial with a mean that depends on what lies under the spot (region fractions,
cellularity, eosin intensity), on its position, on the patient (a small batch effect) and on a
per-spot sequencing depth. The ground truth behind each spot is kept
(``obsm["synthetic_regions"]``, ``obs["label"]`` = dominant region, the spot's mean cellularity and
eosin fields in ``obs["synthetic_cellularity"/"synthetic_eosin"]``, a region map in ``uns``).

How the regions look (generator version 2). As in real H&E, the cell type shows in the *shape and
size* of the nuclei more than in the stain colour (sizes below at the default 2 um per pixel):

- tumour, stroma and immune regions share one eosin colour and one haematoxylin colour, and have
  the same expected nuclear area fraction (about 14 %), so their mean colour is nearly the same;
- tumour: large oval nuclei (about 14 x 11 um), randomly oriented;
- stroma: spindle nuclei (about 21 x 4 um) aligned with a smooth local fibre direction;
- immune: small round dense-packed nuclei (about 6 um, lymphocytes);
- adipose: large empty vacuoles (fat cells) between thin pink membranes, few flat nuclei.

Cellularity (a smooth field) scales the nuclear density of every region, and the eosin field shades
the stain, so part of the signal is also visible in simple colour statistics. Version 1 (until
commit 9dde82a) gave each region its own colour, which made expression nearly linear in a patch's
colour statistics.

The same arguments give the same bytes (TIFF and counts). Files are cached under ``root`` (default
``$MCLSTEXP_CACHE_DIR`` or ``~/.cache/mclstexp``, then ``synthetic/<hash of the arguments>``) and
reused when complete and intact.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from mclstexp import _keys as K
from mclstexp.datasets import _tissue as T
from mclstexp.datasets._pyramid import write_pyramid_tiff
from mclstexp.exceptions import CacheMismatchError

REGIONS: tuple[str, ...] = ("tumour", "stroma", "immune", "adipose")
BACKGROUND = 255  # value of the region map outside the tissue

_GENERATOR_VERSION = 2
_N_LEVELS = 3

# Prior weight of each region in the region fields (adipose rarer).
_REGION_BIAS = np.array([0.15, 0.2, 0.0, -0.25], dtype=np.float32)


def default_cache_dir() -> Path:
    """The root of mclstexp's caches: ``$MCLSTEXP_CACHE_DIR``, else ``$XDG_CACHE_HOME/mclstexp``.

    Returns
    -------
    Path
        The directory (not created).

    Examples
    --------
    >>> default_cache_dir().name
    'mclstexp'
    """
    env = os.environ.get("MCLSTEXP_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "mclstexp"


def synthetic(
    root: str | os.PathLike[str] | None = None,
    *,
    n_sections: int = 4,
    n_patients: int = 2,
    n_spots: int = 200,
    n_genes: int = 50,
    spot_pitch_px: int = 100,
    mpp: float = 2.0,
    patch_size: int = 64,
    seed: int = 0,
    overwrite: bool = False,
) -> list[AnnData]:
    """Generate (or load from its cache) the synthetic dataset.

    Parameters
    ----------
    root
        Folder for the slides and AnnData files. Default: ``<cache>/synthetic/<hash>`` where the
        hash covers every argument below. A folder that already holds the same dataset is reused;
        one holding a *different* dataset raises :class:`mclstexp.exceptions.CacheMismatchError`
        unless ``overwrite=True``.
    n_sections
        Number of sections (slides).
    n_patients
        Sections are split over this many patients (``"A"``, ``"B"``, ...; sections ``"A1"``,
        ``"A2"``, ...), each with its own stain shade and expression batch effect.
    n_spots
        Spots per section (a compact blob of a square grid).
    n_genes
        Genes (``"G000"``, ``"G001"``, ...).
    spot_pitch_px
        Centre-to-centre spot distance in full-resolution pixels (spot diameter = half of it). With
        ``mpp`` this sets the physical scale: 100 px at 2 um/px is the legacy ST pitch of 200 um.
    mpp
        Microns per pixel of the full-resolution level.
    patch_size
        Suggested patch size in pixels, recorded in ``uns["mclstexp"]["patch_size"]``.
    seed
        Random seed; the same arguments give byte-identical files and identical counts.
    overwrite
        Regenerate even when ``root`` holds a complete dataset.

    Returns
    -------
    list of AnnData
        One per section, in order, following the package's AnnData contract: raw counts in ``X``
        (CSR float32), ``obsm["spatial"]`` pixel centres (x = column, y = row),
        ``obs["array_row"/"array_col"/"section"/"patient"/"label"/"library_size"]``, the ground
        truth region fractions in ``obsm["synthetic_regions"]`` (columns in :data:`REGIONS` order)
        and fields ``obs["synthetic_cellularity"/"synthetic_eosin"]`` (the spot's mean; with the
        fractions, the image-visible variables the log-mean expression is linear in), and
        ``uns["mclstexp"]`` with ``slide_path``, ``section``, ``patient``, ``mpp``,
        ``spot_diameter_px``, ``patch_size`` and ``synthetic`` (the arguments and a region map at
        1/4 scale, 255 = background).

    Examples
    --------
    >>> import tempfile
    >>> sections = synthetic(tempfile.mkdtemp(), n_sections=2, n_spots=60, n_genes=10)
    >>> [a.uns["mclstexp"]["section"] for a in sections]
    ['A1', 'B1']
    >>> sections[0].shape
    (60, 10)
    """
    params = _check_params(
        n_sections=n_sections,
        n_patients=n_patients,
        n_spots=n_spots,
        n_genes=n_genes,
        spot_pitch_px=spot_pitch_px,
        mpp=mpp,
        patch_size=patch_size,
        seed=seed,
    )
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(root) if root is not None else default_cache_dir() / "synthetic" / key
    folder = folder.expanduser()
    marker = folder / "COMPLETE.json"
    if not overwrite and marker.is_file():
        try:
            done = json.loads(marker.read_text())
        except (OSError, ValueError):
            done = None
        if isinstance(done, dict):
            if done.get("params") != params:
                raise CacheMismatchError(
                    f"{folder}: holds a synthetic dataset made with other arguments "
                    f"({done.get('params')}); pass another root or overwrite=True"
                )
            loaded = _load_complete(folder, done)
            if loaded is not None:
                return loaded
    return _generate(folder, params)


def _check_params(**p: Any) -> dict[str, Any]:
    ints = ("n_sections", "n_patients", "n_spots", "n_genes", "spot_pitch_px", "patch_size", "seed")
    for name in ints:
        v = p[name]
        if isinstance(v, bool) or not isinstance(v, int | np.integer):
            raise TypeError(f"{name}: expected an integer, got {type(v).__name__}")
        p[name] = int(v)
    limits = {
        "n_sections": (1, 200),
        "n_patients": (1, 26),
        "n_spots": (4, 20000),
        "n_genes": (1, 20000),
        "spot_pitch_px": (16, 2000),
        "patch_size": (8, 4096),
        "seed": (0, 2**63 - 1),
    }
    for name, (lo, hi) in limits.items():
        if not lo <= p[name] <= hi:
            raise ValueError(f"{name}: expected {lo} <= {name} <= {hi}, got {p[name]}")
    if p["n_patients"] > p["n_sections"]:
        raise ValueError(
            f"n_patients: {p['n_patients']} patients need at least as many sections "
            f"(n_sections={p['n_sections']})"
        )
    mpp = float(p["mpp"])
    if not (np.isfinite(mpp) and 0.05 <= mpp <= 100):
        raise ValueError(f"mpp: expected microns per pixel in [0.05, 100], got {p['mpp']!r}")
    p["mpp"] = mpp
    p["generator_version"] = _GENERATOR_VERSION
    return p


def _section_names(n_sections: int, n_patients: int) -> list[tuple[str, str]]:
    names = []
    counter: dict[str, int] = {}
    for i in range(n_sections):
        patient = chr(ord("A") + (i * n_patients) // n_sections)
        counter[patient] = counter.get(patient, 0) + 1
        names.append((f"{patient}{counter[patient]}", patient))
    # Interleave so that the first sections cover several patients (A1, B1, A2, B2, ...).
    return sorted(names, key=lambda sp_: (int(sp_[0][1:]), sp_[0][0]))


class _Section:
    """Everything generated for one section (image at full resolution and the spot table)."""

    def __init__(
        self,
        name: str,
        patient: str,
        params: dict[str, Any],
        rng: np.random.Generator,
        patient_shift: np.ndarray,
    ) -> None:
        pitch = params["spot_pitch_px"]
        n_spots = params["n_spots"]
        side = math.ceil(math.sqrt(n_spots * 1.4))
        size = side * pitch + 2 * pitch
        size = ((size + 4 * T.LOWRES - 1) // (4 * T.LOWRES)) * (4 * T.LOWRES)
        self.name, self.patient, self.size = name, patient, size
        # the order of these calls is the order of the random draws: keep it
        gx, gy, keep = self._place_spots(rng, side, pitch, n_spots)
        region, nuclei_lr, reg, fibre_lr = self._draw_fields(rng, gx[keep], gy[keep], pitch)
        self._render(rng, patient_shift, region, nuclei_lr, reg, fibre_lr)
        self._ground_truth(pitch, keep.size)

    def _place_spots(
        self, rng: np.random.Generator, side: int, pitch: int, n_spots: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        size = self.size
        # Spots: the n_spots grid positions nearest the centre under a noisy distance -> a blob.
        grid_c, grid_r = np.meshgrid(np.arange(side), np.arange(side))
        cols, rows = grid_c.ravel(), grid_r.ravel()
        offset = (size - side * pitch) / 2
        gx = offset + (cols + 0.5) * pitch
        gy = offset + (rows + 0.5) * pitch
        wobble = T.smooth_field(rng, (side, side), 2.0).ravel()
        dist = np.hypot(gx - size / 2, gy - size / 2) / (side * pitch / 2) + 0.18 * wobble
        keep = np.sort(np.argsort(dist, kind="stable")[:n_spots])
        self.array_col = cols[keep] + 1
        self.array_row = rows[keep] + 1
        jitter = rng.uniform(-1.5, 1.5, size=(keep.size, 2))
        self.xy = np.column_stack([gx[keep], gy[keep]]) + jitter
        return gx, gy, keep

    def _draw_fields(
        self, rng: np.random.Generator, sx: np.ndarray, sy: np.ndarray, pitch: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        from scipy.ndimage import distance_transform_edt, gaussian_filter

        size = self.size
        lr = size // T.LOWRES
        # Tissue mask (low resolution): within ~0.8 pitch of a spot, smoothed.
        seeds = np.ones((lr, lr), dtype=bool)
        seeds[(sy / T.LOWRES).astype(int), (sx / T.LOWRES).astype(int)] = False
        dist_lr = distance_transform_edt(seeds) * T.LOWRES
        edge = T.smooth_field(rng, (lr, lr), 6.0)
        tissue = gaussian_filter((dist_lr < (0.85 + 0.12 * edge) * pitch).astype(np.float32), 3)
        self.tissue = tissue > 0.5

        # Region types: argmax of smooth random fields (blobs ~2-4 spots across).
        coarse = max(4, size // 32)
        fields = np.stack(
            [
                T.upsample(T.smooth_field(rng, (coarse, coarse), 2.5), (lr, lr)) + b
                for b in _REGION_BIAS
            ]
        )
        region = np.argmax(fields, axis=0).astype(np.uint8)
        self.region_lr = np.where(self.tissue, region, BACKGROUND).astype(np.uint8)
        # Continuous fields: eosin intensity and cellularity (both influence expression).
        self.eosin_lr = T.upsample(T.smooth_field(rng, (coarse, coarse), 2.0), (lr, lr))
        self.cell_lr = T.upsample(T.smooth_field(rng, (coarse, coarse), 1.5), (lr, lr))

        # Nuclei counts per low-res cell: Poisson with region- and cellularity-dependent rate.
        reg = np.minimum(region, len(REGIONS) - 1)
        rate = T.NUCLEI_DENSITY[reg] / 1000.0 * (T.LOWRES**2) * np.exp(0.35 * self.cell_lr)
        nuclei_lr = rng.poisson(np.where(self.tissue, rate, 0.0))
        # local fibre direction (radians) that stromal nuclei follow
        fibre_lr = T.upsample(T.smooth_field(rng, (coarse, coarse), 2.0), (lr, lr)) * 1.3
        return region, nuclei_lr, reg, fibre_lr

    def _render(
        self,
        rng: np.random.Generator,
        patient_shift: np.ndarray,
        region: np.ndarray,
        nuclei_lr: np.ndarray,
        reg: np.ndarray,
        fibre_lr: np.ndarray,
    ) -> None:
        from scipy.ndimage import gaussian_filter

        size = self.size
        # Render the full-resolution image: eosin ground, stain texture, fat vacuoles, nuclei.
        rgb_lr = T.EOSIN_RGB * (1.0 - 0.05 * self.eosin_lr[..., None]) * patient_shift
        rgb_lr = np.where(self.tissue[..., None], rgb_lr, T.GLASS_RGB)
        soft = gaussian_filter(self.tissue.astype(np.float32), 1.5)
        rgb_lr = soft[..., None] * rgb_lr + (1 - soft[..., None]) * T.GLASS_RGB
        img = np.repeat(np.repeat(rgb_lr.astype(np.float32), T.LOWRES, 0), T.LOWRES, 1)
        texture = gaussian_filter(rng.standard_normal((size, size), dtype=np.float32), 1.2)
        texture *= np.repeat(np.repeat(9.0 * soft, T.LOWRES, 0), T.LOWRES, 1)
        img += texture[..., None]
        fat_lr = (region == len(REGIONS) - 1) & self.tissue
        vacuole = T.fat_vacuoles(rng, np.repeat(np.repeat(fat_lr, T.LOWRES, 0), T.LOWRES, 1))
        img += vacuole[..., None] * (T.GLASS_RGB - img)
        alpha = T.nuclei_alpha(rng, size, nuclei_lr, reg, fibre_lr)
        nucleus = (T.NUCLEUS_RGB * patient_shift).astype(np.float32)
        img += alpha[..., None] * (nucleus - img)
        img += 3.0 * rng.standard_normal(img.shape, dtype=np.float32)
        img += 0.5
        np.clip(img, 0, 255, out=img)
        self.image = img.astype(np.uint8)

    def _ground_truth(self, pitch: int, n: int) -> None:
        """Region fractions, eosin and cellularity under each spot (disc of diameter pitch / 2)."""
        lr = self.size // T.LOWRES
        self.radius_px = pitch / 4.0
        rr = self.radius_px / T.LOWRES
        yy, xx = np.mgrid[0:lr, 0:lr]
        self.fractions = np.zeros((n, len(REGIONS)), dtype=np.float64)
        self.eosin = np.zeros(n, dtype=np.float64)
        self.cell = np.zeros(n, dtype=np.float64)
        for i, (x, y) in enumerate(self.xy / T.LOWRES):
            y0, y1 = max(0, int(y - rr) - 1), min(lr, int(y + rr) + 2)
            x0, x1 = max(0, int(x - rr) - 1), min(lr, int(x + rr) + 2)
            disc = (yy[y0:y1, x0:x1] + 0.5 - y) ** 2 + (xx[y0:y1, x0:x1] + 0.5 - x) ** 2 <= rr**2
            reg_d = self.region_lr[y0:y1, x0:x1][disc]
            counts = np.bincount(reg_d[reg_d != BACKGROUND], minlength=len(REGIONS))
            self.fractions[i] = counts / max(1, disc.sum())
            self.eosin[i] = self.eosin_lr[y0:y1, x0:x1][disc].mean()
            self.cell[i] = self.cell_lr[y0:y1, x0:x1][disc].mean()

    def pyramid(self) -> list[np.ndarray]:
        levels = [self.image]
        for _ in range(1, _N_LEVELS):
            a = levels[-1]
            h, w = a.shape[0] // 2 * 2, a.shape[1] // 2 * 2
            a = a[:h, :w].astype(np.uint16)
            down = (a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2] + 2) // 4
            levels.append(down.astype(np.uint8))
        return levels


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _gene_model(params: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
    g = params["n_genes"]
    k = len(REGIONS)
    region_w = rng.normal(0.0, 0.45, size=(g, k))
    marker = rng.integers(0, k, size=g)
    region_w[np.arange(g), marker] += rng.uniform(0.8, 1.8, size=g)
    region_w -= region_w.mean(axis=1, keepdims=True)
    return {
        "base": rng.uniform(np.log(1.0), np.log(40.0), size=g),
        "region": region_w,
        "eosin": rng.normal(0.0, 0.3, size=g),
        "cell": rng.normal(0.0, 0.25, size=g),
        "pos": rng.normal(0.0, 0.25, size=(g, 2)),
    }


def _generate(folder: Path, params: dict[str, Any]) -> list[AnnData]:
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / "COMPLETE.json"
    if marker.exists():
        marker.unlink()
    seq = np.random.SeedSequence(params["seed"])
    gene_seq, patient_seq, *section_seqs = seq.spawn(2 + params["n_sections"])
    genes = _gene_model(params, np.random.default_rng(gene_seq))
    names = _section_names(params["n_sections"], params["n_patients"])
    patients = sorted({p for _, p in names})
    prng = np.random.default_rng(patient_seq)
    shade = {p: 1.0 + prng.normal(0.0, 0.035, size=3) for p in patients}
    batch = {p: prng.normal(0.0, 0.12, size=params["n_genes"]) for p in patients}
    var_names = [f"G{i:03d}" for i in range(params["n_genes"])]
    files: dict[str, dict[str, str]] = {}
    out = []
    for (name, patient), sseq in zip(names, section_seqs, strict=True):
        rng = np.random.default_rng(sseq)
        section = _Section(name, patient, params, rng, shade[patient])
        slide = folder / f"{name}.tif"
        tmp = folder / f".{name}.tif.tmp{os.getpid()}"
        write_pyramid_tiff(
            tmp,
            section.pyramid(),
            mpp=params["mpp"],
            description={"section": name, "patient": patient, "synthetic": True},
        )
        tmp.replace(slide)
        adata = _spots(section, params, genes, batch[patient], var_names, rng, slide)
        h5 = folder / f"{name}.h5ad"
        tmp = folder / f".{name}.h5ad.tmp{os.getpid()}"
        adata.write_h5ad(tmp)
        tmp.replace(h5)
        files[name] = {"tif": _sha256(slide), "h5ad": _sha256(h5)}
        out.append(adata)
    done = {"params": params, "sections": [n for n, _ in names], "sha256": files}
    tmp = folder / f".COMPLETE.json.tmp{os.getpid()}"
    tmp.write_text(json.dumps(done, indent=1, sort_keys=True))
    tmp.replace(marker)
    return out


def _spots(
    s: _Section,
    params: dict[str, Any],
    genes: dict[str, np.ndarray],
    batch: np.ndarray,
    var_names: list[str],
    rng: np.random.Generator,
    slide: Path,
) -> AnnData:
    n = s.xy.shape[0]
    pos = s.xy / s.size * 2.0 - 1.0
    log_mu = (
        genes["base"][None, :]
        + s.fractions @ genes["region"].T
        + np.outer(s.eosin, genes["eosin"])
        + np.outer(s.cell, genes["cell"])
        + pos @ genes["pos"].T
        + batch[None, :]
    )
    depth = np.asarray(rng.lognormal(0.0, 0.35, size=n))
    mu = np.exp(log_mu) * depth[:, None]
    theta = 5.0
    lam = rng.gamma(theta, mu / theta)
    counts = rng.poisson(lam).astype(np.float32)
    ids = [f"{c}x{r}" for c, r in zip(s.array_col, s.array_row, strict=True)]
    dominant = np.asarray(REGIONS)[np.argmax(s.fractions, axis=1)]
    obs = pd.DataFrame(
        {
            K.ARRAY_ROW: s.array_row.astype(np.int64),
            K.ARRAY_COL: s.array_col.astype(np.int64),
            K.SECTION: pd.Categorical([s.name] * n),
            K.PATIENT: pd.Categorical([s.patient] * n),
            K.LABEL: pd.Categorical(dominant, categories=list(REGIONS)),
            K.LIBRARY_SIZE: counts.sum(axis=1).astype(np.float64),
            K.SYNTH_CELLULARITY: s.cell.astype(np.float64),
            K.SYNTH_EOSIN: s.eosin.astype(np.float64),
        },
        index=pd.Index(ids, name=None),
    )
    adata = AnnData(
        X=sp.csr_matrix(counts),
        obs=obs,
        var=pd.DataFrame(index=pd.Index(var_names)),
        obsm={K.SPATIAL: s.xy.astype(np.float64), K.SYNTH_REGIONS: s.fractions.copy()},
    )
    adata.uns[K.UNS] = {
        K.UNS_SLIDE_PATH: str(slide),
        K.UNS_SECTION: s.name,
        K.UNS_PATIENT: s.patient,
        K.UNS_MPP: float(params["mpp"]),
        K.UNS_SPOT_DIAMETER_PX: float(2 * s.radius_px),
        "patch_size": int(params["patch_size"]),
        "synthetic": {
            "params": dict(params),
            "regions": list(REGIONS),
            "region_map": s.region_lr,
            "region_map_scale": int(T.LOWRES),
        },
    }
    return adata


def _load_complete(folder: Path, done: dict[str, Any]) -> list[AnnData] | None:
    import anndata

    out = []
    for name in done.get("sections", []):
        slide, h5 = folder / f"{name}.tif", folder / f"{name}.h5ad"
        expected = done.get("sha256", {}).get(name, {})
        if not (slide.is_file() and h5.is_file()):
            return None
        if _sha256(slide) != expected.get("tif") or _sha256(h5) != expected.get("h5ad"):
            return None
        adata = anndata.read_h5ad(h5)
        adata.uns[K.UNS][K.UNS_SLIDE_PATH] = str(slide)
        out.append(adata)
    return out or None
