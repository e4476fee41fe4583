"""The bad inputs of ``bad_inputs.py``: one :class:`Case` per input, grouped by what they hit."""

from __future__ import annotations

import shutil
from pathlib import Path

from bad_inputs import Case
from bad_inputs_fixtures import copy_cache, edit_attrs, first_chunk

TILE = ["--patch-size", "64", "--quiet", "--chunk-patches", "8"]
# `mclstexp train` on the run folder of the fixtures (resumes from its checkpoint.pt)
RESUME = ["train", "--synthetic", "--n-sections", "2", "--n-spots", "30", "--holdout", "B1"]
RESUME += ["--preset", "cpu", "--epochs", "2", "--device", "cpu", "--no-progress", "--run-dir"]


def cli(group: str, name: str, *argv: str, **kw) -> Case:
    return Case(name, group, argv=list(argv), **kw)


def api(group: str, name: str, code: str, **kw) -> Case:
    return Case(name, group, code=code, **kw)


def _no_marker(work: Path):
    def setup() -> None:
        (work / "MARKER").unlink(missing_ok=True)

    def check() -> str | None:
        return "CODE EXECUTED (marker created)" if (work / "MARKER").exists() else None

    return {"setup": setup, "check": check}


def _tile(slide: str = "syn/A1.tif", spots: str = "spots.csv", out: str = "t.zarr", *extra):
    return ["tile", slide, "--spots", spots, "--out", out, *TILE, "--overwrite", *extra]


def tile_cases(work: Path) -> list[Case]:
    g = "tile"
    slides = {
        "missing slide": ("nope.tif", "nope.tif"),
        "directory as slide": ("folder.tif", "folder.tif"),
        "empty TIFF": ("empty.tif", "empty.tif"),
        "garbage TIFF": ("garbage.tif", "garbage.tif"),
        "truncated TIFF (50 %)": ("trunc.tif", "trunc.tif"),
        "TIFF header claiming 2^31 x 2^31 px": ("huge.tif", "huge.tif"),
        "garbage .svs": ("garbage.svs", "garbage.svs"),
        "truncated JPEG (60 %)": ("trunc.jpg", "trunc.jpg"),
        "garbage JPEG": ("garbage.jpg", "garbage.jpg"),
        "JPEG magic then garbage": ("fakehead.jpg", "fakehead.jpg"),
        "truncated PNG (60 %)": ("trunc.png", "trunc.png"),
        "PNG magic then garbage": ("fakehead.png", "fakehead.png"),
    }
    return [cli(g, k, *_tile(slide=s), names=n) for k, (s, n) in slides.items()]


def tile_spot_cases(work: Path) -> list[Case]:
    g = "tile"
    spots = {
        "missing spots file": "nope.csv",
        "empty spots file": "spots_empty.csv",
        "header-only spots file": "spots_header.csv",
        "NaN coordinate": "spots_nan.csv",
        "inf coordinate": "spots_inf.csv",
        "duplicate spot id": "spots_dup.csv",
        "text coordinate": "spots_text.csv",
        "row with a missing column": "spots_short.csv",
        "no y column": "spots_nocol.csv",
        "binary garbage spots": "spots_binary.csv",
    }
    cases = [cli(g, k, *_tile(spots=v), names=v) for k, v in spots.items()]
    cases.append(cli(g, "spot far outside the slide", *_tile(spots="spots_far.csv"), expect="any"))
    return cases


