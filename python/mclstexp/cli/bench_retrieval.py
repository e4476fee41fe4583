"""``mclstexp bench retrieval``: top-k cosine search, every backend side by side.

For every reference size ``N`` and query count ``Q`` each available backend builds an index over
the same random ``float32`` data and searches it; the table reports seconds, GFLOP/s
(``2 * N * Q * dim`` multiply-adds per search, the work of the exact method), queries/s, the
ratio of throughput to faiss ``IndexFlatIP`` in the same run, and recall@k against the exact
native result. A PNG plots queries/s against ``N`` for every backend, one panel per ``Q``.
``--memory`` also measures, in a fresh process, the resident memory of a native search over the
largest ``N`` against the size of the reference matrix.

Timings on a shared machine are noisy: each figure is the best of ``--repeat`` runs, and only
ratios within one run are meaningful.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np

from mclstexp.retrieval.backends import BACKENDS

APPROXIMATE = ("hnswlib", "usearch")


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
    p = bench_subparsers.add_parser(
        "retrieval",
        help="exact top-k cosine retrieval vs numpy, torch, faiss, hnswlib, usearch",
        description=__doc__,
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


def _installed(backend: str) -> bool:
    module = {"native": "mclstexp", "numpy": "numpy"}.get(backend, backend)
    return find_spec(module) is not None


def blas_info() -> str:
    """Which BLAS numpy runs (library, kernel architecture, threads), via threadpoolctl."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover
        return "unknown (threadpoolctl missing)"
    parts = [
        f"{i.get('internal_api')} {i.get('version')} kernel={i.get('architecture')} "
        f"threads={i.get('num_threads')}"
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    ]
    core = os.environ.get("OPENBLAS_CORETYPE")
    return "; ".join(parts) + (f" (OPENBLAS_CORETYPE={core})" if core else "")


def _set_threads(threads: int) -> Any:
    """Pin every library's thread count; returns a threadpoolctl context to keep alive."""
    os.environ.setdefault("MCLSTEXP_NUM_THREADS", str(threads))
    limiter = None
    try:
        from threadpoolctl import threadpool_limits

        limiter = threadpool_limits(limits=threads)
    except ImportError:  # pragma: no cover
        pass
    if find_spec("faiss") is not None:
        import faiss

        faiss.omp_set_num_threads(threads)
    return limiter


def _recall(found: np.ndarray, exact: np.ndarray) -> float:
    hits = sum(
        len(np.intersect1d(a, b, assume_unique=True)) for a, b in zip(found, exact, strict=True)
    )
    return hits / exact.size


def run_suite(
    ns: list[int],
    qs: list[int],
    *,
    dim: int = 256,
    k: int = 50,
    threads: int = 2,
    backends: list[str] | tuple[str, ...] = BACKENDS,
    approx_max_n: int = 30_000,
    repeat: int = 2,
    seed: int = 0,
    log: Any = print,
) -> list[dict[str, Any]]:
    """Run the benchmark grid and return one record per (backend, N, Q).

    Examples
    --------
    >>> rows = run_suite([500], [8], dim=16, k=5, backends=["native", "numpy"], log=None)
    >>> sorted(r["backend"] for r in rows)
    ['native', 'numpy']
    """
    from mclstexp.retrieval import make_index

    _limiter = _set_threads(threads)  # kept alive for the whole run
    rng = np.random.default_rng(seed)
    records: list[dict[str, Any]] = []
    backends = [b for b in backends if _installed(b)]
    if "native" not in backends:
        backends = ["native", *backends]
    for n in ns:
        reference = rng.standard_normal((n, dim), dtype=np.float32)
        queries_all = rng.standard_normal((max(qs), dim), dtype=np.float32)
        exact: dict[int, np.ndarray] = {}
        for backend in backends:
            if backend in APPROXIMATE and n > approx_max_n:
                if log:
                    log(f"  skip {backend} at N={n} (> --approx-max-n {approx_max_n})")
                continue
            t0 = time.perf_counter()
            index = make_index(reference, backend=backend, n_threads=threads)
            build = time.perf_counter() - t0
            for q in qs:
                queries = queries_all[:q]
                best = np.inf
                for _ in range(max(1, repeat)):
                    t0 = time.perf_counter()
                    _, found = index.search(queries, k)
                    best = min(best, time.perf_counter() - t0)
                if backend == "native":
                    exact[q] = found
                record = {
                    "backend": backend,
                    "N": n,
                    "Q": q,
                    "dim": dim,
                    "k": k,
                    "threads": threads,
                    "seconds": best,
                    "build_seconds": build,
                    "gflops": 2.0 * n * q * dim / best / 1e9,
                    "qps": q / best,
                    "recall": _recall(found, exact[q]),
                }
                records.append(record)
                if log:
                    log(
                        f"  {backend:8s} N={n:>9,d} Q={q:>7,d} {best:8.3f} s "
                        f"{record['gflops']:7.1f} GFLOP/s recall={record['recall']:.3f}"
                    )
            del index
    for r in records:
        faiss = [
            x for x in records if x["backend"] == "faiss" and x["N"] == r["N"] and x["Q"] == r["Q"]
        ]
        r["vs_faiss"] = faiss[0]["seconds"] / r["seconds"] if faiss else None
    return records


