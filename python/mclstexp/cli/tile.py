"""The ``mclstexp-tile`` command: cut patches from whole-slide images into a Zarr patch cache."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mclstexp
from mclstexp.cli.main import add_debug_flag, run_handled


def build_parser() -> argparse.ArgumentParser:
    """Build the parser of ``mclstexp-tile``.

    Examples
    --------
    >>> build_parser().prog
    'mclstexp-tile'
    """
    parser = argparse.ArgumentParser(
        prog="mclstexp-tile",
        description="Cut patches at spot centres or on a tissue grid into a Zarr patch cache.",
    )
    parser.add_argument("--version", action="version", version=f"mclstexp {mclstexp.__version__}")
    _add_arguments(parser)
    add_debug_flag(parser)
    return parser


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("slides", nargs="+", metavar="SLIDE", help="slide files (SVS, TIFF, JPEG…)")
    parser.add_argument("--out", required=True, metavar="STORE", help="Zarr store to write")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--spots",
        nargs="+",
        metavar="FILE",
        help="spot files, one per slide (same order): CSV/TSV with id,x,y columns, an .h5ad "
        "(obsm['spatial']), or a her2st *_selection.tsv",
    )
    where.add_argument("--grid", action="store_true", help="tile the tissue on a regular grid")
    parser.add_argument("--patch-size", type=int, default=224, help="patch side in px (224)")
    parser.add_argument("--mpp", type=float, default=None, help="target microns per pixel")
    parser.add_argument("--level", type=int, default=0, help="level read without --mpp (0)")
    parser.add_argument("--slide-mpp", type=float, default=None, help="mpp of files without one")
    parser.add_argument("--min-tissue", type=float, default=0.5, help="grid: tissue fraction")
    parser.add_argument("--stain-normalize", choices=["macenko", "reinhard"], default=None)
    parser.add_argument("--stain-target", metavar="IMAGE", default=None, help="target H&E image")
    parser.add_argument("--threads", type=int, default=None, help="threads per slide")
    parser.add_argument(
        "--dask", metavar="local|ADDRESS", default=None, help="one task per slide on dask"
    )
    parser.add_argument("--dask-workers", type=int, default=2, help="workers of --dask local")
    parser.add_argument("--chunk-patches", type=int, default=32, help="patches per Zarr chunk")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a mismatching cache, or a group the tiler did not create",
    )
    parser.add_argument("--backend", choices=["auto", "native", "openslide"], default="auto")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _fit_stain(method: str | None, target: str | None) -> Any:
    if method is None:
        return None
    if target is None:
        raise ValueError("--stain-normalize needs --stain-target IMAGE")
    from mclstexp.pp.stain import StainNormalizer  # type: ignore[import-not-found,unused-ignore]

    return StainNormalizer(method=method).fit(target)


def tile_job(job: dict[str, Any]) -> dict[str, Any]:
    """One slide: spots or grid -> cache group. Runs in-process or as a dask task (also the
    first half of an ``mclstexp embed`` task)."""
    from mclstexp.io import open_slide, read_spots
    from mclstexp.pp import grid_centers, tile_slide

    t0 = time.perf_counter()
    slide = job["slide"]
    if job["spots"] is not None:
        xy, ids = read_spots(job["spots"])
    else:
        s = open_slide(slide, backend=job["backend"], mpp=job["slide_mpp"])
        xy = grid_centers(
            s, size=job["size"], mpp=job["mpp"], level=job["level"], min_tissue=job["min_tissue"]
        )
        ids = [f"{int(x)}x{int(y)}" for x, y in xy]
    cache = tile_slide(
        slide,
        xy,
        ids,
        store=job["out"],
        key=job["key"],
        size=job["size"],
        mpp=job["mpp"],
        level=job["level"],
        slide_mpp=job["slide_mpp"],
        stain_normalizer=job["stain"],
        n_threads=job["threads"],
        chunk_patches=job["chunk"],
        overwrite=job["overwrite"],
        backend=job["backend"],
        progress=job["progress"],
    )
    return {
        "slide": str(slide),
        "key": cache.key,
        "patches": len(cache),
        "out_of_bounds": int((~cache.in_bounds).sum()),
        "seconds": time.perf_counter() - t0,
    }


def run(args: argparse.Namespace) -> int:
    """Execute ``mclstexp-tile`` for parsed ``args``; returns the exit status."""
    slides = [Path(s) for s in args.slides]
    for s in slides:
        if not s.exists():
            raise FileNotFoundError(2, "slide not found", str(s))
    spots: list[str | None] = [None] * len(slides)
    if args.spots is not None:
        if len(args.spots) != len(slides):
            raise ValueError(
                f"--spots: give one spot file per slide ({len(slides)} slides, "
                f"{len(args.spots)} spot files)"
            )
        spots = list(args.spots)
    keys = [s.stem for s in slides]
    if len(set(keys)) != len(keys):
        raise ValueError("slides: file names (without suffix) must be unique; they name groups")
    stain = _fit_stain(args.stain_normalize, args.stain_target)
    jobs = [
        {
            "slide": str(s),
            "spots": sp,
            "out": str(args.out),
            "key": k,
            "size": args.patch_size,
            "mpp": args.mpp,
            "level": args.level,
            "slide_mpp": args.slide_mpp,
            "min_tissue": args.min_tissue,
            "stain": stain,
            "threads": args.threads,
            "chunk": args.chunk_patches,
            "overwrite": args.overwrite,
            "backend": args.backend,
            "progress": not args.quiet and args.dask is None,
        }
        for s, sp, k in zip(slides, spots, keys, strict=True)
    ]
    t0 = time.perf_counter()
    if args.dask is None:
        results = [tile_job(j) for j in jobs]
    else:
        results = run_dask(
            tile_job,
            jobs,
            address=args.dask,
            workers=args.dask_workers,
            quiet=args.quiet,
            store=args.out,
        )
    seconds = time.perf_counter() - t0
    n = sum(r["patches"] for r in results)
    oob = sum(r["out_of_bounds"] for r in results)
    print(
        f"mclstexp-tile: slides: {len(results)}, patches: {n}, out of bounds: {oob}, "
        f"seconds: {seconds:.2f}, patches/s: {n / seconds if seconds > 0 else 0.0:.1f} "
        f"-> {args.out}"
    )
    return 0


def run_dask(
    fn: Any,
    jobs: list[dict[str, Any]],
    *,
    address: str,
    workers: int,
    quiet: bool,
    store: str | Path | None = None,
) -> list[dict[str, Any]]:
    """``fn(job)`` for every job, one dask task each (``address="local"``: a local cluster of
    ``workers`` processes); ``store`` (the Zarr store the tasks write groups into) is created
    first so they do not race on it. Results in completion order."""
    if address == "local" and workers < 1:  # a cluster without workers waits forever
        raise ValueError(f"--dask-workers: must be >= 1, got {workers}")
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("--dask needs dask.distributed: pip install 'mclstexp[dask]'") from err
    from mclstexp._progress import progress_bar

    cluster = None
    if address == "local":
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
        )
        client = Client(cluster)
    else:
        client = Client(address)
    try:
        if store is not None:
            import zarr

            zarr.open_group(str(store), mode="a")
        futures = client.map(fn, jobs, pure=False)
        results = []
        for fut in progress_bar(as_completed(futures), total=len(futures), disable=quiet):
            results.append(fut.result())
        return results
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def register(subparsers: Any) -> None:
    """Register ``mclstexp tile`` (the same options as ``mclstexp-tile``)."""
    parser = subparsers.add_parser(
        "tile", help="cut patches at spots or on a tissue grid into a Zarr patch cache"
    )
    _add_arguments(parser)
    parser.set_defaults(func=run)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mclstexp-tile`` and return the exit status.

    Examples
    --------
    >>> main(["C2.jpg", "--spots", "C2_selection.tsv", "--out", "p.zarr"])  # doctest: +SKIP
    """
    return run_handled("mclstexp-tile", run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