def tile_arg_cases(work: Path) -> list[Case]:
    g = "tile"
    args = {
        "--patch-size 0": (["--patch-size", "0"], "size"),
        "--patch-size abc": (["--patch-size", "abc"], "--patch-size"),
        "--level -1": (["--level", "-1"], "level"),
        "--level 99": (["--level", "99"], "level"),
        "--mpp 0": (["--mpp", "0"], "mpp"),
        "--mpp nan": (["--mpp", "nan"], "mpp"),
        "--mpp -2": (["--mpp", "-2"], "mpp"),
        "--slide-mpp -1": (["--slide-mpp", "-1"], "mpp"),
        "--chunk-patches 0": (["--chunk-patches", "0"], "chunk"),
        "--threads -1": (["--threads", "-1"], "threads"),
        "--out under a regular file": (["--out", "afile/x.zarr"], "afile"),
        "--out is a regular file": (["--out", "afile"], "afile"),
        "--stain-target missing image": (
            ["--stain-normalize", "macenko", "--stain-target", "nope.png"],
            "nope.png",
        ),
        "--stain-target garbage image": (
            ["--stain-normalize", "macenko", "--stain-target", "garbage.png"],
            "garbage.png",
        ),
        "--stain-target blank image": (
            ["--stain-normalize", "macenko", "--stain-target", "blank.tif"],
            "blank.tif",
        ),
        "--dask-workers 0": (["--dask", "local", "--dask-workers", "0"], "workers"),
    }
    return [cli(g, k, *_tile(), *v, names=n) for k, (v, n) in args.items()]


def tile_misc_cases(work: Path) -> list[Case]:
    g = "tile"
    cases = []
    cases.append(
        cli(
            g,
            "2 slides, 1 spots file",
            "tile",
            "syn/A1.tif",
            "syn/B1.tif",
            "--spots",
            "spots.csv",
            "--out",
            "t.zarr",
            *TILE,
            names="spots",
        )
    )
    cases.append(
        cli(
            g,
            "--grid on a blank slide",
            "tile",
            "blank.tif",
            "--grid",
            "--out",
            "g.zarr",
            *TILE,
            names="blank.tif",
        )
    )
    cases.append(
        cli(
            g,
            "--grid --min-tissue 1.5",
            "tile",
            "syn/A1.tif",
            "--grid",
            "--out",
            "g.zarr",
            *TILE,
            "--min-tissue",
            "1.5",
            names="min",
        )
    )
    cases.append(
        cli(
            g,
            "existing foreign Zarr group (no --overwrite)",
            "tile",
            "syn/A1.tif",
            "--spots",
            "spots.csv",
            "--out",
            "foreign.zarr",
            *TILE,
            names="overwrite",
            check=lambda: (
                None
                if (work / "foreign.zarr/A1/zarr.json").is_file()
                else "deleted a group it did not create"
            ),
        )
    )
    entry = "mclstexp-tile"
    cases.append(Case(f"{entry} garbage TIFF", g, argv=[entry, *_tile(slide="garbage.tif")[1:]]))
    cases[-1].names = "garbage.tif"
    cases.append(Case(f"{entry} --level -1", g, argv=[entry, *_tile()[1:], "--level", "-1"]))
    cases[-1].names = "level"
    return cases


def _same_as_good(work: Path, store: str):
    def check() -> str | None:
        import numpy as np

        from mclstexp.pp.patch_cache import open_patch_cache

        good = open_patch_cache(work / "cache.zarr", "A1")
        again = open_patch_cache(work / "caches" / store, "A1")
        if not np.array_equal(good[:], again[:]):
            return "rerun left different patches"
        return None

    return check


def _damage(work: Path, name: str, how: str):
    def setup() -> None:
        store = copy_cache(work, name)
        chunk = first_chunk(store / "A1" / "patches")
        if how == "delete":
            chunk.unlink()
        elif how == "truncate":
            chunk.write_bytes(chunk.read_bytes()[:50])
        elif how == "garbage":
            chunk.write_bytes(b"\x00garbage" * 40)
        elif how == "patch_size":
            edit_attrs(store, patch_size=32)
        elif how == "version":
            edit_attrs(store, format_version=99)
        elif how == "attrs_json":
            (store / "A1" / "zarr.json").write_text("{broken")
        elif how == "incomplete":
            edit_attrs(store, complete=False)
        elif how == "no_spot_ids":
            shutil.rmtree(store / "A1" / "spot_ids")
        elif how == "format":
            edit_attrs(store, format="something-else")

    return setup


def rerun(name: str) -> list[str]:
    return ["tile", "syn/A1.tif", "--spots", "spots.csv", "--out", f"caches/{name}", *TILE]


