"""``mclstexp run``: the main job (tile -> train -> reference -> predict -> evaluate)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``run`` subcommand."""
    parser = subparsers.add_parser(
        "run",
        help="the main job: tile -> train -> predict -> evaluate (default: synthetic data)",
        description=(
            "Tile every section once, then leave-one-section-out (or --holdout) training, "
            "retrieval prediction and evaluation against reference baselines (training mean, "
            "colour-feature ridge, library size). With no arguments it runs on the embedded "
            "synthetic dataset and finishes in minutes on a laptop CPU."
        ),
    )
    parser.add_argument(
        "dataset",
        nargs="?",
        default="synthetic",
        choices=["synthetic", "her2st"],
        help="dataset to run on (default: synthetic)",
    )
    parser.add_argument("--root", type=Path, help="her2st data folder (e.g. ../shared/data/her2st)")
    parser.add_argument("--sections", nargs="+", help="section ids to use (her2st: C2..C6)")
    parser.add_argument("--n-sections", type=int, help="synthetic only: number of sections")
    parser.add_argument("--n-spots", type=int, help="synthetic only: spots per section")
    parser.add_argument(
        "--data-seed",
        type=int,
        help="synthetic only: generator seed (default 0); another seed is an independent draw "
        "of slides and counts, e.g. to choose settings without touching the default data",
    )
    parser.add_argument("--holdout", nargs="+", help="held-out section(s), one fold each")
    parser.add_argument(
        "--folds",
        choices=["leave-one-section-out"],
        default="leave-one-section-out",
        help="fold scheme when --holdout is not given",
    )
    parser.add_argument(
        "--preset", nargs="+", default=["cpu"], help="model preset(s) (default: cpu)"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds")
    parser.add_argument("--epochs", type=int, help="override the preset's number of epochs")
    parser.add_argument(
        "--k",
        type=_k_value,
        default="auto",
        help="neighbours per query: a number (200 is the original's on HER2+) or 'auto' "
        "(default: chosen per fold on the training sections only, leaving each out in turn)",
    )
    parser.add_argument(
        "--aggregation",
        choices=["mean", "similarity", "inverse_l1", "inverse_l2"],
        help="how neighbours are weighted (default: inverse_l1, the original's)",
    )
    parser.add_argument(
        "--patch-size",
        type=int,
        help="patch side in px for every preset (default: a foundation encoder's own, 224, else "
        "the dataset's)",
    )
    parser.add_argument(
        "--mpp",
        type=float,
        help="microns per pixel patches are cut at (default: a foundation encoder's own, 0.5, "
        "else the slide's resolution)",
    )
    parser.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, ...")
    parser.add_argument("--threads", type=int, help="native threads (default: all CPUs)")
    parser.add_argument("--out", type=Path, help="run directory (default: runs/<dataset>)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.set_defaults(func=_run)


def _k_value(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}")
    return value


def _run(args: argparse.Namespace) -> int:
    from mclstexp._validate import check_n_threads
    from mclstexp.models.runtime import resolve_device
    from mclstexp.workflow import load_dataset, run_experiment

    started = time.perf_counter()
    given = [
        flag
        for flag, value in (
            ("--n-sections", args.n_sections),
            ("--n-spots", args.n_spots),
            ("--data-seed", args.data_seed),
        )
        if value is not None
    ]
    if args.dataset != "synthetic" and given:
        raise ValueError(f"{', '.join(given)}: apply to the synthetic dataset only")
    resolve_device(args.device)  # an unknown device fails now, not after the tiling
    check_n_threads(args.threads)
    dataset = load_dataset(
        args.dataset,
        root=args.root,
        sections=args.sections,
        seed=args.data_seed or 0,
        n_sections=args.n_sections,
        n_spots=args.n_spots,
    )
    out = args.out or Path("runs") / args.dataset
    print(
        f"mclstexp run: {dataset.name}, {len(dataset.sections)} sections "
        f"({sum(a.n_obs for a in dataset.sections)} spots), presets {args.preset}, "
        f"seeds {args.seeds} -> {out}"
    )
    result = run_experiment(
        dataset,
        out_dir=out,
        presets=args.preset,
        seeds=args.seeds,
        holdout=args.holdout,
        device=args.device,
        epochs=args.epochs,
        k=args.k,
        aggregation=args.aggregation,
        n_threads=args.threads,
        plots=not args.no_plots,
        patch_size=args.patch_size,
        patch_mpp=args.mpp,
    )
    print()
    print(result.table)
    print()
    for name, path in sorted(result.files.items()):
        print(f"{name:>17}: {path}")
    print(f"total wall time: {time.perf_counter() - started:.1f} s")
    return 0
