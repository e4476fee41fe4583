"""Patch extraction into the Zarr cache, resume, the mclstexp-tile command and its dask mode."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mclstexp.exceptions import CacheMismatchError
from mclstexp.io import open_slide
from mclstexp.pp import extract_patches, open_patch_cache, tile_slide

tifffile = pytest.importorskip("tifffile")


def _synthetic_slide(path: Path, width: int = 1536, height: int = 1280, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack(
        [
            128 + 100 * np.sin(xx / 37.0),
            128 + 100 * np.cos(yy / 23.0),
            128 + 60 * np.sin((xx + yy) / 51.0),
        ],
        axis=-1,
    )
    img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
    with tifffile.TiffWriter(path) as tw:
        tw.write(img, tile=(256, 256), compression="jpeg", photometric="rgb")
        tw.write(img[::2, ::2], tile=(256, 256), compression="jpeg", subfiletype=1)
    return path


@pytest.fixture(scope="module")
def slide_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _synthetic_slide(tmp_path_factory.mktemp("slides") / "synth.tif")


def _spots(n: int = 100, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    xy = rng.uniform([-50, -50], [1600, 1300], size=(n, 2))
    return xy, [f"s{i}" for i in range(n)]


def _adata(slide: Path, n: int = 100):
    anndata = pytest.importorskip("anndata")
    import pandas as pd

    xy, ids = _spots(n)
    adata = anndata.AnnData(X=np.zeros((n, 3), np.float32), obs=pd.DataFrame(index=ids))
    adata.obsm["spatial"] = xy
    adata.uns["mclstexp"] = {"slide_path": str(slide), "section": "S1", "mpp": 0.5}
    return adata


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


class Invert:
    """A stand-in stain normaliser with the StainNormalizer interface."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls = 0
        self.fail_after = fail_after

    def to_dict(self) -> dict:
        return {"method": "invert", "params": {"k": np.float64(255.0)}}

    def transform(self, patches: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("injected failure")
        return 255 - patches


def test_extract_patches_writes_a_complete_cache(slide_path: Path, tmp_path: Path) -> None:
    adata = _adata(slide_path)
    store = tmp_path / "p.zarr"
    cache = extract_patches(adata, store=store, size=64, chunk_patches=16, progress=False)
    assert cache.key == "S1" and len(cache) == 100
    assert cache.patches.shape == (100, 64, 64, 3) and cache.patches.dtype == np.uint8
    assert cache.spot_ids.tolist() == list(adata.obs_names)
    np.testing.assert_array_equal(cache.coords, adata.obsm["spatial"])
    ref, inside = open_slide(slide_path).read_patches(
        adata.obsm["spatial"], size=64, return_mask=True
    )
    np.testing.assert_array_equal(cache.patches[:], ref)
    np.testing.assert_array_equal(cache.in_bounds, inside)
    assert 0 < (~inside).sum() < 100
    attrs = cache.attrs
    assert attrs["complete"] is True
    assert attrs["slide_size"] == slide_path.stat().st_size
    assert attrs["slide_checksum"]["value"] == hashlib.sha256(slide_path.read_bytes()).hexdigest()
    assert attrs["patch_size"] == 64 and attrs["level"] == 0 and attrs["mpp"] is None
    assert attrs["source_path"] == str(slide_path.resolve())
    import mclstexp

    assert attrs["package_version"] == mclstexp.__version__
    # Reopened from disk.
    again = open_patch_cache(store)
    np.testing.assert_array_equal(again[:5], ref[:5])


def test_rerun_reuses_and_other_params_raise(slide_path: Path, tmp_path: Path) -> None:
    adata = _adata(slide_path, n=40)
    store = tmp_path / "p.zarr"
    extract_patches(adata, store=store, size=32, progress=False)
    before = {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()}
    extract_patches(adata, store=store, size=32, progress=False)
    after = {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()}
    assert before == after  # nothing rewritten
    with pytest.raises(CacheMismatchError, match="patch_size"):
        extract_patches(adata, store=store, size=48, progress=False)
    with pytest.raises(CacheMismatchError, match="mpp"):
        extract_patches(adata, store=store, size=32, mpp=1.0, progress=False)
    cache = extract_patches(adata, store=store, size=48, overwrite=True, progress=False)
    assert cache.patches.shape == (40, 48, 48, 3)
    # Other spots are other parameters too.
    adata2 = adata.copy()
    adata2.obsm["spatial"] = adata.obsm["spatial"] + 1
    with pytest.raises(CacheMismatchError, match="spots"):
        extract_patches(adata2, store=store, size=48, progress=False)


def test_mpp_patches_use_the_slides_mpp(slide_path: Path, tmp_path: Path) -> None:
    adata = _adata(slide_path, n=20)
    cache = extract_patches(adata, store=tmp_path / "p.zarr", size=32, mpp=1.0, progress=False)
    # uns mpp 0.5 -> 64 level-0 px per patch, exactly level 1 of the pyramid.
    slide = open_slide(slide_path, mpp=0.5)
    np.testing.assert_array_equal(
        cache.patches[:], slide.read_patches(adata.obsm["spatial"], size=32, mpp=1.0)
    )
    assert cache.attrs["mpp"] == 1.0 and cache.attrs["slide_mpp"] == 0.5


def test_stain_normaliser_is_applied_and_recorded(slide_path: Path, tmp_path: Path) -> None:
    xy, ids = _spots(30)
    raw = tile_slide(slide_path, xy, ids, store=tmp_path / "a.zarr", size=32, progress=False)
    norm = tile_slide(
        slide_path,
        xy,
        ids,
        store=tmp_path / "b.zarr",
        size=32,
        stain_normalizer=Invert(),
        progress=False,
    )
    np.testing.assert_array_equal(norm.patches[:], 255 - raw.patches[:])
    assert norm.attrs["stain_normalization"] == {"method": "invert", "params": {"k": 255.0}}


def test_interrupted_run_resumes_to_an_identical_cache(slide_path: Path, tmp_path: Path) -> None:
    xy, ids = _spots(100)
    kw = {"size": 32, "chunk_patches": 8, "batch_chunks": 1, "progress": False, "key": "k"}
    clean = tmp_path / "clean.zarr"
    tile_slide(slide_path, xy, ids, store=clean, stain_normalizer=Invert(), **kw)
    broken = tmp_path / "broken.zarr"
    with pytest.raises(RuntimeError, match="injected"):
        tile_slide(slide_path, xy, ids, store=broken, stain_normalizer=Invert(fail_after=5), **kw)
    with pytest.raises(CacheMismatchError, match="incomplete"):
        open_patch_cache(broken)
    import zarr

    done = np.asarray(zarr.open_group(str(broken / "k"), mode="r")["done"][:])
    assert 0 < done.sum() < len(done)
    resumed = Invert()
    tile_slide(slide_path, xy, ids, store=broken, stain_normalizer=resumed, **kw)
    assert resumed.calls == len(done) - done.sum()  # only the missing chunks were redone
    assert _tree(broken) == _tree(clean)


def _interrupted(slide_path: Path, store: Path, kw: dict) -> None:
    with pytest.raises(RuntimeError, match="injected"):
        tile_slide(
            slide_path, *_spots(100), store=store, stain_normalizer=Invert(fail_after=5), **kw
        )


def test_resume_removes_writes_cut_short_by_a_kill(slide_path: Path, tmp_path: Path) -> None:
    # Regression: zarr writes each chunk to "<chunk>.<uuid hex>.partial" and renames it; a SIGKILL
    # between the two leaves that temp file behind, and the resumed store then differed from a
    # clean run by exactly that file (the flaky SIGKILL test below).
    kw = {"size": 32, "chunk_patches": 8, "batch_chunks": 1, "progress": False, "key": "k"}
    clean = tmp_path / "clean.zarr"
    tile_slide(slide_path, *_spots(100), store=clean, stain_normalizer=Invert(), **kw)
    broken = tmp_path / "broken.zarr"
    _interrupted(slide_path, broken, kw)
    chunk = broken / "k" / "patches" / "c" / "9" / "0" / "0" / "0"
    assert not chunk.exists()  # not written before the failure
    stray = chunk.with_suffix(".0123456789abcdef0123456789abcdef.partial")
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"half a chunk")
    (broken / "k" / "done" / "c.fedcba9876543210fedcba9876543210.partial").write_bytes(b"\0")
    tile_slide(slide_path, *_spots(100), store=broken, stain_normalizer=Invert(), **kw)
    assert _tree(broken) == _tree(clean)


