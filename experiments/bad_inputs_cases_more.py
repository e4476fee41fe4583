"""More cases of ``bad_inputs.py``: evaluate, train, run, embed, bench, the readers, JSON files."""

from __future__ import annotations

from pathlib import Path

from bad_inputs import Case
from bad_inputs_cases import _tile, api, cli


def evaluate_cases(work: Path) -> list[Case]:
    g = "evaluate"
    runs = {
        "missing predictions": (["nope.h5ad", "--truth", "B1.h5ad"], "nope.h5ad"),
        "garbage predictions": (["garbage.h5ad", "--truth", "B1.h5ad"], "garbage.h5ad"),
        "garbage truth": (["pred.h5ad", "--truth", "garbage.h5ad"], "garbage.h5ad"),
        "truth with other spots": (["pred_other_spots.h5ad", "--truth", "B1.h5ad"], "spot"),
        "truth with other genes": (["pred_other_genes.h5ad", "--truth", "B1.h5ad"], "gene"),
        "NaN predictions": (["pred_nan.h5ad", "--truth", "B1.h5ad"], "pred_nan.h5ad"),
        "duplicate spot ids in predictions": (
            ["pred_dup.h5ad", "--truth", "B1.h5ad"],
            "pred_dup.h5ad",
        ),
        "all-zero truth": (["pred.h5ad", "--truth", "zero_truth.h5ad"], "zero_truth.h5ad"),
        "negative counts as truth": (["pred.h5ad", "--truth", "negative.h5ad"], "negative.h5ad"),
        "NaN counts as truth": (["pred.h5ad", "--truth", "nan_counts.h5ad"], "nan_counts.h5ad"),
        "--layer that does not exist": (["pred.h5ad", "--truth", "B1.h5ad", "--layer", "zz"], "zz"),
        "--out under a regular file": (
            ["pred.h5ad", "--truth", "B1.h5ad", "--out", "afile/m.json"],
            "afile",
        ),
        "--her2st broken folder": (
            ["pred.h5ad", "--her2st", "her2st_broken", "--section", "A1"],
            "A1",
        ),
        "predictions as truth of itself, a model file": (
            ["pred.h5ad", "--truth", "run/model.pt"],
            "model.pt",
        ),
    }
    return [cli(g, k, "evaluate", *v, names=n) for k, (v, n) in runs.items()]


def _train(*extra: str) -> list[str]:
    return [
        "train",
        "--synthetic",
        "--n-sections",
        "2",
        "--n-spots",
        "30",
        "--device",
        "cpu",
        "--no-progress",
        "--run-dir",
        "tr",
        *extra,
    ]


def train_run_cases(work: Path) -> list[Case]:
    g = "train"
    presets = [
        "preset_unknown.json",
        "preset_types.json",
        "preset_negative.json",
        "preset_toplevel.json",
        "preset_list.json",
        "preset_garbage.json",
        "preset_lr.json",
        "preset_embed.json",
    ]
    cases = [cli(g, f"--preset {p}", *_train("--preset", p), names=p) for p in presets]
    args = {
        "--preset unknown name": (["--preset", "nope"], "nope"),
        "--preset missing JSON file": (["--preset", "nope.json"], "nope.json"),
        "--epochs 0": (["--epochs", "0"], "epochs"),
        "--batch-size 0": (["--batch-size", "0"], "batch"),
        "--genes missing file": (["--genes", "nope.txt"], "nope.txt"),
        "--genes none in the data": (["--genes", "genes_missing.txt"], "genes_missing.txt"),
        "--genes empty file": (["--genes", "genes_empty.txt"], "genes_empty.txt"),
        "--weights garbage file": (["--weights", "garbage.npz", "--preset", "cpu"], "garbage.npz"),
        "--backbone unknown": (["--backbone", "no_such_net_xyz"], "no_such_net_xyz"),
        "--run-dir under a regular file": (["--run-dir", "afile/r"], "afile"),
        "--num-workers -1": (["--num-workers", "-1"], "workers"),
    }
    cases += [cli(g, k, *_train(*v), names=n) for k, (v, n) in args.items()]
    h5 = {
        "garbage --h5ad": "garbage.h5ad",
        "--h5ad without a slide": "noslide.h5ad",
        "--h5ad negative counts": "negative.h5ad",
    }
    for name, path in h5.items():
        argv = [
            "train",
            "--h5ad",
            path,
            "B1.h5ad",
            "--device",
            "cpu",
            "--no-progress",
            "--run-dir",
            "tr",
        ]
        cases.append(cli(g, name, *argv, names=path))
    g = "run"
    runs = {
        "her2st missing root": (["her2st", "--root", "nope"], "nope"),
        "her2st broken root": (["her2st", "--root", "her2st_broken"], "her2st_broken"),
        "--n-sections 1": (["--n-sections", "1"], "section"),
        "--n-spots 0": (["--n-spots", "0"], "spots"),
        "--k 0": (["--k", "0"], "k"),
        "--k abc": (["--k", "abc"], "--k"),
        "--seeds abc": (["--seeds", "abc"], "--seeds"),
        "--preset unknown": (["--preset", "nope"], "nope"),
        "--out under a regular file": (["--out", "afile/r"], "afile"),
        "--epochs -1": (["--epochs", "-1"], "epochs"),
        "--holdout unknown": (["--holdout", "Z9"], "Z9"),
    }
    for name, (extra, names) in runs.items():
        cases.append(
            cli(
                g,
                name,
                "run",
                "--n-spots",
                "20",
                "--no-plots",
                "--device",
                "cpu",
                *extra,
                names=names,
            )
            if "her2st" not in name
            else cli(g, name, "run", *extra, "--out", "r", names=names)
        )
    return cases


