"""HEST-1k and HEST-Benchmark readers on fixtures written in HEST's exact layouts
(tests/_hest_fixture.py): a tiny synthetic one (always) and one made of her2st sections."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from _hest_fixture import her2st_hest, tiny_hest, write_patches_h5
from mclstexp import _keys as K
from mclstexp.exceptions import DataWarning
from mclstexp.io import (
    check_hest_patches,
    open_slide,
    read_hest,
    read_hest_patches,
    read_hest_sample,
    read_hest_task,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    return tiny_hest(tmp_path_factory.mktemp("tiny"))


def test_the_fixture_files_are_laid_out_as_hest_writes_them(tiny) -> None:
    hest, bench = tiny
    assert {p.name for p in hest.iterdir()} == {"st", "wsis", "metadata", "patches"}
    with h5py.File(hest / "patches/TINY1.h5", "r") as f:
        assert sorted(f) == ["barcode", "coords", "img"]
        assert f["img"].dtype == np.uint8 and f["img"].shape[1:] == (224, 224, 3)
        assert f["img"].chunks == (1, 224, 224, 3)
        assert sorted(f["img"].attrs) == [
            "downsample",
            "name",
            "patch_size_src",
            "patch_size_target",
            "pixel_size",
        ]
        assert f["coords"].dtype == np.int64 and f["barcode"].shape == (16, 1)
        assert f["barcode"][0, 0] == b"000x000"
    task = bench / "TINY"
    assert sorted(p.name for p in task.iterdir()) == [
        "adata",
        "patches",
        "splits",
        "var_50genes.json",
    ]
    assert sorted(p.name for p in (task / "splits").iterdir())[:2] == ["test_0.csv", "test_1.csv"]
    assert (task / "splits/train_0.csv").read_text().splitlines()[0] == (
        "sample_id,patches_path,expr_path"
    )


def test_read_hest_uses_the_estimated_mpp_warns_on_disagreement_and_maps_symbols(tiny) -> None:
    hest, _ = tiny
    with pytest.warns(DataWarning, match="disagree by 20 %"):
        a = read_hest(hest, "TINY0")
    info = a.uns[K.UNS]
    assert info[K.UNS_MPP] == 1.0 and info["mpp_source"].endswith("(pixel_size_um_estimated)")
    assert info[K.UNS_SLIDE_PATH] == str(hest / "wsis/TINY0.tif")
    assert info["hest"]["pixel_size_um_embedded"] == 1.2
    assert list(a.var_names[:2]) == ["GENE0", "GENE1"]
    assert a.var["gene_ids"].iloc[0] == "ENSG00000100000"
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # sample 1 agrees: no warning
        b = read_hest(hest, "TINY1", gene_symbols=False)
    assert b.var_names[0] == "ENSG00000100000"
    with pytest.raises(FileNotFoundError, match="no HEST-1k file for sample 'NOPE'"):
        read_hest(hest, "NOPE")


def test_patches_are_corners_and_centres_sit_on_the_spots(tiny) -> None:
    hest, _ = tiny
    a = read_hest(hest, "TINY1")
    p = read_hest_patches(hest / "patches/TINY1.h5")
    assert p.layout == "hestcore" and p.patch_size == 224 and p.mpp == 0.5
    assert p.patch_size_src == 112 and p.slide_mpp == 1.0
    spots = np.asarray(a.obsm[K.SPATIAL])
    np.testing.assert_allclose(p.corners, spots - 56)  # int(centre - (224 * 0.5 / 1) // 2)
    np.testing.assert_allclose(p.centres, spots)
    check_hest_patches(p, a)
    # the pixels are the slide's around the spot, resized to 224 (2x here)
    slide = open_slide(hest / "wsis/TINY1.tif")
    region = slide.read_region((int(p.corners[3, 0]), int(p.corners[3, 1])), 0, (112, 112))
    got = p.images([3])[0].astype(float)
    assert abs(got.mean() - np.asarray(region)[..., :3].mean()) < 2.0


def test_corners_mixed_up_with_centres_and_the_legacy_layout(tiny, tmp_path: Path) -> None:
    hest, _ = tiny
    a = read_hest(hest, "TINY1")
    p = read_hest_patches(hest / "patches/TINY1.h5")
    images = p.images()
    wrong = tmp_path / "centres.h5"  # centres written where HEST writes corners
    write_patches_h5(wrong, images, np.asarray(a.obsm[K.SPATIAL]), p.barcodes, mpp=1.0)
    with pytest.raises(ValueError, match="corners and centres mixed up"):
        check_hest_patches(read_hest_patches(wrong), a)
    legacy = tmp_path / "legacy.h5"  # HEST <= 1.0: centres as (y, x), attrs patch_size/factor
    with h5py.File(legacy, "w") as f:
        f.create_dataset("img", data=images).attrs.update({"patch_size": 112, "factor": 0.5})
        f.create_dataset("coords", data=np.asarray(a.obsm[K.SPATIAL])[:, ::-1].astype(int))
        f.create_dataset("barcode", data=np.array(p.barcodes, dtype="S")[:, None])
    old = read_hest_patches(legacy)
    assert old.layout == "legacy"
    np.testing.assert_allclose(old.centres, a.obsm[K.SPATIAL])
    check_hest_patches(old, a)
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f.create_dataset("img", data=images[:2])
        f.create_dataset("coords", data=np.zeros((2, 2)))
        f.create_dataset("barcode", data=np.array([b"a", b"b"]))
    with pytest.raises(ValueError, match="cannot tell corners from centres"):
        read_hest_patches(bad)
    with pytest.raises(ValueError, match="not spots of the sample"):
        check_hest_patches(p, a[2:].copy())


def test_pseudo_spots_take_their_size_from_the_pitch(tiny, tmp_path: Path) -> None:
    hest, _ = tiny
    import shutil

    root = tmp_path / "hest"
    shutil.copytree(hest, root)
    meta = json.loads((root / "metadata/TINY2.json").read_text())
    # Xenium: 100 um pseudo-spots, spot_diameter empty in HEST's metadata
    meta.update(st_technology="Xenium", spot_diameter=None, inter_spot_dist=None)
    meta.update(pixel_size_um_estimated=100 / 120, pixel_size_um_embedded=100 / 120)
    (root / "metadata/TINY2.json").write_text(json.dumps(meta))
    a = read_hest(root, "TINY2")
    assert a.uns[K.UNS]["hest"]["pseudo_spot_um"] == pytest.approx(100.0)
    assert a.uns[K.UNS][K.UNS_SPOT_DIAMETER_PX] == pytest.approx(120.0)
    # Visium HD: the metadata's spot_diameter is the raw 2 um bin; 128 um pseudo-spots expected
    meta.update(st_technology="Visium HD", spot_diameter=2, inter_spot_dist=2)
    (root / "metadata/TINY2.json").write_text(json.dumps(meta))
    with pytest.warns(DataWarning, match="not HEST's default 128"):
        b = read_hest(root, "TINY2")
    assert b.uns[K.UNS][K.UNS_SPOT_DIAMETER_PX] == pytest.approx(120.0)


def test_bench_task_splits_genes_and_samples_aligned_to_patches(tiny, tmp_path: Path) -> None:
    _, bench = tiny
    task = read_hest_task(bench, "TINY")
    assert task.genes == [f"ENSG{100000 + i:011d}" for i in range(6)]
    assert task.splits[1] == (["TINY0", "TINY2"], ["TINY1"])
    assert task.samples == ["TINY1", "TINY2", "TINY0"]
    assert read_hest_task(bench / "TINY", "TINY").genes == task.genes
    adata, patches = read_hest_sample(task, "TINY2")
    assert list(adata.obs_names) == list(patches.barcodes)
    assert adata.uns[K.UNS][K.UNS_SECTION] == "TINY2"
    # a patch file with fewer spots (HEST drops spots off the slide or tissue): expression follows
    sub = tmp_path / "sub.h5"
    keep = [5, 1, 9]
    write_patches_h5(
        sub,
        patches.images(sorted(keep))[[1, 0, 2]],
        patches.corners[keep],
        patches.barcodes[keep],
        mpp=1.0,
    )
    task.patches_path["TINY2"] = sub
    adata, patches = read_hest_sample(task, "TINY2")
    assert list(adata.obs_names) == list(patches.barcodes[[0, 1, 2]]) and adata.n_obs == 3
    with pytest.raises(FileNotFoundError, match="no HEST-Benchmark task 'IDC'"):
        read_hest_task(bench, "IDC")
    (bench / "TINY/splits/test_2.csv").rename(tmp_path / "gone.csv")
    try:
        with pytest.raises(ValueError, match=r"missing \['test_2.csv'\]"):
            read_hest_task(bench, "TINY")
    finally:
        (tmp_path / "gone.csv").rename(bench / "TINY/splits/test_2.csv")


@pytest.mark.realdata
def test_her2st_in_hest_layout_reads_back(shared_data: Path, tmp_path: Path) -> None:
    hest, bench = her2st_hest(
        shared_data, tmp_path, sections=("C2", "C3"), scale=2, max_spots=60, wsi_sections=["C2"]
    )
    a = read_hest(hest, "C2")
    info = a.uns[K.UNS]
    assert a.n_obs == 60 and info["hest"]["st_technology"] == "Spatial Transcriptomics"
    assert info[K.UNS_MPP] == pytest.approx(2 * 0.6888, rel=0.01)  # decoded at 1/2
    p = read_hest_patches(hest / "patches/C2.h5")
    check_hest_patches(p, a)
    assert p.mpp == 0.5 and p.patch_size_src == round(224 * 0.5 / info[K.UNS_MPP])
    slide = open_slide(info[K.UNS_SLIDE_PATH])
    side = int(p.patch_size_src)
    region = np.asarray(slide.read_region(tuple(int(v) for v in p.corners[0]), 0, (side, side)))
    assert abs(p.images([0])[0].mean() - region[..., :3].mean()) < 4.0  # JPEG pyramid vs raw
    task = read_hest_task(bench, "HER2ST")
    assert len(task.genes) == 50 and len(task.splits) == 2
    adata, patches = read_hest_sample(task, "C3")
    assert adata.n_obs == len(patches) == 60 and all(g in adata.var_names for g in task.genes)
