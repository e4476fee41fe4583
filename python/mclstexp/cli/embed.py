"""``mclstexp embed``: frozen-encoder features of slides or patch caches, stored beside the patches.

The engine is :mod:`mclstexp.workflow.embed`; this front parses, builds one job per input
(a slide is tiled first, at the encoder's geometry, like ``mclstexp-tile``), runs the jobs in
this process or one per dask task (``--dask``) and prints what was done.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``embed`` subcommand.

    Examples
    --------
    >>> parser = argparse.ArgumentParser(prog="mclstexp")
    >>> register(parser.add_subparsers())
    >>> parser.parse_args(["embed", "p.zarr", "--encoder", "uni"]).encoder
    'uni'
    """
    p = subparsers.add_parser(
        "embed",
        help="compute a frozen encoder's features of slides or patch caches once (GPU node)",
        description=(
            "Features of every patch by a frozen encoder (default: the fm preset's, H-optimus-0), "
            "in batches, written beside the patches in the Zarr patch cache, where `mclstexp "
            "run`/`train` with the same preset, encoder and device kind find them. A killed run "
            "resumes where it stopped. Inputs are patch-cache stores, or slides (with --spots or "
            "--grid and --out), which are tiled first at the encoder's geometry."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="patch-cache stores or slides")
    p.add_argument("--encoder", help="registry name, hf-hub:ORG/NAME or timm name (preset's)")
    p.add_argument("--preset", default="fm", help="preset whose encoder settings apply (fm)")
    p.add_argument("--weights", help="'pretrained' (the preset's) or a local weights file")
    p.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, ...")
    p.add_argument("--batch-size", type=int, default=128, help="patches per forward pass (128)")
    p.add_argument("--key", nargs="+", help="only these slide groups of the stores")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--spots", nargs="+", metavar="FILE", help="slides: one spot file each")
    where.add_argument("--grid", action="store_true", help="slides: tile the tissue on a grid")
    p.add_argument("--out", metavar="STORE", help="slides: the patch-cache store to write")
    p.add_argument("--patch-size", type=int, help="slides: px (default: the encoder's, or 224)")
    p.add_argument("--mpp", type=float, help="slides: um/px (default: the encoder's, or native)")
    p.add_argument("--slide-mpp", type=float, help="slides: um/px of files that declare none")
    p.add_argument("--min-tissue", type=float, default=0.5, help="grid: tissue fraction (0.5)")
    p.add_argument("--threads", type=int, help="threads per slide for tiling")
    p.add_argument("--dask", metavar="local|ADDRESS", help="one task per slide or store on dask")
    p.add_argument("--dask-workers", type=int, default=2, help="workers of --dask local (2)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def embed_job(job: dict[str, Any]) -> list[dict[str, Any]]:
    """One input: tile a slide into its store first (``job["tile"]``), then embed the store's
    groups. Runs in this process or as a dask task (the encoder is built once per process)."""
    from mclstexp.workflow.embed import embed_stores

    if job.get("tile") is not None:
        from mclstexp.cli.tile import tile_job

        tiled = tile_job(job["tile"])
        job = {**job, "keys": [tiled["key"]]}
    return embed_stores(
        [job["store"]],
        encoder=job["encoder"],
        preset=job["preset"],
        weights=job["weights"],
        keys=job["keys"],
        device=job["device"],
        batch_size=job["batch_size"],
        progress=job["progress"],
    )


def _geometry(args: argparse.Namespace) -> tuple[int, float | None]:
    from mclstexp.models import load_preset
    from mclstexp.models.encoders import encoder_geometry

    backbone = args.encoder or load_preset(args.preset).model.backbone
    size, mpp = encoder_geometry(backbone) or (224, None)
    return args.patch_size or size, args.mpp if args.mpp is not None else mpp


def _jobs(args: argparse.Namespace) -> list[dict[str, Any]]:
    inputs = [Path(i) for i in args.inputs]
    for i in inputs:
        if not i.exists():
            raise FileNotFoundError(2, "input not found", str(i))
    common = {
        "encoder": args.encoder,
        "preset": args.preset,
        "weights": args.weights,
        "device": args.device,
        "batch_size": args.batch_size,
        "progress": not args.quiet and args.dask is None,
    }
    stores = [i for i in inputs if i.is_dir()]
    slides = [i for i in inputs if not i.is_dir()]
    jobs = [{**common, "store": str(s), "keys": args.key, "tile": None} for s in stores]
    if not slides:
        return jobs
    if args.out is None or (args.spots is None and not args.grid):
        raise ValueError("slides need --out STORE and --spots FILE... or --grid (to tile them)")
    if args.spots is not None and len(args.spots) != len(slides):
        raise ValueError(f"--spots: give one spot file per slide ({len(slides)} slides)")
    size, mpp = _geometry(args)
    for n, slide in enumerate(slides):
        tile = {
            "slide": str(slide),
            "spots": None if args.spots is None else args.spots[n],
            "out": str(args.out),
            "key": slide.stem,
            "size": size,
            "mpp": mpp,
            "level": 0,
            "slide_mpp": args.slide_mpp,
            "min_tissue": args.min_tissue,
            "stain": None,
            "threads": args.threads,
            "chunk": 32,
            "overwrite": False,
            "backend": "auto",
            "progress": common["progress"],
        }
        jobs.append({**common, "store": str(args.out), "keys": None, "tile": tile})
    return jobs


def run(args: argparse.Namespace) -> int:
    """Run ``mclstexp embed``."""
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    jobs = _jobs(args)
    started = time.perf_counter()
    if args.dask is None:
        results = [r for job in jobs for r in embed_job(job)]
    else:
        from mclstexp.cli.tile import run_dask

        out = args.out if any(j["tile"] for j in jobs) else None
        done = run_dask(
            embed_job,
            jobs,
            address=args.dask,
            workers=args.dask_workers,
            quiet=args.quiet,
            store=out,
        )
        results = [r for rs in done for r in rs]
    for r in results:
        state = "computed" if r["computed"] else "found on disk"
        where = (
            f"features/{r['feature_key'][:12]}..."
            if r["stored"]
            else "NOT stored: the patch cache is not writable"
        )
        print(
            f"{r['store']}/{r['key']}: {r['n']} patches x {r['dim']} features {state} in "
            f"{r['seconds']:.1f} s ({where})"
        )
    seconds = time.perf_counter() - started
    n = sum(r["n"] for r in results)
    print(f"mclstexp embed: {len(results)} slide(s), {n} patches in {seconds:.1f} s")
    return 0