def embed_bench_cases(work: Path) -> list[Case]:
    g = "embed"
    base = ["--device", "cpu", "--quiet", "--preset", "cpu", "--weights", "resnet18.pt"]
    runs = {
        "missing input": (["nope.zarr"], "nope.zarr"),
        "garbage zarr folder": (["notazarr.zarr"], "notazarr"),
        "--encoder unknown": (
            ["cache.zarr", "--encoder", "no_such_encoder_xyz"],
            "no_such_encoder_xyz",
        ),
        "--batch-size 0": (["cache.zarr", "--batch-size", "0"], "batch"),
        "--key unknown": (["cache.zarr", "--key", "ZZ"], "ZZ"),
        "slide without --out": (["syn/A1.tif", "--spots", "spots.csv"], "--out"),
        "garbage slide with --out": (
            ["garbage.tif", "--spots", "spots.csv", "--out", "e.zarr"],
            "garbage.tif",
        ),
    }
    cases = [cli(g, k, "embed", *v, *base, names=n) for k, (v, n) in runs.items()]
    cases.append(
        cli(
            g,
            "--weights garbage",
            "embed",
            "cache.zarr",
            *base[:-1],
            "garbage.npz",
            names="garbage.npz",
        )
    )
    g = "bench"
    benches = {
        "retrieval --n 0": (["retrieval", "--n", "0"], "n"),
        "retrieval --k 0": (["retrieval", "--k", "0"], "k"),
        "retrieval --dim 0": (["retrieval", "--dim", "0"], "dim"),
        "retrieval --repeat 0": (["retrieval", "--repeat", "0"], "repeat"),
        "retrieval --out under a file": (
            ["retrieval", "--n", "200", "--q", "4", "--dim", "8", "--out", "afile/b"],
            "afile",
        ),
        "hest missing root": (["hest", "--root", "nope", "--out", "h"], "nope"),
        "hest empty root": (["hest", "--root", "hest_empty", "--out", "h"], "hest_empty"),
        "hest unknown task": (
            ["hest", "--root", "hest_empty", "--tasks", "ZZZ", "--out", "h"],
            "ZZZ",
        ),
        "gpu --budget-s -1": (["gpu", "--budget-s", "-1", "--device", "cpu", "--smoke"], "budget"),
        "gpu --epochs 0": (["gpu", "--epochs", "0", "--device", "cpu", "--smoke"], "epochs"),
        "gpu --device gpu9": (["gpu", "--device", "gpu9"], "gpu9"),
    }
    small = ["--n", "200", "--q", "4", "--dim", "8"]  # a silent success ends quickly
    cases += [
        cli(
            g,
            k,
            "bench",
            *v[:1],
            *(small if v[0] == "retrieval" else []),
            *v[1:],
            names=n,
            timeout=60,
        )
        for k, (v, n) in benches.items()
    ]
    return cases


