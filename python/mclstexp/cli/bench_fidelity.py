"""``mclstexp bench fidelity``: the front of :mod:`mclstexp.workflow.bench_fidelity`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any


def register(bench_subparsers: Any) -> None:
    """Add ``bench fidelity``."""
    parser = bench_subparsers.add_parser(
        "fidelity",
        help="model presets x seeds vs reference rows, on two targets, with depth control",
        description=(
            "Leave-one-section-out over the given sections for every preset x seed; every "
            "record reports PCC (ACG/HEG/HVG) on the original's normalisation (legacy_gene) and "
            "on per-spot library-size-normalised log1p (default), partial PCC controlling for log "
            "library size, MSE/MAE, and the reference rows (training mean, colour ridge, library "
            "size: predicted depth and the measured-depth oracle). Mean ± sd over sections x "
            "seeds; training time and peak memory per run. Writes fidelity.json/.csv/.png."
        ),
    )
    parser.add_argument(
        "--dataset",
        default=None,
        choices=["her2st", "synthetic"],
        help="default: her2st when --root is given, else synthetic",
    )
    parser.add_argument("--root", type=Path, help="her2st data folder (../shared/data/her2st)")
    parser.add_argument("--sections", nargs="+", help="sections (her2st default: C2..C6)")
    parser.add_argument("--presets", nargs="+", default=["cpu_legacy", "cpu"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--budget-epochs", type=int, help="override every preset's epochs")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("runs/fidelity"))
    parser.set_defaults(func=_fidelity)


def _fidelity(args: argparse.Namespace) -> int:
    from mclstexp.workflow.bench_fidelity import run_fidelity_bench

    started = time.perf_counter()
    dataset = args.dataset or ("her2st" if args.root else "synthetic")
    result = run_fidelity_bench(
        dataset=dataset,
        root=args.root,
        sections=args.sections,
        presets=args.presets,
        seeds=args.seeds,
        epochs=args.budget_epochs,
        device=args.device,
        out_dir=args.out,
    )
    print()
    print(result["table"])
    print()
    print(result["speed"])
    print(f"\nwrote {args.out}/fidelity.json, fidelity.csv, fidelity.png, fidelity.txt")
    print(f"total wall time: {time.perf_counter() - started:.1f} s")
    return 0
