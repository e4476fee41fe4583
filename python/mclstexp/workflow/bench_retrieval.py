"""The retrieval benchmark: top-k cosine search, every backend side by side.

For every reference size ``N`` and query count ``Q`` each available backend builds an index over
the same random ``float32`` data and searches it; the table reports seconds, GFLOP/s
(``2 * N * Q * dim`` multiply-adds per search, the work of the exact method), queries/s, the
ratio of throughput to faiss ``IndexFlatIP`` in the same run, and recall@k against the exact
native result. A PNG plots queries/s against ``N`` for every backend, one panel per ``Q``.
With ``memory=True`` a fresh process also measures the resident memory of a native search over
the largest ``N`` against the size of the reference matrix.

Timings on a shared machine are noisy: each figure is the best of ``repeat`` runs, and only
ratios within one run are meaningful.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np

from mclstexp.retrieval.backends import BACKENDS

__all__ = [
    "APPROXIMATE",
    "blas_info",
    "format_memory",
    "format_table",
    "memory_probe",
    "run_retrieval_bench",
    "run_suite",
]

#: Backends whose search is approximate (graph indexes): dashed in the plot.
APPROXIMATE = ("hnswlib", "usearch")


def _installed(backend: str) -> bool:
    module = {"native": "mclstexp", "numpy": "numpy"}.get(backend, backend)
    return find_spec(module) is not None


def blas_info() -> str:
    """Which BLAS numpy runs (library, kernel architecture, threads), via threadpoolctl.

    Examples
    --------
    >>> isinstance(blas_info(), str)
    True
    """
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
    """The results as a fixed-width text table.

    Examples
    --------
    >>> rec = {"backend": "native", "N": 1000, "Q": 8, "seconds": 0.5, "gflops": 1.0,
    ...        "qps": 16.0, "vs_faiss": None, "recall": 1.0}
    >>> print(format_table([rec]).splitlines()[0])
    backend           N       Q   seconds  GFLOP/s   queries/s  x faiss  recall@k
    """
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


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def memory_probe(n: int, dim: int, q: int, k: int, threads: int, seed: int = 0) -> dict[str, Any]:
    """Resident memory of one native search over ``n`` references (run it in a fresh process).

    The index is filled in chunks so the raw reference matrix is never held whole; a sampling
    thread records the peak RSS while the search runs (the GIL is released).

    Examples
    --------
    >>> memory_probe(2000, 16, 4, 5, 1)["reference_bytes"]
    128000
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
        "import json, sys; from mclstexp.workflow.bench_retrieval import memory_probe; "
        f"print(json.dumps(memory_probe({n}, {dim}, {q}, {k}, {threads})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def format_memory(mem: dict[str, Any]) -> str:
    """One line on a :func:`memory_probe` result, in GiB.

    Examples
    --------
    >>> mem = {"N": 1 << 20, "Q": 32, "reference_bytes": 1 << 30, "index_bytes": 1 << 30,
    ...        "rss_before_search": 1 << 31, "rss_peak_search": 1 << 31,
    ...        "peak_over_reference": 2.0, "extra_during_search": 0}
    >>> print(format_memory(mem)[:60])
    memory (native, N=1,048,576, Q=32): reference 1.000 GiB, ind
    """
    gib = 1 << 30
    return (
        f"memory (native, N={mem['N']:,}, Q={mem['Q']}): reference "
        f"{mem['reference_bytes'] / gib:.3f} GiB, index {mem['index_bytes'] / gib:.3f} GiB, "
        f"RSS before search {mem['rss_before_search'] / gib:.3f} GiB, peak during search "
        f"{mem['rss_peak_search'] / gib:.3f} GiB (x{mem['peak_over_reference']:.3f} of the "
        f"reference; +{mem['extra_during_search'] / 2**20:.1f} MiB for the search)"
    )


def run_retrieval_bench(
    ns: Sequence[int],
    qs: Sequence[int],
    *,
    dim: int = 256,
    k: int = 50,
    threads: int = 2,
    backends: Sequence[str] = BACKENDS,
    approx_max_n: int = 30_000,
    repeat: int = 2,
    seed: int = 0,
    memory: bool = False,
    out_dir: str | Path = "runs/bench-retrieval",
    log: Any = print,
) -> dict[str, Any]:
    """Run the benchmark and write ``results.json`` and ``retrieval_throughput.png``.

    Parameters
    ----------
    ns, qs
        Reference sizes and query counts (each >= 1; ``k`` <= the smallest ``N``).
    dim, k, threads, backends, approx_max_n, repeat, seed
        Embedding size, neighbours per query, threads of every backend, backends to run (the
        uninstalled ones are skipped; native always runs, it is the exact reference), the largest
        ``N`` for which graph indexes are built, best-of count (>= 1), data seed.
    memory
        Also measure the RSS of a native search over the largest ``N`` in a fresh process.
    out_dir
        Folder for the results.
    log
        Progress lines (``print`` by default; None for silence).

    Returns
    -------
    dict
        ``records`` (one per backend x N x Q), ``blas``, ``simd_level`` (the instruction set of
        the native kernels, also in the JSON), ``table`` (text), ``memory`` (or None), ``json``
        and ``plot`` (the paths written).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     res = run_retrieval_bench([300], [8], dim=16, k=5, backends=["native", "numpy"],
    ...                               repeat=1, out_dir=tmp, log=None)
    ...     res["plot"].is_file()
    True
    """
    if any(v < 1 for v in (*ns, *qs)):
        raise ValueError(f"ns and qs: values must be >= 1, got {list(ns)} and {list(qs)}")
    if k > min(ns):
        raise ValueError(f"k: must be <= the smallest N ({min(ns)}), got {k}")
    if repeat < 1:
        raise ValueError(f"repeat: must be >= 1, got {repeat}")
    from mclstexp import _native
    from mclstexp.pl import retrieval_throughput
    from mclstexp.retrieval import ExactIndex

    if log:
        log(f"mclstexp bench retrieval: dim={dim} k={k} threads={threads}")
        log(f"numpy BLAS: {blas_info()}")
        log(
            f"native kernel: {ExactIndex(np.ones((1, dim))).kernel} "
            f"(SIMD level {_native.simd_level()}, "
            f"pool default {_native.default_num_threads()} threads)"
        )
    records = run_suite(
        list(ns),
        list(qs),
        dim=dim,
        k=k,
        threads=threads,
        backends=list(backends),
        approx_max_n=approx_max_n,
        repeat=repeat,
        seed=seed,
        log=log,
    )
    blas = blas_info()  # after the run: the thread limits it ran under
    mem = _memory_in_subprocess(max(ns), dim, min(qs), k, threads) if memory else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "records": records,
        "blas": blas,
        "simd_level": _native.simd_level(),
    }
    if mem is not None:
        payload["memory"] = mem
    (out / "results.json").write_text(json.dumps(payload, indent=2))
    png = out / "retrieval_throughput.png"
    retrieval_throughput(records, approximate=APPROXIMATE, path=png)
    return {
        "records": records,
        "blas": blas,
        "table": format_table(records),
        "simd_level": payload["simd_level"],
        "memory": mem,
        "json": out / "results.json",
        "plot": png,
    }