def read(name: str) -> str:
    return (
        f"from mclstexp.pp.patch_cache import open_patch_cache\n"
        f"c = open_patch_cache('caches/{name}', 'A1')\nc[:]"
    )


def cache_cases(work: Path) -> list[Case]:
    g = "patch cache"
    cases = []
    for how in ("delete", "truncate", "garbage"):
        name = f"rerun_{how}"
        cases.append(
            cli(
                g,
                f"{how} a chunk, rerun the tiler (repairs)",
                *rerun(name),
                expect="ok",
                setup=_damage(work, name, how),
                check=_same_as_good(work, name),
            )
        )
        name = f"read_{how}"
        msg = "chunk" if how != "delete" else "A1"
        cases.append(
            api(
                g,
                f"{how} a chunk, read the cache",
                read(name),
                names=msg,
                setup=_damage(work, name, how),
            )
        )
    for how, names in (
        ("patch_size", "overwrite"),
        ("version", "version"),
        ("attrs_json", "zarr.json"),
        ("format", "A1"),
    ):
        name = f"rerun_{how}"
        cases.append(
            cli(
                g,
                f"edited attrs ({how}), rerun the tiler",
                *rerun(name),
                names=names,
                setup=_damage(work, name, how),
            )
        )
    for how, names in (
        ("version", "version"),
        ("attrs_json", "zarr.json"),
        ("incomplete", "complete"),
        ("no_spot_ids", "spot_ids"),
    ):
        name = f"read_{how}"
        cases.append(
            api(
                g, f"{how}: open the cache", read(name), names=names, setup=_damage(work, name, how)
            )
        )
    return cases


def cache_open_cases(work: Path) -> list[Case]:
    g = "patch cache"
    cases = [api(g, "open a missing store", read("nope"), names="nope")]
    cases.append(
        api(
            g,
            "open a store with a wrong key",
            "from mclstexp.pp.patch_cache import open_patch_cache\n"
            "open_patch_cache('cache.zarr', 'ZZ')",
            names="ZZ",
        )
    )
    cases.append(
        api(
            g,
            "open a folder with a garbage zarr.json",
            "from mclstexp.pp.patch_cache import open_patch_cache\n"
            "open_patch_cache('notazarr.zarr')",
            names="notazarr",
        )
    )
    return cases


def _predict(*extra: str, model: str = "run", source=("--h5ad", "B1.h5ad")) -> list[str]:
    return [
        "predict",
        "--model",
        model,
        *source,
        "--out",
        "p.h5ad",
        "--device",
        "cpu",
        "--k",
        "10",
        *extra,
    ]


def model_cases(work: Path) -> list[Case]:
    g = "checkpoint/reference"
    guard = _no_marker(work)
    cases = [
        cli(
            g,
            "model.pt with a malicious pickle (zip)",
            *_predict(
                model="evil_zip.pt",
            ),
            "--reference",
            "run/reference.npz",
            names="evil_zip.pt",
            **guard,
        ),
        cli(
            g,
            "model.pt: plain pickle with __reduce__",
            *_predict(
                model="evil_plain.pt",
            ),
            "--reference",
            "run/reference.npz",
            names="evil_plain.pt",
            **guard,
        ),
        cli(
            g,
            "checkpoint.pt malicious, train resumes",
            *RESUME,
            "run_evil",
            names="checkpoint.pt",
            **guard,
        ),
        cli(
            g,
            "truncated checkpoint.pt, train resumes",
            *RESUME,
            "run_trunc_ckpt",
            names="checkpoint.pt",
        ),
        api(
            g,
            "load_checkpoint on a malicious pickle",
            "from mclstexp.train.checkpoint import load_checkpoint\nload_checkpoint('evil_zip.pt')",
            names="evil_zip.pt",
            **guard,
        ),
        cli(
            g,
            "reference.npz with a pickled object",
            *_predict("--reference", "evil.npz"),
            names="evil.npz",
            **guard,
        ),
    ]
    return cases