def reader_cases(work: Path) -> list[Case]:
    g = "io readers"
    slide = "from mclstexp.io import open_slide\n"
    opens = [
        "trunc.tif",
        "garbage.tif",
        "empty.tif",
        "folder.tif",
        "huge.tif",
        "trunc.jpg",
        "garbage.jpg",
        "fakehead.jpg",
        "trunc.png",
        "fakehead.png",
        "nope.tif",
    ]
    cases = [
        api(
            g,
            f"open_slide + read {p}",
            slide + f"s = open_slide('{p}')\n"
            "s.read_region((0, 0), 0, (64, 64))\ns.read_patches([[40, 40]], size=32)",
            names=p,
        )
        for p in opens
    ]
    ok = slide + "s = open_slide('syn/A1.tif')\n"
    calls = {
        "read_patches centres (n, 3)": ("s.read_patches([[1, 2, 3]], size=32)", "center"),
        "read_patches bool centres": (
            "import numpy as np\ns.read_patches(np.ones((2, 2), bool), size=32)",
            "center",
        ),
        "read_patches level -1": ("s.read_patches([[40, 40]], size=32, level=-1)", "level"),
        "read_patches size 0": ("s.read_patches([[40, 40]], size=0)", "size"),
        "read_region level 5": ("s.read_region((0, 0), 5, (8, 8))", "level"),
        "read_region size (-1, 4)": ("s.read_region((0, 0), 0, (-1, 4))", "size"),
        "thumbnail(0)": ("s.thumbnail(0)", "max_size"),
        "open_slide mpp=-1": ("open_slide('syn/A1.tif', mpp=-1)", "mpp"),
    }
    cases += [api(g, k, ok + v, names=n) for k, (v, n) in calls.items()]
    readers = {
        "read_h5ad garbage": ("read_h5ad('garbage.h5ad')", "garbage.h5ad"),
        "read_h5ad missing": ("read_h5ad('nope.h5ad')", "nope.h5ad"),
        "read_h5ad without spatial": ("read_h5ad('nospatial.h5ad')", "nospatial.h5ad"),
        "read_h5ad negative counts": ("read_h5ad('negative.h5ad')", "negative.h5ad"),
        "read_h5ad NaN counts": ("read_h5ad('nan_counts.h5ad')", "nan_counts.h5ad"),
        "read_her2st empty folder": ("read_her2st('her2st_empty', 'A1')", "her2st_empty"),
        "read_her2st garbage counts": ("read_her2st('her2st_broken', 'A1')", "A1"),
        "read_her2st bad section id": ("read_her2st('her2st_broken', '../x')", "../x"),
        "read_visium empty folder": ("read_visium('visium_empty')", "visium_empty"),
        "read_visium broken files": ("read_visium('visium_broken')", "visium_broken"),
        "read_spots empty": ("read_spots('spots_empty.csv')", "spots_empty.csv"),
        "read_spots header only": ("read_spots('spots_header.csv')", "spots_header.csv"),
        "read_spots NaN": ("read_spots('spots_nan.csv')", "spots_nan.csv"),
        "read_spots binary": ("read_spots('spots_binary.csv')", "spots_binary.csv"),
        "read_hest broken folder": ("read_hest('hest_broken', 'S1')", "S1"),
        "read_hest empty folder": ("read_hest('hest_empty', 'S1')", "S1"),
        "read_hest_patches garbage h5": ("read_hest_patches('hest_broken/patches/S1.h5')", "S1.h5"),
        "read_hest_task empty folder": ("read_hest_task('hest_empty', 'IDC')", "IDC"),
    }
    cases += [
        api(g, k, "from mclstexp.io import *\n" + v, names=n) for k, (v, n) in readers.items()
    ]
    return cases


def json_cases(work: Path) -> list[Case]:
    g = "stain/preset JSON"
    stain = "from mclstexp.pp.stain import StainNormalizer\n"
    files = [
        "stain_garbage.json",
        "stain_tiny_conc.json",
        "stain_lab_huge.json",
        "stain_zero_matrix.json",
        "stain_version.json",
        "stain_list.json",
        "nope.json",
    ]
    cases = [
        api(g, f"StainNormalizer.load {f}", stain + f"StainNormalizer.load('{f}')", names=f)
        for f in files
    ]
    cases += [
        cli(
            g,
            f"tile --stain-target {f}",
            *_tile(),
            "--stain-normalize",
            "macenko",
            "--stain-target",
            f,
            names=f,
        )
        for f in files[:3]
    ]
    preset = "from mclstexp.models.config import load_preset\n"
    for f in (
        "preset_unknown.json",
        "preset_types.json",
        "preset_negative.json",
        "preset_garbage.json",
        "preset_list.json",
    ):
        cases.append(api(g, f"load_preset {f}", preset + f"load_preset('{f}')", names=f))
    return cases
