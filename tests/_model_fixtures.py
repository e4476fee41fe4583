"""Small in-memory fixtures for the model/training tests (no slides, no other areas' code).

Each section is a grid of spots; a smooth latent field z (3 values per spot) drives both the
expression (a fixed linear map + noise, then log1p) and the hue and stripe texture of the
spot's patch, so an image encoder can learn to predict expression.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from mclstexp.train.sections import TrainingSection


def make_section(
    index: int,
    *,
    grid: int = 10,
    n_genes: int = 12,
    patch: int = 24,
    seed: int = 0,
) -> TrainingSection:
    rng = np.random.default_rng([seed, index])
    rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    rows, cols = rows.ravel(), cols.ravel()
    phase = rng.uniform(0, 2 * np.pi, size=(3, 2))
    freq = np.array([[0.5, 0.3], [0.25, 0.6], [0.4, 0.45]])
    z = np.stack(
        [
            np.sin(freq[k, 0] * rows + phase[k, 0]) * np.cos(freq[k, 1] * cols + phase[k, 1])
            for k in range(3)
        ],
        axis=1,
    )  # (n, 3) in [-1, 1]
    w = np.random.default_rng(seed + 1000).normal(size=(3, n_genes))  # shared across sections
    counts = np.exp(1.0 + z @ w * 0.8 + 0.15 * rng.normal(size=(len(z), n_genes)))
    x = np.log1p(counts).astype(np.float32)
    n = len(z)
    yy, xx = np.mgrid[0:patch, 0:patch]
    patches = np.empty((n, patch, patch, 3), dtype=np.uint8)
    for i in range(n):
        base = 128 + 90 * z[i]  # hue from z
        stripes = 25 * np.sin(xx * (0.4 + 0.3 * (z[i, 0] + 1)) + yy * 0.2)
        img = base[None, None, :] + stripes[..., None] + rng.normal(0, 8, size=(patch, patch, 3))
        patches[i] = np.clip(img, 0, 255).astype(np.uint8)
    obs = pd.DataFrame(
        {"array_row": rows, "array_col": cols, "section": f"S{index}"},
        index=[f"S{index}_{r}x{c}" for r, c in zip(rows, cols, strict=True)],
    )
    adata = ad.AnnData(x, obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]))
    adata.obsm["spatial"] = np.stack([cols * 20.0, rows * 20.0], axis=1)
    adata.uns["mclstexp"] = {"section": f"S{index}", "slide_path": None, "mpp": None}
    return TrainingSection(adata, patches)


def make_sections(n: int = 3, **kw: object) -> list[TrainingSection]:
    return [make_section(i, **kw) for i in range(n)]  # type: ignore[arg-type]


def pcc_per_gene(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    p = pred - pred.mean(0)
    t = true - true.mean(0)
    den = np.sqrt((p**2).sum(0) * (t**2).sum(0))
    keep = den > 0
    return (p * t).sum(0)[keep] / den[keep]


def topk_predict(query: np.ndarray, keys: np.ndarray, values: np.ndarray, k: int) -> np.ndarray:
    qn = query / np.linalg.norm(query, axis=1, keepdims=True)
    kn = keys / np.linalg.norm(keys, axis=1, keepdims=True)
    sim = qn @ kn.T
    top = np.argsort(-sim, axis=1)[:, :k]
    return values[top].mean(1)
