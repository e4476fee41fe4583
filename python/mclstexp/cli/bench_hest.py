"""``mclstexp bench hest``: the front of :mod:`mclstexp.workflow.bench_hest`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any


def _k(text: str) -> int | str:
    return text if text == "auto" else int(text)


def register(bench_subparsers: Any) -> None:
    """Add ``hest`` to the ``mclstexp bench`` kinds.

    Examples
    --------
    >>> import argparse
    >>> parser = argparse.ArgumentParser()
    >>> register(parser.add_subparsers())
    >>> args = parser.parse_args(["hest", "--root", "b", "--encoders", "resnet50", "uni"])
    >>> args.encoders, args.methods
    (['resnet50', 'uni'], ['probe', 'mclstexp'])
    """
    from mclstexp.workflow import bench_hest

    p = bench_subparsers.add_parser(
        "hest",
        help="HEST-Benchmark: HEST's probe as published, our probe and mclSTExp, per encoder",
        description=bench_hest.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--root",
        type=Path,
        required=True,
        help="HEST-Benchmark folder, one folder per task (mclstexp.datasets.hest_bench)",
    )
    p.add_argument("--tasks", nargs="+", help="task names (default: the nine HEST tasks)")
    p.add_argument("--encoders", nargs="+", default=["resnet50"], help="backbones to compare")
    p.add_argument(
        "--methods",
        nargs="+",
        choices=bench_hest.METHODS,
        default=["probe", "mclstexp"],
        help="probe = HEST's probe (hest-probe) and ours; hest-probe = HEST's only",
    )
    p.add_argument("--preset", default="cpu", help="mclSTExp preset (its backbone is replaced)")
    p.add_argument("--weights", help="backbone weights file (as ModelConfig.weights)")
    p.add_argument("--seed", type=int, default=1, help="probe, initialisation, training (HEST: 1)")
    p.add_argument("--budget-epochs", type=int, help="override mclSTExp's epochs")
    p.add_argument("--k", type=_k, help="mclSTExp's retrieval K, or 'auto'")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=Path("runs/hest"))
    p.add_argument("--work", type=Path, help="patch cache, features, checkpoints (out/work)")
    p.set_defaults(func=_hest)


def _hest(args: argparse.Namespace) -> int:
    from mclstexp.workflow.bench_hest import run_hest_bench

    started = time.perf_counter()
    result = run_hest_bench(
        root=args.root,
        tasks=args.tasks,
        encoders=args.encoders,
        methods=args.methods,
        preset=args.preset,
        weights=args.weights,
        seed=args.seed,
        epochs=args.budget_epochs,
        k=args.k,
        device=args.device,
        out_dir=args.out,
        work_dir=args.work,
    )
    print()
    print(result["text"])
    print(f"\nwrote {args.out}/hest.json, hest.csv, hest.txt, hest.png")
    print(f"total wall time: {time.perf_counter() - started:.1f} s")
    return 0
