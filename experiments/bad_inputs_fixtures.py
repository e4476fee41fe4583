"""Inputs for ``bad_inputs.py``: good files made once (synthetic slides, a patch cache, two tiny
models, a prediction) and the bad files derived from them (truncated, garbage, tampered)."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

# Code a malicious file would run: it creates MARKER in the working folder.
EVIL_CODE = "open('MARKER', 'w').write('code from a file was executed')"


class Evil:
    """Pickles to a call of ``exec(EVIL_CODE)``: loading it must be refused, never run."""

    def __reduce__(self):
        return (exec, (EVIL_CODE,))


def _cli(work: Path, python_dir: Path, *args: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(python_dir))
    cmd = [sys.executable, "-m", "mclstexp", *args]
    subprocess.run(cmd, cwd=work, env=env, check=True, capture_output=True, text=True)


def truncate(src: Path, dst: Path, fraction: float) -> None:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])


def huge_tiff(path: Path, width: int = 2**31 - 1, height: int = 2**31 - 1) -> None:
    """A little-endian TIFF whose header claims a ``width x height`` RGB strip image."""
    entries = [
        (256, 4, 1, width),  # ImageWidth (LONG)
        (257, 4, 1, height),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample
        (259, 3, 1, 1),  # Compression: none
        (262, 3, 1, 2),  # Photometric: RGB
        (273, 4, 1, 8 + 2 + 12 * 10 + 4),  # StripOffsets: right after the IFD
        (277, 3, 1, 3),  # SamplesPerPixel
        (278, 4, 1, height),  # RowsPerStrip
        (279, 4, 1, 16),  # StripByteCounts
        (284, 3, 1, 1),  # PlanarConfiguration
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        packed = struct.pack("<HHI", tag, typ, count)
        packed += struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value)
        ifd += packed
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00" * 4 + b"\x80" * 16)


def first_chunk(array_dir: Path) -> Path:
    """The first chunk file of a Zarr v3 array folder."""
    files = sorted(p for p in (array_dir / "c").rglob("*") if p.is_file())
    return files[0]


def copy_cache(work: Path, name: str) -> Path:
    dst = work / "caches" / name
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(work / "cache.zarr", dst)
    return dst


def edit_attrs(store: Path, **changes) -> None:
    meta = store / "A1" / "zarr.json"
    data = json.loads(meta.read_text())
    data["attributes"].update(changes)
    meta.write_text(json.dumps(data))


def _images(work: Path) -> None:
    import tifffile
    from PIL import Image

    rgb = tifffile.imread(work / "syn" / "A1.tif")
    Image.fromarray(rgb).save(work / "slide.jpg", quality=90)
    Image.fromarray(rgb).save(work / "slide.png")
    truncate(work / "syn" / "A1.tif", work / "trunc.tif", 0.5)
    truncate(work / "slide.jpg", work / "trunc.jpg", 0.6)
    truncate(work / "slide.png", work / "trunc.png", 0.6)
    for name in ("garbage.tif", "garbage.jpg", "garbage.png", "garbage.svs"):
        (work / name).write_bytes(os.urandom(4096))
    (work / "empty.tif").write_bytes(b"")
    (work / "folder.tif").mkdir()
    huge_tiff(work / "huge.tif")
    # a header that claims PNG/JPEG then garbage
    (work / "fakehead.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    (work / "fakehead.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(200))
    white = np.full((512, 512, 3), 255, np.uint8)
    tifffile.imwrite(work / "blank.tif", white, photometric="rgb", tile=(64, 64))


def _spot_files(work: Path) -> None:
    import anndata as ad

    a1 = ad.read_h5ad(work / "syn" / "A1.h5ad")
    xy = np.asarray(a1.obsm["spatial"])
    rows = [f"{i},{x:.2f},{y:.2f}" for i, (x, y) in zip(a1.obs_names, xy, strict=True)]
    head = "id,x,y\n"
    (work / "spots.csv").write_text(head + "\n".join(rows) + "\n")
    (work / "spots_empty.csv").write_text("")
    (work / "spots_header.csv").write_text(head)
    bad = {
        "nan": (2, lambda r: r.split(",")[0] + ",nan,74"),
        "dup": (4, lambda r: rows[1]),
        "text": (3, lambda r: r.split(",")[0] + ",abc,86"),
        "inf": (1, lambda r: r.split(",")[0] + ",inf,86"),
        "far": (0, lambda r: r.split(",")[0] + ",1e12,1e12"),
        "short": (5, lambda r: r.split(",")[0] + ",12"),
    }
    for name, (i, edit) in bad.items():
        changed = list(rows)
        changed[i] = edit(rows[i])
        (work / f"spots_{name}.csv").write_text(head + "\n".join(changed) + "\n")
    (work / "spots_nocol.csv").write_text("id,x,z\n" + "\n".join(rows) + "\n")
    (work / "spots_binary.csv").write_bytes(os.urandom(2000))


def _json_files(work: Path) -> None:
    from mclstexp.pp.stain import StainNormalizer

    good = StainNormalizer("macenko").fit(str(work / "syn" / "A1.tif")).to_dict()
    (work / "stain_good.json").write_text(json.dumps(good))
    (work / "stain_garbage.json").write_text("{not json")
    huge = json.loads(json.dumps(good))
    huge["target"]["max_conc"] = [1e-9, 1e-9]
    (work / "stain_tiny_conc.json").write_text(json.dumps(huge))
    lab = StainNormalizer("reinhard").fit(str(work / "syn" / "A1.tif")).to_dict()
    lab["target"]["lab_mean"] = [1e6, -1e6, 1e6]
    (work / "stain_lab_huge.json").write_text(json.dumps(lab))
    neg = json.loads(json.dumps(good))
    neg["target"]["stain_matrix"] = [[0, 0], [0, 0], [0, 0]]
    (work / "stain_zero_matrix.json").write_text(json.dumps(neg))
    ver = dict(good, version=99)
    (work / "stain_version.json").write_text(json.dumps(ver))
    (work / "stain_list.json").write_text("[1, 2, 3]")
    presets = {
        "preset_unknown.json": {"model": {"nonsense_key": 1}, "train": {}},
        "preset_types.json": {"model": {}, "train": {"epochs": "ten"}},
        "preset_negative.json": {"model": {}, "train": {"epochs": -3}},
        "preset_toplevel.json": {"model": {}, "train": {}, "extra": 1},
        "preset_list.json": [1, 2],
        "preset_lr.json": {"model": {}, "train": {"lr": "fast"}},
        "preset_embed.json": {"model": {"projection_dim": 0}, "train": {}},
    }
    for name, data in presets.items():
        (work / name).write_text(json.dumps(data))
    (work / "preset_garbage.json").write_text("{model: ")


def _pickles(work: Path) -> None:
    import pickle

    import torch

    torch.save({"model": Evil()}, work / "evil_zip.pt")
    (work / "evil_plain.pt").write_bytes(pickle.dumps({"model": Evil()}))
    np.savez(work / "evil.npz", embeddings=np.array([Evil()], dtype=object))
    torch.save({"unexpected": 1}, work / "wrong_keys.pt")
    import timm

    torch.save(timm.create_model("resnet18").state_dict(), work / "resnet18.pt")
    (work / "empty.pt").write_bytes(b"")
    (work / "text.pt").write_text("this is not a model\n")
    truncate(work / "run" / "model.pt", work / "trunc_model.pt", 0.5)
    # a state dict with one tensor of the wrong shape
    data = torch.load(work / "run" / "model.pt", weights_only=True)
    name = next(k for k, v in data["model"].items() if v.ndim == 2)
    data["model"][name] = torch.zeros(3, 3)
    torch.save(data, work / "shape_model.pt")
    # a checkpoint.pt that runs code, in a copy of the run folder (train --resume reads it)
    keep_cache_out = shutil.ignore_patterns("patches")  # its recorded source path is run/...
    shutil.copytree(work / "run", work / "run_evil", ignore=keep_cache_out)
    torch.save({"model": Evil(), "epoch": 0}, work / "run_evil" / "checkpoint.pt")
    shutil.copytree(work / "run", work / "run_trunc_ckpt", ignore=keep_cache_out)
    truncate(work / "run" / "checkpoint.pt", work / "run_trunc_ckpt" / "checkpoint.pt", 0.5)


def _references(work: Path) -> None:
    ref = work / "run" / "reference.npz"
    truncate(ref, work / "trunc_ref.npz", 0.5)
    with np.load(ref, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    big = max(arrays, key=lambda k: arrays[k].size)
    shapes = dict(arrays)
    shapes[big] = arrays[big][:-3]
    np.savez(work / "shape_ref.npz", **shapes)
    nan = dict(arrays)
    nan[big] = np.full_like(arrays[big], np.nan) if arrays[big].dtype.kind == "f" else nan[big]
    np.savez(work / "nan_ref.npz", **nan)
    (work / "garbage.npz").write_bytes(os.urandom(3000))
    np.savez(work / "empty_ref.npz")


def dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float32)


def _anndata_files(work: Path) -> None:
    import anndata as ad

    b1 = ad.read_h5ad(work / "B1.h5ad")
    nospatial = b1.copy()
    del nospatial.obsm["spatial"]
    nospatial.write_h5ad(work / "nospatial.h5ad")
    noslide = b1.copy()
    noslide.uns["mclstexp"].pop("slide_path", None)
    noslide.write_h5ad(work / "noslide.h5ad")
    goneslide = b1.copy()
    goneslide.uns["mclstexp"]["slide_path"] = str(work / "gone.tif")
    goneslide.write_h5ad(work / "goneslide.h5ad")
    negative = b1.copy()
    negative.X = -np.abs(dense(negative.X)) - 1
    negative.write_h5ad(work / "negative.h5ad")
    nanx = b1.copy()
    nanx.X = np.full(b1.shape, np.nan, np.float32)
    nanx.write_h5ad(work / "nan_counts.h5ad")
    (work / "garbage.h5ad").write_bytes(os.urandom(5000))
    (work / "empty.h5ad").write_bytes(b"")
    zero = b1.copy()
    zero.X = np.zeros(b1.shape, np.float32)
    zero.write_h5ad(work / "zero_truth.h5ad")


def _predictions(work: Path) -> None:
    import anndata as ad

    pred = ad.read_h5ad(work / "pred.h5ad")
    other = pred.copy()
    other.obs_names = [f"other{i}" for i in range(other.n_obs)]
    other.write_h5ad(work / "pred_other_spots.h5ad")
    genes = pred.copy()
    genes.var_names = [f"G{i}_x" for i in range(genes.n_vars)]
    genes.write_h5ad(work / "pred_other_genes.h5ad")
    nan = pred.copy()
    nan.X = np.full(pred.shape, np.nan, np.float32)
    nan.write_h5ad(work / "pred_nan.h5ad")
    dup = ad.concat([pred, pred[:3]])
    dup.uns = pred.uns
    dup.write_h5ad(work / "pred_dup.h5ad")


def _folders(work: Path) -> None:
    (work / "her2st_empty").mkdir()
    cnts = work / "her2st_broken" / "ST-cnts"
    cnts.mkdir(parents=True)
    (cnts / "A1.tsv.gz").write_bytes(os.urandom(500))
    (work / "her2st_broken" / "ST-spotfiles").mkdir()
    (work / "her2st_broken" / "ST-spotfiles" / "A1_selection.tsv").write_text("x\ty\n1\t2\n")
    (work / "visium_empty").mkdir()
    vis = work / "visium_broken"
    (vis / "spatial").mkdir(parents=True)
    (vis / "filtered_feature_bc_matrix.h5").write_bytes(os.urandom(800))
    (vis / "spatial" / "tissue_positions.csv").write_text("barcode,in_tissue\nAAA,1\n")
    (vis / "spatial" / "scalefactors_json.json").write_text("{")
    hest = work / "hest_broken"
    for sub in ("st", "wsis", "metadata", "patches"):
        (hest / sub).mkdir(parents=True)
    (hest / "st" / "S1.h5ad").write_bytes(os.urandom(900))
    (hest / "metadata" / "S1.json").write_text("{")
    (hest / "patches" / "S1.h5").write_bytes(os.urandom(900))
    (work / "hest_empty").mkdir()
    (work / "afile").write_text("a regular file\n")
    (work / "genes_missing.txt").write_text("NOT_A_GENE_1\nNOT_A_GENE_2\n")
    (work / "genes_empty.txt").write_text("")
    (work / "notazarr.zarr").mkdir()
    (work / "notazarr.zarr" / "zarr.json").write_text("garbage")
    other = work / "foreign.zarr"
    other.mkdir()
    (other / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group"}))
    (other / "A1").mkdir()
    (other / "A1" / "zarr.json").write_text(
        json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {"mine": 1}})
    )


def build_fixtures(work: Path, python_dir: Path) -> None:
    """Make every input the cases use under ``work``."""
    from mclstexp.datasets import synthetic

    synthetic(work / "syn", n_sections=2, n_spots=30, seed=1)
    _images(work)
    _spot_files(work)
    _cli_fixtures(work, python_dir)
    _json_files(work)
    _pickles(work)
    _references(work)
    _anndata_files(work)
    _predictions(work)
    _folders(work)


def _cli_fixtures(work: Path, python_dir: Path) -> None:
    tile = ["tile", "syn/A1.tif", "--spots", "spots.csv", "--out", "cache.zarr"]
    _cli(work, python_dir, *tile, "--patch-size", "64", "--quiet", "--chunk-patches", "8")
    train = ["train", "--synthetic", "--n-sections", "2", "--n-spots", "30", "--holdout", "B1"]
    opts = ["--preset", "cpu", "--epochs", "1", "--device", "cpu", "--no-progress"]
    _cli(work, python_dir, *train, *opts, "--run-dir", "run")
    _cli(work, python_dir, *train, *opts, "--seed", "2", "--run-dir", "run2")
    import anndata as ad

    b1 = ad.read_h5ad(work / "run" / "synthetic" / "B1.h5ad")
    b1.uns["mclstexp"].pop("synthetic", None)
    b1.write_h5ad(work / "B1.h5ad")
    predict = ["predict", "--model", "run", "--h5ad", "B1.h5ad", "--device", "cpu", "--k", "10"]
    _cli(work, python_dir, *predict, "--out", "pred.h5ad")