def format_table(records: list[dict[str, Any]]) -> str:
    """The results as a fixed-width text table."""
    head = (
        f"{'backend':8s} {'N':>10s} {'Q':>7s} {'seconds':>9s} {'GFLOP/s':>8s} "
        f"{'queries/s':>11s} {'x faiss':>8s} {'recall@k':>9s}"
    )
    lines = [head, "-" * len(head)]
    for r in sorted(records, key=lambda r: (r["N"], r["Q"], -r["qps"])):
        ratio = "-" if r["vs_faiss"] is None else f"{r['vs_faiss']:.2f}"
        lines.append(
            f"{r['backend']:8s} {r['N']:>10,d} {r['Q']:>7,d} {r['seconds']:>9.3f} "
            f"{r['gflops']:>8.1f} {r['qps']:>11,.0f} {ratio:>8s} {r['recall']:>9.3f}"
        )
    return "\n".join(lines)


def plot(records: list[dict[str, Any]], path: Path) -> Path:
    """Queries/s against N for every backend (log-log), one panel per Q; writes a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    qs = sorted({r["Q"] for r in records})
    fig, axes = plt.subplots(1, len(qs), figsize=(5.5 * len(qs), 4.2), squeeze=False)
    for ax, q in zip(axes[0], qs, strict=True):
        for backend in BACKENDS:
            pts = sorted(
                (r["N"], r["qps"]) for r in records if r["backend"] == backend and r["Q"] == q
            )
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(
                    xs,
                    ys,
                    marker="o",
                    label=backend,
                    linestyle="--" if backend in APPROXIMATE else "-",
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("reference size N")
        ax.set_ylabel("queries / s")
        r0 = next(r for r in records if r["Q"] == q)
        ax.set_title(f"Q={q}, dim={r0['dim']}, k={r0['k']}, {r0['threads']} threads")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Top-k cosine retrieval throughput (dashed: approximate)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def memory_probe(n: int, dim: int, q: int, k: int, threads: int, seed: int = 0) -> dict[str, Any]:
    """Resident memory of one native search over ``n`` references (run it in a fresh process).

    The index is filled in chunks so the raw reference matrix is never held whole; a sampling
    thread records the peak RSS while the search runs (the GIL is released).
    """
    import threading

    from mclstexp.retrieval import ExactIndex

    rng = np.random.default_rng(seed)
    chunk = 65_536
    index = ExactIndex(
        rng.standard_normal((min(chunk, n), dim), dtype=np.float32), n_threads=threads
    )
    while len(index) < n:
        index.add(rng.standard_normal((min(chunk, n - len(index)), dim), dtype=np.float32))
    queries = rng.standard_normal((q, dim), dtype=np.float32)
    before = _rss()
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    t0 = time.perf_counter()
    index.search(queries, k, n_threads=threads)
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    ref_bytes = n * dim * 4
    return {
        "N": n,
        "Q": q,
        "dim": dim,
        "reference_bytes": ref_bytes,
        "index_bytes": index.nbytes,
        "rss_before_search": before,
        "rss_peak_search": peak,
        "extra_during_search": peak - before,
        "peak_over_reference": peak / ref_bytes,
        "seconds": seconds,
    }


def _memory_in_subprocess(n: int, dim: int, q: int, k: int, threads: int) -> dict[str, Any]:
    code = (
        "import json, sys; from mclstexp.cli.bench_retrieval import memory_probe; "
        f"print(json.dumps(memory_probe({n}, {dim}, {q}, {k}, {threads})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def run(args: argparse.Namespace) -> int:
    """Entry point of ``mclstexp bench retrieval``."""
    for name in ("n", "q"):
        if any(v < 1 for v in getattr(args, name)):
            raise SystemExit(f"--{name}: values must be >= 1")
    if args.k > min(args.n):
        raise SystemExit(f"--k: must be <= the smallest --n ({min(args.n)})")
    from mclstexp import _native

    print(f"mclstexp bench retrieval: dim={args.dim} k={args.k} threads={args.threads}")
    print(f"numpy BLAS: {blas_info()}")
    from mclstexp.retrieval import ExactIndex

    print(
        f"native kernel: {ExactIndex(np.ones((1, args.dim))).kernel} "
        f"(pool default {_native.default_num_threads()} threads)"
    )
    records = run_suite(
        args.n,
        args.q,
        dim=args.dim,
        k=args.k,
        threads=args.threads,
        backends=args.backends,
        approx_max_n=args.approx_max_n,
        repeat=args.repeat,
        seed=args.seed,
    )
    print()
    print(format_table(records))
    out: dict[str, Any] = {"records": records, "blas": blas_info()}
    if args.memory:
        mem = _memory_in_subprocess(max(args.n), args.dim, min(args.q), args.k, args.threads)
        out["memory"] = mem
        gib = 1 << 30
        print(
            f"\nmemory (native, N={mem['N']:,}, Q={mem['Q']}): reference "
            f"{mem['reference_bytes'] / gib:.3f} GiB, index {mem['index_bytes'] / gib:.3f} GiB, "
            f"RSS before search {mem['rss_before_search'] / gib:.3f} GiB, peak during search "
            f"{mem['rss_peak_search'] / gib:.3f} GiB (x{mem['peak_over_reference']:.3f} of the "
            f"reference; +{mem['extra_during_search'] / 2**20:.1f} MiB for the search)"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(out, indent=2))
    png = plot(records, args.out / "retrieval_throughput.png")
    print(f"\nwrote {args.out / 'results.json'} and {png}")
    return 0
