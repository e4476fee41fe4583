"""Reference rows (training mean, colour ridge, library size, library size oracle) on her2st C2-C6.

Reproduces the reference rows of the README's her2st table ("On her2st ... mean ± sd over the 15
(section, seed) records": training_mean, colour_ridge, library_size, library_size_oracle) without
training a model: the rows do not depend on the training seed, so 5 held-out sections give the
same means. Leave-one-section-out over the sections with images; every row evaluated per section
on both targets (the original's per-gene ``legacy_gene`` normalisation and per-spot ``default``
log1p, both by :func:`mclstexp.pp.normalize_expression`), with the depth-controlled partial PCC,
under both undefined-prediction policies. Model-free: needs no torch, no trained model.

    python experiments/her2st_reference_rows.py --root ../shared/data/her2st --out /tmp/refrows

Sections are read with :func:`mclstexp.io.read_her2st`; patches of 224 px are cut from the
full-resolution JPEG around each spot centre (clipped to the image).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from mclstexp import metrics as M
from mclstexp.baselines import patch_colour_features, reference_baselines
from mclstexp.io import read_her2st
from mclstexp.pp import normalize_expression

PATCH = 224


def _patches(image: Path, centres: np.ndarray) -> np.ndarray:
    """``PATCH`` px patches around each ``(x, y)`` centre, shifted inside the image."""
    Image.MAX_IMAGE_PIXELS = None  # trusted public data, ~92 Mpx
    with Image.open(image) as im:
        img = np.asarray(im.convert("RGB"))
    h, w = img.shape[:2]
    patches = np.empty((len(centres), PATCH, PATCH, 3), np.uint8)
    for i, (px, py) in enumerate(centres):
        x0 = int(np.clip(np.floor(px) - PATCH // 2, 0, w - PATCH))
        y0 = int(np.clip(np.floor(py) - PATCH // 2, 0, h - PATCH))
        patches[i] = img[y0 : y0 + PATCH, x0 : x0 + PATCH]
    return patches


def load_section(root: Path, sec: str, panel: np.ndarray) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # spot-file rows without counts (0-3 per section)
        adata = read_her2st(root, sec, labels=False)
    library = np.asarray(adata.obs["library_size"], dtype=np.float64)  # all genes of the file
    targets = {}
    for flavor in ("legacy_gene", "default"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # genes with zero counts in this section score 0
            norm = normalize_expression(adata, genes=list(panel), flavor=flavor)
        targets[flavor] = np.asarray(norm.X, dtype=np.float64)
    slide = adata.uns["mclstexp"]["slide_path"]
    return {
        "library": library,
        "log_l": M.log_library_size(library),
        "features": patch_colour_features(_patches(Path(slide), adata.obsm["spatial"])),
        "targets": targets,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("../shared/data/her2st"))
    ap.add_argument("--panel", type=Path, default=None)
    ap.add_argument("--sections", nargs="+", default=["C2", "C3", "C4", "C5", "C6"])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    panel_path = args.panel or args.root.parent / "genes" / "her_hvg_cut_1000.npy"
    panel = np.load(panel_path, allow_pickle=False).astype(str)
    t0 = time.perf_counter()
    data = {s: load_section(args.root, s, panel) for s in args.sections}
    t_load = time.perf_counter() - t0
    records = []
    t1 = time.perf_counter()
    for test in args.sections:
        train = [s for s in args.sections if s != test]
        groups = np.concatenate([[s] * len(data[s]["log_l"]) for s in train])
        for target in ("legacy_gene", "default"):
            for b in reference_baselines():
                b.fit(
                    np.vstack([data[s]["features"] for s in train]),
                    np.vstack([data[s]["targets"][target] for s in train]),
                    log_library_size=np.concatenate([data[s]["log_l"] for s in train]),
                    groups=groups,
                )
                pred = b.predict(data[test]["features"], log_library_size=data[test]["log_l"])
                for policy in ("exclude", "zero"):
                    rec = M.evaluate_section(
                        data[test]["targets"][target],
                        pred,
                        genes=list(panel),
                        section=test,
                        target=target,
                        log_library_size=data[test]["log_l"],
                        method=b.name,
                        undefined_pred=policy,
                    )
                    records.append(rec)
    t_fit = time.perf_counter() - t1
    df = pd.DataFrame(records)
    agg = M.aggregate_records(df, by=("method", "target", "scope", "undefined_pred"))
    cols = ["acg", "heg", "hvg", "partial_acg", "partial_heg", "partial_hvg", "mse"]
    pd.set_option("display.width", 200)
    for policy in ("exclude", "zero"):
        sub = agg[agg.undefined_pred == policy]
        table = sub[["target", "method"]].copy()
        for c in cols:
            table[c] = [
                f"{m:.3f}±{s:.3f}" for m, s in zip(sub[f"{c}_mean"], sub[f"{c}_sd"], strict=True)
            ]
        print(f"\nundefined_pred={policy}  (mean ± sd over {len(args.sections)} held-out sections)")
        print(table.to_string(index=False))
    print(f"\nload + features {t_load:.1f} s, fit + evaluate {t_fit:.1f} s")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        df.to_csv(args.out / "records.csv", index=False)
        agg.to_csv(args.out / "summary.csv", index=False)
        (args.out / "records.json").write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
