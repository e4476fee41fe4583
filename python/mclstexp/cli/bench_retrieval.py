"""``mclstexp bench retrieval``: the front of :mod:`mclstexp.workflow.bench_retrieval`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mclstexp.retrieval.backends import BACKENDS


def register(bench_subparsers: Any) -> None:
    """Add ``retrieval`` to the ``mclstexp bench`` kinds.

    Examples
    --------
    >>> import argparse
    >>> parser = argparse.ArgumentParser()
    >>> register(parser.add_subparsers())
    >>> parser.parse_args(["retrieval", "--q", "32", "100"]).q
    [32, 100]
    """
    from mclstexp.workflow import bench_retrieval

    p = bench_subparsers.add_parser(
        "retrieval",
        help="exact top-k cosine retrieval vs numpy, torch, faiss, hnswlib, usearch",
        description=bench_retrieval.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--n",
        type=int,
        nargs="+",
        default=[10_000, 30_000, 100_000],
        help="reference sizes (default: 10000 30000 100000)",
    )
    p.add_argument(
        "--q", type=int, nargs="+", default=[32, 1000], help="query counts (default: 32 1000)"
    )
    p.add_argument("--dim", type=int, default=256, help="embedding dimension (default: 256)")
    p.add_argument("--k", type=int, default=50, help="neighbours per query (default: 50)")
    p.add_argument("--threads", type=int, default=2, help="threads for every backend (default 2)")
    p.add_argument(
        "--backends",
        nargs="+",
        choices=BACKENDS,
        default=list(BACKENDS),
        help="backends to run (default: every installed one)",
    )
    p.add_argument(
        "--approx-max-n",
        type=int,
        default=30_000,
        help="skip building hnswlib/usearch graphs above this N (slow; default 30000)",
    )
    p.add_argument("--repeat", type=int, default=2, help="best of this many searches (default 2)")
    p.add_argument(
        "--memory",
        action="store_true",
        help="also measure RSS of a native search over the largest N in a subprocess",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out",
        type=Path,
        default=Path("runs") / "bench-retrieval",
        help="folder for results.json and the plot (default: runs/bench-retrieval)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``mclstexp bench retrieval``."""
    from mclstexp.workflow.bench_retrieval import format_memory, run_retrieval_bench

    for name in ("n", "q"):
        if any(v < 1 for v in getattr(args, name)):
            raise SystemExit(f"--{name}: values must be >= 1")
    if args.k > min(args.n):
        raise SystemExit(f"--k: must be <= the smallest --n ({min(args.n)})")
    result = run_retrieval_bench(
        args.n,
        args.q,
        dim=args.dim,
        k=args.k,
        threads=args.threads,
        backends=args.backends,
        approx_max_n=args.approx_max_n,
        repeat=args.repeat,
        seed=args.seed,
        memory=args.memory,
        out_dir=args.out,
    )
    print()
    print(result["table"])
    print(f"native SIMD level: {result['simd_level']}")
    if result["memory"] is not None:
        print(f"\n{format_memory(result['memory'])}")
    print(f"\nwrote {result['json']} and {result['plot']}")
    return 0
