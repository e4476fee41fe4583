"""Reference rows (training mean, colour ridge, library size, library size oracle) on her2st C2-C6.

Leave-one-section-out over the sections with images; every row evaluated per section on both
targets (the original's per-gene ``legacy_gene`` normalisation and per-spot ``default`` log1p),
with the depth-controlled partial PCC. Model-free: needs no torch, no trained model.

    python benches/her2st_reference_rows.py --root ../shared/data/her2st --out /tmp/refrows

The two normalisations are implemented here with numpy (``mclstexp.pp.normalize_expression`` is
the package's version); zero denominators give 0.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from mclstexp import metrics as M
from mclstexp.baselines import patch_colour_features, reference_baselines

PATCH = 224


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a), where=b > 0)


def legacy_gene(c: np.ndarray) -> np.ndarray:
    return np.log10(1.0 + 1e4 * _safe_div(c, c.sum(axis=0, keepdims=True)))


def per_spot(c: np.ndarray, library: np.ndarray) -> np.ndarray:
    return np.log1p(1e4 * _safe_div(c, library[:, None]))


def load_section(root: Path, sec: str, panel: np.ndarray) -> dict:
    cnt = pd.read_csv(root / "data/ST-cnts" / f"{sec}.tsv.gz", sep="\t", index_col=0)
    spots = pd.read_csv(root / "data/ST-spotfiles" / f"{sec}_selection.tsv", sep="\t")
    spots.index = [f"{round(x)}x{round(y)}" for x, y in zip(spots.x, spots.y, strict=True)]
    ids = cnt.index.intersection(spots.index)
    cnt, spots = cnt.loc[ids], spots.loc[ids]
    library = cnt.to_numpy(np.float64).sum(axis=1)  # all genes of the file
    counts = cnt.reindex(columns=panel, fill_value=0).to_numpy(np.float64)
    (jpg,) = sorted((root / "data/ST-imgs" / sec[0] / sec).glob("*.jpg"))
    Image.MAX_IMAGE_PIXELS = None  # trusted public data, ~92 Mpx
    img = np.asarray(Image.open(jpg).convert("RGB"))
    h, w = img.shape[:2]
    patches = np.empty((len(ids), PATCH, PATCH, 3), np.uint8)
    for i, (px, py) in enumerate(zip(spots.pixel_x, spots.pixel_y, strict=True)):
        x0 = int(np.clip(np.floor(px) - PATCH // 2, 0, w - PATCH))
        y0 = int(np.clip(np.floor(py) - PATCH // 2, 0, h - PATCH))
        patches[i] = img[y0 : y0 + PATCH, x0 : x0 + PATCH]
    del img
    return {
        "counts": counts,
        "library": library,
        "log_l": M.log_library_size(library),
        "features": patch_colour_features(patches),
        "targets": {"legacy_gene": legacy_gene(counts), "default": per_spot(counts, library)},
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
