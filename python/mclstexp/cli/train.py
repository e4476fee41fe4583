"""``mclstexp train``: train mclSTExp on a dataset and write a run directory for prediction.

A thin front over the fold runner of ``mclstexp run`` (:func:`mclstexp.workflow.fold.train_fold`):
the same data loading, gene selection (from the training sections only), tiling and training.
The run directory then holds ``model.pt`` and ``reference.npz`` (what ``mclstexp predict --model
RUN_DIR`` reads), ``data.json`` (sections, held-out section, genes), ``checkpoint.pt``,
``log.jsonl``, ``config.json`` and the patch caches under ``patches/`` (reused on resume).

Data: ``--synthetic`` (default; the embedded synthetic dataset, ``--n-sections``/``--n-spots``
for a smaller draw), ``--her2st ROOT --sections ...`` or ``--h5ad FILES...`` (AnnData following
the package contract, with ``uns["mclstexp"]["slide_path"]``). ``--holdout SECTION`` leaves one
section out of training.

Multi-GPU: ``torchrun --nproc_per_node N -m mclstexp train ...`` (rank 0 cuts the patches first).
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
from pathlib import Path
from typing import Any

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
    src.add_argument("--her2st", metavar="ROOT", type=Path, help="her2st data folder")
    src.add_argument("--h5ad", metavar="FILE", type=Path, nargs="+", help="AnnData files")
    p.add_argument("--sections", nargs="+", metavar="ID", help="her2st sections (e.g. C2 C3)")
    p.add_argument("--n-sections", type=int, help="synthetic only: number of sections")
    p.add_argument("--n-spots", type=int, help="synthetic only: spots per section")
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
    p.add_argument("--genes", type=Path, help="gene panel: a text file, one gene per line")
    p.add_argument(
        "--n-genes", type=int, default=1000, help="--h5ad: the N most expressed genes (HEG)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _preset(
    args: argparse.Namespace, patch_size: int | None, patch_mpp: float | None = None
) -> Any:
    from mclstexp.models.config import load_preset

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
    if patch_size is not None:  # recorded in the checkpoint: `mclstexp predict` cuts alike
        overrides["train__patch_size"] = int(patch_size)
        overrides["train__patch_mpp"] = patch_mpp
    return load_preset(args.preset, **overrides)


def _dataset(args: argparse.Namespace, patch_size: int) -> Any:
    """The sections to train on, as the fold runner's :class:`~mclstexp.workflow.DatasetSpec`."""
    from mclstexp.workflow import DatasetSpec, load_dataset

    sizes = (("--n-sections", args.n_sections), ("--n-spots", args.n_spots))
    given = [flag for flag, value in sizes if value is not None]
    if given and (args.her2st is not None or args.h5ad):
        raise ValueError(f"{', '.join(given)}: apply to --synthetic only")
    if args.h5ad:
        from mclstexp.io import read_h5ad

        spec = DatasetSpec(
            name="h5ad",
            sections=[read_h5ad(f) for f in args.h5ad],
            gene_method="heg",
            n_genes=args.n_genes,
            patch_size=patch_size,
        )
    elif args.her2st is not None:
        if not args.sections:
            raise ValueError("--her2st needs --sections (e.g. --sections C2 C3 C4)")
        spec = load_dataset("her2st", root=args.her2st, sections=args.sections)
    else:
        spec = load_dataset(
            "synthetic",
            root=args.run_dir / "synthetic",
            n_sections=args.n_sections,
            n_spots=args.n_spots,
        )
    if args.genes is not None:
        if not args.genes.is_file():
            raise FileNotFoundError(errno.ENOENT, "--genes: file not found", str(args.genes))
        spec = dataclasses.replace(spec, gene_method="panel", panel=str(args.genes), n_genes=None)
    return spec


def _training_sections(spec: Any, holdout: str | None) -> list[str]:
    """Every section id except the held-out one (checked through the fold definitions)."""
    from mclstexp.train.folds import leave_one_section_out

    ids = spec.section_names
    if holdout is None:
        return ids
    (fold,) = leave_one_section_out(ids, holdout=[holdout])  # an unknown one: ValueError
    return list(fold.train)


def run(args: argparse.Namespace) -> int:
    """Run ``mclstexp train``."""
    from mclstexp.models.runtime import resolve_device
    from mclstexp.train import distributed
    from mclstexp.workflow.experiment import preset_geometry, tile_dataset
    from mclstexp.workflow.fold import train_fold

    resolve_device(args.device)  # an unknown device fails now, not after the tiling
    base = _preset(args, None)
    spec = _dataset(args, base.train.patch_size)
    size, mpp = preset_geometry(base, spec)  # a foundation encoder's, else the dataset's
    preset = _preset(args, size, mpp)
    train_ids = _training_sections(spec, args.holdout)
    train_spec = dataclasses.replace(
        spec, sections=[a for a in spec.sections if _keys.section_id(a) in set(train_ids)]
    )
    # under torchrun, rank 0 cuts the patches first; the others then reuse its caches
    info = distributed.init_from_env(args.device)
    if info.rank != 0:
        distributed.barrier()
    caches = tile_dataset(
        train_spec, args.run_dir / "patches", progress=not args.no_progress, size=size, mpp=mpp
    )
    if info.rank == 0:
        distributed.barrier()
    trained = train_fold(
        train_spec,
        caches,
        train_sections=train_ids,
        preset=preset,
        preset_name=Path(args.preset).stem,
        fold_dir=args.run_dir,
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
        resume=args.resume,
    )
    if info.is_main:
        data = {
            "sections": spec.section_names,
            "train": train_ids,
            "holdout": args.holdout,
            "genes": trained.genes,
        }
        (args.run_dir / "data.json").write_text(json.dumps(data, indent=1))
    last = trained.history[-1] if trained.history else {}
    print(
        f"trained {len(trained.history)} epochs on {sum(s.n_obs for s in trained.sections)} "
        f"spots ({len(trained.sections)} sections); final loss "
        f"{last.get('loss', float('nan')):.4f}; model: {args.run_dir / 'model.pt'}"
    )
    return 0