def model_file_cases(work: Path) -> list[Case]:
    g = "checkpoint/reference"
    cases = []
    models = {
        "truncated model.pt": "trunc_model.pt",
        "empty model.pt": "empty.pt",
        "text as model.pt": "text.pt",
        "torch file with wrong keys": "wrong_keys.pt",
        "state dict with a wrong shape": "shape_model.pt",
        "missing model": "nope.pt",
    }
    for name, path in models.items():
        argv = _predict("--reference", "run/reference.npz", model=path)
        cases.append(cli(g, name, *argv, names=path))
    refs = {
        "truncated reference.npz": "trunc_ref.npz",
        "reference with a row removed": "shape_ref.npz",
        "reference with NaN values": "nan_ref.npz",
        "garbage reference.npz": "garbage.npz",
        "empty reference.npz": "empty_ref.npz",
        "reference of another model": "run2/reference.npz",
        "missing reference": "nope.npz",
    }
    for name, path in refs.items():
        cases.append(cli(g, name, *_predict("--reference", path), names=path.split("/")[-1]))
    return cases


def predict_cases(work: Path) -> list[Case]:
    g = "predict"
    args = {
        "--k 0": (["--k", "0"], "--k"),
        "--k -5": (["--k", "-5"], "--k"),
        "--k 1000000 (more than the reference)": (["--k", "1000000"], "--k"),
        "--device gpu9": (["--device", "gpu9"], "gpu9"),
        "--out under a regular file": (["--out", "afile/p.h5ad"], "afile"),
        "--plot-genes an unknown gene": (["--plot-genes", "NOTAGENE"], "NOTAGENE"),
        "--min-tissue -1 with --grid": (["--min-tissue", "-1"], "min"),
    }
    cases = []
    for name, (extra, names) in args.items():
        source = ("--grid", "syn/A1.tif") if "grid" in name else ("--h5ad", "B1.h5ad")
        expect = "any" if "plot" in name or "1000000" in name else "error"
        cases.append(cli(g, name, *_predict(*extra, source=source), names=names, expect=expect))
    h5 = {
        "missing --h5ad": "nope.h5ad",
        "garbage --h5ad": "garbage.h5ad",
        "empty --h5ad": "empty.h5ad",
        "--h5ad without obsm['spatial']": "nospatial.h5ad",
        "--h5ad without a slide path": "noslide.h5ad",
        "--h5ad whose slide is gone": "goneslide.h5ad",
    }
    for name, path in h5.items():
        names = "gone.tif" if "gone" in name else ("slide" if "slide" in name else path)
        cases.append(cli(g, name, *_predict(source=("--h5ad", path)), names=names))
    cases.append(
        cli(
            g,
            "--h5ad with --slide garbage",
            *_predict("--slide", "garbage.tif", source=("--h5ad", "noslide.h5ad")),
            names="garbage.tif",
        )
    )
    cases.append(
        cli(
            g,
            "--grid on a garbage slide",
            *_predict(source=("--grid", "garbage.tif")),
            names="garbage.tif",
        )
    )
    cases.append(
        cli(
            g,
            "--grid on a blank slide",
            *_predict(source=("--grid", "blank.tif")),
            names="blank.tif",
        )
    )
    cases.append(
        cli(
            g,
            "--her2st on an empty folder",
            *_predict("--section", "A1", source=("--her2st", "her2st_empty")),
            names="her2st_empty",
        )
    )
    cases.append(
        cli(
            g,
            "--her2st without --section",
            *_predict(source=("--her2st", "her2st_empty")),
            names="section",
        )
    )
    return cases


def all_cases(work: Path) -> list[Case]:
    """Every case, in table order."""
    from bad_inputs_cases_more import (
        embed_bench_cases,
        evaluate_cases,
        json_cases,
        reader_cases,
        train_run_cases,
    )

    return [
        *tile_cases(work),
        *tile_spot_cases(work),
        *tile_arg_cases(work),
        *tile_misc_cases(work),
        *cache_cases(work),
        *cache_open_cases(work),
        *model_cases(work),
        *model_file_cases(work),
        *predict_cases(work),
        *evaluate_cases(work),
        *train_run_cases(work),
        *embed_bench_cases(work),
        *reader_cases(work),
        *json_cases(work),
    ]