def test_resume_redoes_a_cache_with_unreadable_bookkeeping(
    slide_path: Path, tmp_path: Path
) -> None:
    # Stores that write in place (no temp file + rename) can be killed mid-way through the small
    # "done"/"in_bounds" arrays; the resume must not trust (or crash on) them.
    kw = {"size": 32, "chunk_patches": 8, "batch_chunks": 1, "progress": False, "key": "k"}
    clean = tmp_path / "clean.zarr"
    tile_slide(slide_path, *_spots(100), store=clean, stain_normalizer=Invert(), **kw)
    for name in ("done", "in_bounds"):
        broken = tmp_path / f"broken_{name}.zarr"
        _interrupted(slide_path, broken, kw)
        (broken / "k" / name / "c" / "0").write_bytes(b"\x28\xb5\x2f")  # a cut zstd frame
        resumed = Invert()
        tile_slide(slide_path, *_spots(100), store=broken, stain_normalizer=resumed, **kw)
        assert resumed.calls == 13  # everything redone: nothing is known to be written
        assert _tree(broken) == _tree(clean)


def _tile_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "mclstexp.cli.tile", *args]


def test_killed_cli_run_resumes_to_an_identical_cache(tmp_path: Path) -> None:
    slide = _synthetic_slide(tmp_path / "big.tif", 2048, 2048, seed=3)
    rng = np.random.default_rng(5)
    xy = rng.uniform(0, 2048, size=(1600, 2))
    spots = tmp_path / "spots.csv"
    spots.write_text("id,x,y\n" + "".join(f"p{i},{x},{y}\n" for i, (x, y) in enumerate(xy)))
    args = ["--spots", str(spots), "--patch-size", "48", "--chunk-patches", "4", "--threads", "1"]
    killed = tmp_path / "killed.zarr"
    proc = subprocess.Popen(
        _tile_cmd(str(slide), "--out", str(killed), "--quiet", *args),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    chunk_dir = killed / "big" / "patches" / "c"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if chunk_dir.exists() and sum(1 for _ in chunk_dir.iterdir()) >= 40:
            break
        time.sleep(0.01)
    if proc.poll() is not None:
        pytest.skip("the run finished before it could be killed (machine too fast)")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    import zarr

    assert zarr.open_group(str(killed / "big"), mode="r").attrs["complete"] is False
    out = subprocess.run(
        _tile_cmd(str(slide), "--out", str(killed), "--quiet", *args),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    clean = tmp_path / "clean.zarr"
    out = subprocess.run(
        _tile_cmd(str(slide), "--out", str(clean), "--quiet", *args),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert _tree(killed) == _tree(clean)


@pytest.mark.realdata
def test_cli_end_to_end(slide_path: Path, tmp_path: Path, shared_data: Path) -> None:
    jpeg = next((shared_data / "her2st/data/ST-imgs/C/C3").glob("*.jpg"))
    her2st_spots = shared_data / "her2st/data/ST-spotfiles/C3_selection.tsv"
    xy, ids = _spots(50)
    csv = tmp_path / "spots.csv"
    csv.write_text(
        "id,x,y\n" + "".join(f"{i},{x},{y}\n" for i, (x, y) in zip(ids, xy, strict=True))
    )
    store = tmp_path / "out.zarr"
    argv = [str(slide_path), str(jpeg), "--spots", str(csv), str(her2st_spots)]
    argv += ["--out", str(store), "--patch-size", "64", "--threads", "2"]
    code = (
        "import sys; from mclstexp.cli.tile import main; "
        f"rc = main({argv!r}); print('torch' in sys.modules); sys.exit(rc)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    summary = re.search(
        r"slides: (\d+), patches: (\d+), out of bounds: (\d+), seconds: ([\d.]+), "
        r"patches/s: ([\d.]+)",
        out.stdout,
    )
    assert summary is not None, out.stdout
    import pandas as pd

    n_her2st = int((pd.read_csv(her2st_spots, sep="\t")["selected"] == 1).sum())
    assert int(summary.group(1)) == 2 and int(summary.group(2)) == 50 + n_her2st
    assert out.stdout.strip().splitlines()[-1] == "False"  # torch was not imported
    synth = open_patch_cache(store, "synth")
    assert synth.spot_ids.tolist() == ids
    assert int(summary.group(3)) == int((~synth.in_bounds).sum()) + int(
        (~open_patch_cache(store, jpeg.stem).in_bounds).sum()
    )
    c3 = open_patch_cache(store, jpeg.stem)
    assert len(c3) == n_her2st and re.fullmatch(r"\d+x\d+", c3.spot_ids[0])
    # Grid mode on the synthetic slide (colourful everywhere, so the grid covers it).
    out = subprocess.run(
        _tile_cmd(str(slide_path), "--grid", "--out", str(tmp_path / "g.zarr"), "--quiet"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert len(open_patch_cache(tmp_path / "g.zarr")) == (1536 // 224) * (1280 // 224)
    # Errors are reported, not raised.
    out = subprocess.run(
        _tile_cmd(str(tmp_path / "missing.svs"), "--grid", "--out", str(tmp_path / "x.zarr")),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "missing.svs" in out.stderr


def test_dask_local_two_workers_two_slides(slide_path: Path, tmp_path: Path) -> None:
    pytest.importorskip("dask.distributed")
    other = _synthetic_slide(tmp_path / "other.tif", 800, 600, seed=1)
    xy, ids = _spots(40)
    csv = tmp_path / "spots.csv"
    csv.write_text(
        "id,x,y\n" + "".join(f"{i},{x},{y}\n" for i, (x, y) in zip(ids, xy, strict=True))
    )
    store = tmp_path / "d.zarr"
    out = subprocess.run(
        _tile_cmd(
            str(slide_path),
            str(other),
            "--spots",
            str(csv),
            str(csv),
            "--out",
            str(store),
            "--patch-size",
            "32",
            "--dask",
            "local",
            "--dask-workers",
            "2",
            "--quiet",
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "slides: 2, patches: 80" in out.stdout
    for key, path in (("synth", slide_path), ("other", other)):
        cache = open_patch_cache(store, key)
        np.testing.assert_array_equal(cache.patches[:], open_slide(path).read_patches(xy, size=32))


def test_read_spots_formats(slide_path: Path, tmp_path: Path) -> None:
    from mclstexp.io import read_spots

    csv = tmp_path / "a.csv"
    csv.write_text("barcode,x,y\nA,1.5,2\nB,3,4\n")
    xy, ids = read_spots(csv)
    assert ids == ["A", "B"] and xy.tolist() == [[1.5, 2.0], [3.0, 4.0]]
    tsv = tmp_path / "b.tsv"
    tsv.write_text("x\ty\n5\t6\n")
    xy, ids = read_spots(tsv)
    assert ids == ["0"] and xy.tolist() == [[5.0, 6.0]]
    her2st = tmp_path / "C1_selection.tsv"
    her2st.write_text(
        "x\ty\tnew_x\tnew_y\tpixel_x\tpixel_y\tselected\n"
        "25\t13\t24.9\t13.0\t6930.58\t3510.24\t1\n"
        "24\t13\t24.0\t13.1\t6674.96\t3517.82\t0\n"
    )
    xy, ids = read_spots(her2st)
    assert ids == ["25x13"] and xy.tolist() == [[6930.58, 3510.24]]
    adata = _adata(slide_path, n=5)
    h5ad = tmp_path / "s.h5ad"
    adata.write_h5ad(h5ad)
    xy, ids = read_spots(h5ad)
    assert ids == list(adata.obs_names)
    np.testing.assert_array_equal(xy, adata.obsm["spatial"])
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="id, x, y"):
        read_spots(bad)


def test_half_created_group_is_recreated(slide_path: Path, tmp_path: Path) -> None:
    """A group the tiler marked as its own, killed before its arrays were made, starts afresh."""
    import zarr

    from mclstexp.pp.patch_cache import FORMAT, FORMAT_VERSION

    store = tmp_path / "h.zarr"
    marker = {"format": FORMAT, "format_version": FORMAT_VERSION, "complete": False}
    zarr.open_group(str(store), mode="a").create_group("k", attributes=marker)
    xy, ids = _spots(10)
    cache = tile_slide(slide_path, xy, ids, store=store, key="k", size=16, progress=False)
    assert cache.complete and len(cache) == 10


def test_a_group_the_tiler_did_not_create_is_never_deleted(
    slide_path: Path, tmp_path: Path
) -> None:
    """Regression (issue #18, item 3): a group named like the slide but without the cache's
    attributes was taken for a half-created cache and deleted, without ``overwrite``."""
    import zarr

    store = tmp_path / "mine.zarr"
    root = zarr.open_group(str(store), mode="a")
    root.create_group("k").create_array("results", shape=(3,), dtype="f8")[:] = [1, 2, 3]
    (tmp_path / "plain.zarr" / "k").mkdir(parents=True)  # a plain folder where the group goes
    (tmp_path / "plain.zarr" / "k" / "notes.txt").write_text("keep me")
    xy, ids = _spots(10)
    for where in (store, tmp_path / "plain.zarr"):
        before = _tree(where)
        with pytest.raises(FileExistsError, match=rf"{where.name}/k.*--overwrite"):
            tile_slide(slide_path, xy, ids, store=where, key="k", size=16, progress=False)
        assert _tree(where) == before
    # Asked to, the tiler replaces it.
    cache = tile_slide(
        slide_path, xy, ids, store=store, key="k", size=16, overwrite=True, progress=False
    )
    assert cache.complete and "results" not in zarr.open_group(str(store / "k"), mode="r")


def _damage(store: Path, chunk: int, how: str) -> Path:
    path = store / "k" / "patches" / "c" / str(chunk) / "0" / "0" / "0"
    data = path.read_bytes()
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:  # same size, other bytes
        mid = len(data) // 2
        path.write_bytes(
            data[:mid] + bytes(b ^ 0x5A for b in data[mid : mid + 64]) + data[mid + 64 :]
        )
    return path


def test_a_damaged_complete_cache_is_repaired_on_rerun(slide_path: Path, tmp_path: Path) -> None:
    """Regression (issue #18, item 7): with a chunk file deleted (or cut short), a rerun of the
    tiler reused the complete cache and the patches read back as zeros (or failed to decode)."""
    from mclstexp.exceptions import DataWarning

    kw = {"size": 32, "chunk_patches": 8, "progress": False, "key": "k"}
    clean = tmp_path / "clean.zarr"
    tile_slide(slide_path, *_spots(100), store=clean, stain_normalizer=Invert(), **kw)
    for how in ("delete", "truncate"):
        store = tmp_path / f"{how}.zarr"
        tile_slide(slide_path, *_spots(100), store=store, stain_normalizer=Invert(), **kw)
        _damage(store, 3, how), _damage(store, 11, how)
        with pytest.raises(CacheMismatchError, match=r"c/3/0/0/0.*re-run the tiler"):
            open_patch_cache(store)
        redo = Invert()
        with pytest.warns(DataWarning, match=r"2 damaged chunks.*c/3/0/0/0.*c/11/0/0/0"):
            tile_slide(slide_path, *_spots(100), store=store, stain_normalizer=redo, **kw)
        assert redo.calls == 1  # both damaged chunks, in one batch; nothing else redone
        assert _tree(store) == _tree(clean)


def test_reads_name_a_chunk_whose_bytes_changed(slide_path: Path, tmp_path: Path) -> None:
    from mclstexp.pp.patch_cache import ChunkReader

    store = tmp_path / "p.zarr"
    kw = {"size": 32, "chunk_patches": 8, "progress": False, "key": "k"}
    cache = tile_slide(slide_path, *_spots(100), store=store, **kw)
    path = _damage(store, 2, "flip")  # same size: only the checksum can tell
    assert cache.verify() == [path]
    reader = ChunkReader.maybe(cache.patches)
    assert reader is not None
    with pytest.raises(ValueError, match=r"c/2/0/0/0: .*checksum"):
        reader.take(np.array([17]))
    with pytest.raises(ValueError, match=r"c/2/0/0/0"):
        cache[16:24]
    np.testing.assert_array_equal(reader.take(np.array([40])), cache.patches[40:41])


def test_a_cache_of_another_format_version_is_refused_clearly(
    slide_path: Path, tmp_path: Path
) -> None:
    import json

    store = tmp_path / "p.zarr"
    kw = {"size": 32, "chunk_patches": 8, "progress": False, "key": "k"}
    tile_slide(slide_path, *_spots(20), store=store, **kw)
    meta_path = store / "k" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"]["format_version"] = 1
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CacheMismatchError, match=r"format_version 1 .*--overwrite"):
        tile_slide(slide_path, *_spots(20), store=store, **kw)
    with pytest.raises(CacheMismatchError, match=r"format_version 1"):
        open_patch_cache(store)


def test_a_cache_with_a_deleted_array_is_refused(slide_path: Path, tmp_path: Path) -> None:
    """Regression (sweep #59): a complete cache whose ``spot_ids`` array was deleted opened
    without error (a later read failed with a bare KeyError); a rerun of the tiler reused it."""
    import shutil

    store = tmp_path / "p.zarr"
    kw = {"size": 32, "chunk_patches": 8, "progress": False, "key": "k"}
    tile_slide(slide_path, *_spots(20), store=store, **kw)
    shutil.rmtree(store / "k" / "spot_ids")
    with pytest.raises(CacheMismatchError, match=r"p\.zarr/k: .*'spot_ids'.*--overwrite"):
        open_patch_cache(store)
    with pytest.raises(CacheMismatchError, match=r"p\.zarr/k: .*'spot_ids'.*--overwrite"):
        tile_slide(slide_path, *_spots(20), store=store, **kw)
    cache = tile_slide(slide_path, *_spots(20), store=store, overwrite=True, **kw)
    assert list(open_patch_cache(store).spot_ids) == list(cache.spot_ids) == _spots(20)[1]


@pytest.mark.parametrize("where", ["store", "group", "array"])
def test_a_garbage_zarr_json_is_named(slide_path: Path, tmp_path: Path, where: str) -> None:
    """Regression (sweep #57, #62, #148, #54): a zarr.json that is not JSON gave a bare
    JSONDecodeError ("Expecting value: line 1 column 1") from open_patch_cache and
    ``mclstexp embed``, and the tiler's refusal did not say which file was unreadable."""
    store = tmp_path / "p.zarr"
    kw = {"size": 32, "chunk_patches": 8, "progress": False, "key": "k"}
    tile_slide(slide_path, *_spots(20), store=store, **kw)
    folder = {"store": store, "group": store / "k", "array": store / "k" / "coords"}[where]
    (folder / "zarr.json").write_text("{broken")
    named = rf"{re.escape(str(folder / 'zarr.json'))}: not a readable Zarr metadata file"
    with pytest.raises(CacheMismatchError, match=named):
        open_patch_cache(store, "k")
    if where == "store":
        from mclstexp.pp import cache_keys

        with pytest.raises(CacheMismatchError, match=named):
            cache_keys(store)
    if where == "group":
        with pytest.raises(FileExistsError, match=rf"{named}.*--overwrite"):
            tile_slide(slide_path, *_spots(20), store=store, **kw)


def test_no_slide_path_names_the_file_the_spots_came_from(tmp_path: Path) -> None:
    """Regression (sweep #93, #134): ``mclstexp train/predict --h5ad noslide.h5ad`` said only
    "adata: no slide path" without naming the .h5ad file."""
    adata = _adata(tmp_path / "x.tif", n=5)
    adata.uns["mclstexp"] = {"source": {"h5ad": str(tmp_path / "noslide.h5ad")}}
    with pytest.raises(ValueError, match=r"adata \(read from \S*noslide\.h5ad\): no slide path"):
        extract_patches(adata, store=tmp_path / "p.zarr", progress=False)
    del adata.uns["mclstexp"]
    with pytest.raises(ValueError, match=r"^adata: no slide path"):
        extract_patches(adata, store=tmp_path / "p.zarr", progress=False)
