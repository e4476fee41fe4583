"""``mclstexp predict``: predict expression for new spots, or densely over a slide's tissue."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np


def register(subparsers: Any) -> None:
    """Add the ``predict`` subcommand."""
    parser = subparsers.add_parser(
        "predict",
        help="predict spot expression from H&E with a trained model and its reference",
        description=(
            "Predict expression from image patches with a trained model (model.pt or a fold "
            "directory of `mclstexp run`) and its reference (reference.npz). Spots come from an "
            ".h5ad with obsm['spatial'], a her2st section, or, with --grid, a patch grid over the "
            "detected tissue of a slide (dense prediction)."
        ),
    )
    parser.add_argument("--model", type=Path, required=True, help="model.pt or a fold directory")
    parser.add_argument("--reference", type=Path, help="reference.npz (default: beside the model)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--h5ad", type=Path, help="AnnData with obsm['spatial'] (and a slide)")
    source.add_argument("--her2st", type=Path, metavar="ROOT", help="her2st data folder")
    source.add_argument("--grid", type=Path, metavar="SLIDE", help="dense prediction over tissue")
    parser.add_argument("--section", help="her2st section id (with --her2st)")
    parser.add_argument("--slide", type=Path, help="slide of the --h5ad spots (if not recorded)")
    parser.add_argument("--min-tissue", type=float, default=0.5, help="grid: min tissue fraction")
    parser.add_argument("--out", type=Path, required=True, help="output .h5ad")
    parser.add_argument("--cache", type=Path, help="patch cache (default: OUT with .zarr)")
    parser.add_argument("--k", type=int, default=200, help="neighbours per spot (default 200)")
    parser.add_argument(
        "--aggregation",
        default="inverse_l1",
        choices=["mean", "similarity", "inverse_l1", "inverse_l2"],
    )
    from mclstexp.retrieval.backends import BACKENDS

    parser.add_argument(
        "--backend", default="native", choices=BACKENDS, help="retrieval backend (default native)"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--plot-genes", nargs="*", help="also write a map of these genes (PNG)")
    parser.set_defaults(func=_predict)


def _resolve_model(path: Path, reference: Path | None) -> tuple[Path, Path]:
    model = path / "model.pt" if path.is_dir() else path
    if not model.is_file():
        raise FileNotFoundError(2, "model file not found (expected model.pt)", str(model))
    ref = reference or model.parent / "reference.npz"
    if not ref.is_file():
        raise FileNotFoundError(2, "reference not found; pass --reference", str(ref))
    return model, ref


def _grid_adata(slide_path: Path, size: int, min_tissue: float, mpp: float | None = None) -> Any:
    import anndata as ad
    import pandas as pd

    from mclstexp import _keys
    from mclstexp.io import open_slide
    from mclstexp.pp import grid_centers

    with open_slide(slide_path) as slide:
        centers = grid_centers(slide, size=size, mpp=mpp, min_tissue=min_tissue)
        slide_mpp = slide.mpp
    obs = pd.DataFrame(index=[f"grid{i}" for i in range(len(centers))])
    adata = ad.AnnData(obs=obs)
    adata.obsm[_keys.SPATIAL] = np.asarray(centers, dtype=np.float64)
    adata.uns[_keys.UNS] = {
        _keys.UNS_SLIDE_PATH: str(slide_path),
        _keys.UNS_SECTION: slide_path.stem,
        _keys.UNS_MPP: slide_mpp,
    }
    return adata


def _predict(args: argparse.Namespace) -> int:
    from mclstexp import _keys
    from mclstexp.pp import extract_patches
    from mclstexp.tl import predict_expression

    started = time.perf_counter()
    model, meta, reference, model_path, ref_path = _checked_inputs(args)
    plot_genes = _plot_genes(args.plot_genes, reference.genes) if args.plot_genes else []
    size = int(meta.get("train_config", {}).get("patch_size", 224))
    mpp = meta.get("train_config", {}).get("patch_mpp")  # cut as in training
    adata = _spots(args, size, mpp)
    cache = extract_patches(
        adata,
        store=args.cache or args.out.with_suffix(".zarr"),
        size=size,
        mpp=mpp,
        slide_path=args.slide,
    )
    pred = predict_expression(
        adata,
        model,
        reference,
        patches=cache.patches,
        k=args.k,
        aggregation=args.aggregation,
        backend=args.backend,
        device=args.device,
    )
    pred.uns[_keys.UNS]["prediction"]["model"] = str(model_path)
    pred.uns[_keys.UNS]["prediction"]["reference"] = str(ref_path)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    pred.write_h5ad(args.out)
    print(f"predicted {pred.n_obs} spots x {pred.n_vars} genes -> {args.out}")
    if plot_genes:
        from mclstexp.io import read_thumbnail
        from mclstexp.pl import spatial_prediction

        slide_path = adata.uns[_keys.UNS].get(_keys.UNS_SLIDE_PATH)
        image, scale = read_thumbnail(slide_path, 1024) if slide_path else (None, 1.0)
        png = args.out.with_suffix(".png")
        spatial_prediction(pred, plot_genes, image=image, scale=scale, path=png)
        print(f"map of {len(plot_genes)} gene(s) -> {png}")
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0


def _checked_inputs(args: argparse.Namespace) -> tuple[Any, dict[str, Any], Any, Path, Path]:
    """The model, its metadata and its reference, once every argument and their pairing are
    checked: whatever can be refused is refused before a patch is cut or embedded."""
    from mclstexp.models.runtime import resolve_device
    from mclstexp.tl.reference import Reference
    from mclstexp.train import load_checkpoint

    if args.k < 1:
        raise ValueError(f"--k: must be >= 1, got {args.k}")
    if not 0.0 <= args.min_tissue <= 1.0:
        raise ValueError(f"--min-tissue: must be in [0, 1], got {args.min_tissue}")
    if args.her2st is not None and not args.section:
        raise ValueError("--her2st needs --section (e.g. --section C3)")
    resolve_device(args.device)
    model_path, ref_path = _resolve_model(args.model, args.reference)
    model, meta = load_checkpoint(model_path)
    reference = Reference.load(ref_path)
    reference.check_model(model, model_name=str(model_path), reference_name=str(ref_path))
    return model, meta, reference, model_path, ref_path


def _plot_genes(asked: list[str], panel: list[str]) -> list[str]:
    """The ``--plot-genes`` of the model's panel; a warning names the others (with the closest
    panel names), and with none left no map is drawn."""
    import warnings

    from mclstexp.pl import plottable_genes

    try:
        return plottable_genes(asked, panel, where="the model's gene panel")
    except ValueError as err:
        warnings.warn(f"--plot-genes: {err}; no map is drawn", UserWarning, stacklevel=2)
        return []


def _spots(args: argparse.Namespace, size: int, mpp: float | None) -> Any:
    """The spots to predict: a tissue grid (``--grid``), a her2st section or an ``.h5ad``."""
    if args.grid is not None:
        return _grid_adata(args.grid, size, args.min_tissue, mpp)
    if args.her2st is not None:
        from mclstexp.io import read_her2st

        return read_her2st(args.her2st, args.section)
    from mclstexp.io import read_h5ad

    return read_h5ad(args.h5ad, slide=args.slide)
