"""``mclstexp train``: train mclSTExp on a dataset spec and write a run directory.

Data: ``--synthetic`` (default; the embedded synthetic dataset), ``--her2st ROOT --sections ...``
or ``--h5ad FILES...`` (AnnData following the package contract, with ``uns["mclstexp"]
["slide_path"]``). ``--holdout SECTION`` leaves one section out (its id is recorded in
``run_dir/data.json`` for prediction). Patches are cut once into Zarr caches under
``run_dir/patches`` (reused on resume); expression is normalised per the preset.

Multi-GPU: ``torchrun --nproc_per_node N -m mclstexp train ...``.
"""

from __future__ import annotations

import argparse
import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np

from mclstexp import _keys


def register(subparsers: Any) -> None:
    """Add the ``train`` subcommand."""
    p = subparsers.add_parser(
        "train",
        help="train mclSTExp (GPU when present) and write a run directory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--synthetic", action="store_true", help="the embedded synthetic dataset")
    src.add_argument("--her2st", metavar="ROOT", type=Path, help="her2st repository root")
    src.add_argument("--h5ad", metavar="FILE", type=Path, nargs="+", help="AnnData files")
    p.add_argument("--sections", nargs="+", metavar="ID", help="her2st sections (e.g. C2 C3)")
    p.add_argument("--holdout", metavar="SECTION", help="section left out of training")
    p.add_argument("--preset", default="default", help="preset name or JSON file (default)")
    p.add_argument("--run-dir", type=Path, default=Path("runs/train"), help="output directory")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1")
    p.add_argument("--epochs", type=int, help="override the preset's epochs")
    p.add_argument("--batch-size", type=int, help="override the preset's batch size")
    p.add_argument("--backbone", help="override the timm backbone")
    p.add_argument("--weights", type=Path, help="local backbone weights (safetensors / torch)")
    p.add_argument("--frozen", action="store_true", help="frozen-encoder mode")
    p.add_argument("--num-workers", type=int, help="DataLoader workers")
    p.add_argument("--genes", type=Path, help="gene panel (.npy or one name per line)")
    p.add_argument("--n-genes", type=int, default=1000, help="top-mean genes if no --genes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _need(module: str, name: str) -> Any:
    from importlib import import_module

    try:
        return getattr(import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise SystemExit(
            f"mclstexp train needs {module}.{name}, which is not available in this build "
            f"({exc}); install a complete mclstexp"
        ) from exc


def _call_with_dir(fn: Any, folder: Path, **kw: Any) -> Any:
    params = inspect.signature(fn).parameters
    for name in ("root", "path", "out_dir", "directory", "cache_dir", "folder", "dest"):
        if name in params:
            kw[name] = folder
            break
    return fn(**kw)


def _load_adatas(args: argparse.Namespace) -> list[Any]:
    if args.her2st is not None:
        if not args.sections:
            raise SystemExit("--her2st needs --sections (e.g. --sections C2 C3 C4)")
        read = _need("mclstexp.io", "read_her2st")
        return [read(args.her2st, section=s) for s in args.sections]
    if args.h5ad:
        read = _need("mclstexp.io", "read_h5ad")
        return [read(f) for f in args.h5ad]
    synthetic = _need("mclstexp.datasets", "synthetic")
    out = _call_with_dir(synthetic, args.run_dir / "synthetic")
    return list(out)


def _section_id(adata: Any, i: int) -> str:
    uns = adata.uns.get(_keys.UNS, {})
    if uns.get(_keys.UNS_SECTION):
        return str(uns[_keys.UNS_SECTION])
    if _keys.SECTION in adata.obs and adata.n_obs:
        return str(adata.obs[_keys.SECTION].iloc[0])
    return f"section{i}"


def _read_genes(path: Path) -> list[str]:
    if not path.is_file():
        raise SystemExit(f"--genes file not found: {path}")
    if path.suffix == ".npy":
        return [str(g) for g in np.load(path, allow_pickle=False)]
    return [g.strip() for g in path.read_text().splitlines() if g.strip()]


def _top_genes(adatas: list[Any], n: int) -> list[str]:
    common = set(map(str, adatas[0].var_names))
    for a in adatas[1:]:
        common &= set(map(str, a.var_names))
    genes = sorted(common)
    if len(genes) <= n:
        return genes
    score = np.zeros(len(genes))
    for a in adatas:
        x = a[:, genes].X
        x = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
        lib = x.sum(1, keepdims=True)
        score += np.log1p(1e4 * x / np.maximum(lib, 1)).mean(0)
    return [genes[i] for i in np.argsort(-score, kind="stable")[:n]]


def run(args: argparse.Namespace) -> int:
    """Run ``mclstexp train``."""
    from mclstexp.models.config import load_preset
    from mclstexp.train.loop import train_model
    from mclstexp.train.sections import TrainingSection

    overrides: dict[str, Any] = {}
    for arg, key in (
        ("epochs", "train__epochs"),
        ("batch_size", "train__batch_size"),
        ("num_workers", "train__num_workers"),
        ("backbone", "model__backbone"),
    ):
        if getattr(args, arg) is not None:
            overrides[key] = getattr(args, arg)
    if args.weights is not None:
        overrides["model__weights"] = str(args.weights)
    if args.frozen:
        overrides["train__freeze_backbone"] = True
    mcfg, tcfg = load_preset(args.preset, **overrides)

    adatas = _load_adatas(args)
    ids = [_section_id(a, i) for i, a in enumerate(adatas)]
    if args.holdout is not None and args.holdout not in ids:
        raise SystemExit(f"--holdout {args.holdout!r} is not one of the sections {ids}")
    train_idx = [i for i, s in enumerate(ids) if s != args.holdout]
    if not train_idx:
        raise SystemExit("no training sections left after --holdout")
    genes = (
        _read_genes(args.genes)
        if args.genes
        else _top_genes([adatas[i] for i in train_idx], args.n_genes)
    )
    normalize = _need("mclstexp.pp", "normalize_expression")
    extract = _need("mclstexp.pp", "extract_patches")
    from mclstexp.train import distributed

    # under torchrun, rank 0 cuts the patches first; the others then reuse its caches
    info = distributed.init_from_env(args.device)
    if info.rank != 0:
        distributed.barrier()
    sections = []
    for i in train_idx:
        adata = adatas[i]
        store = args.run_dir / "patches" / f"{ids[i]}.zarr"
        store.parent.mkdir(parents=True, exist_ok=True)
        cache = extract(adata, store=store, size=tcfg.patch_size)
        spot_ids = [str(s) for s in cache.spot_ids]
        norm = normalize(adata[spot_ids], genes=genes, flavor=tcfg.expression_normalization)
        sections.append(TrainingSection(norm, cache.patches, name=ids[i]))
    if info.rank == 0:
        distributed.barrier()
    args.run_dir.mkdir(parents=True, exist_ok=True)
    (args.run_dir / "data.json").write_text(
        json.dumps(
            {
                "sections": ids,
                "train": [ids[i] for i in train_idx],
                "holdout": args.holdout,
                "genes": genes,
            },
            indent=1,
        )
    )
    result = train_model(
        sections,
        (mcfg, tcfg),
        run_dir=args.run_dir,
        device=args.device,
        seed=args.seed,
        resume=args.resume,
        progress=not args.no_progress,
    )
    last = result.history[-1] if result.history else {}
    print(
        f"trained {len(result.history)} epochs on {sum(s.n_obs for s in sections)} spots "
        f"({len(sections)} sections); final loss {last.get('loss', float('nan')):.4f}; "
        f"model: {args.run_dir / 'model.pt'}"
    )
    return 0
