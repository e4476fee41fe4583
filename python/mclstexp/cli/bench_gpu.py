"""``mclstexp bench gpu``: the front of :mod:`mclstexp.workflow.bench_gpu`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(bench_subparsers: Any) -> None:
    """Add ``bench gpu``."""
    parser = bench_subparsers.add_parser(
        "gpu",
        help="the one prepared GPU check: speed, parity, loader, retrieval, DDP, a real run",
        description=(
            "Training throughput of the paper and default presets at fp32/bf16/fp16 (+ "
            "torch.compile), device-vs-CPU parity of augmentation and of one training step, the "
            "loader's throughput against training, embedding and exact top-k on the device, NCCL "
            "gather with one rank, and one fold of a real run, under a wall-clock budget. Writes "
            "gpu.json and gpu.txt as each step ends. --device cpu --smoke checks the script on a "
            "CPU in under a minute. Prepare a machine without network with "
            "benches/gpu/prepare.sh."
        ),
    )
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu with --smoke")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the script")
    parser.add_argument("--budget-s", type=float, default=420.0, help="wall-clock budget (420)")
    parser.add_argument("--epochs", type=int, help="epochs of the end-to-end run (preset's)")
    parser.add_argument("--out", type=Path, default=Path("runs/gpu"), help="output folder")
    parser.set_defaults(func=_gpu)


def _gpu(args: argparse.Namespace) -> int:
    from mclstexp.workflow.bench_gpu import run_gpu_bench

    results = run_gpu_bench(
        device=args.device,
        out_dir=args.out,
        budget_s=args.budget_s,
        smoke=args.smoke,
        epochs=args.epochs,
    )
    failed = [name for name, entry in results.items() if "error" in entry]
    print(f"\nwrote {args.out}/gpu.json and gpu.txt" + (f"; FAILED: {failed}" if failed else ""))
    return 1 if failed else 0
