"""Ordinary user errors give one line and exit status 2 from every command, never a traceback.

Regression for issue #18, item 10: every ``mclstexp`` subcommand and ``mclstexp-tile`` printed
Python tracebacks for user errors (a directory as the slide, an output path under a regular file,
empty or header-only spot files, NaN or duplicate spot ids without the row, a garbage predictions
file without its name, ``--level -1`` giving ``OverflowError``...), a header-only spots file was
tiled into an empty cache and an all-zero truth scored ``acg: nan`` with exit status 0. One
handler (:func:`mclstexp.cli.main.run_handled`) now turns ``MclstexpError``, ``OSError`` and
``ValueError`` into ``PROG: error: MESSAGE`` and status 2 (``--debug`` / ``MCLSTEXP_DEBUG=1``:
the traceback).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mclstexp.cli.main import main
from mclstexp.cli.tile import main as tile_main

tifffile = pytest.importorskip("tifffile")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    img = rng.integers(60, 200, (256, 256, 3), dtype=np.uint8)
    tifffile.imwrite(d / "slide.tif", img, tile=(64, 64), photometric="rgb")
    rows = [f"s{i},{40 + 10 * i},{50 + 12 * i}" for i in range(8)]
    (d / "spots.csv").write_text("id,x,y\n" + "\n".join(rows) + "\n")
    (d / "empty.csv").write_text("")
    (d / "header.csv").write_text("id,x,y\n")
    nan = list(rows)
    nan[2] = "s2,nan,74"
    (d / "nan.csv").write_text("id,x,y\n" + "\n".join(nan) + "\n")
    dup = list(rows)
    dup[4] = "s1,80,98"
    (d / "dup.csv").write_text("id,x,y\n" + "\n".join(dup) + "\n")
    text = list(rows)
    text[3] = "s3,abc,86"
    (d / "text.csv").write_text("id,x,y\n" + "\n".join(text) + "\n")
    (d / "afile").write_text("a regular file\n")
    (d / "folder.svs").mkdir()
    tifffile.imwrite(d / "blank.tif", np.full((64, 64, 3), 250, np.uint8), photometric="rgb")
    (d / "garbage.h5ad").write_text("not hdf5\n" * 10)
    (d / "garbage.npz").write_bytes(b"garbage" * 50)
    return d


def _tile(data: Path, *extra: str, spots: str = "spots.csv", slide: str = "slide.tif") -> list:
    out = data / "out.zarr"
    return [str(data / slide), "--spots", str(data / spots), "--out", str(out), "--quiet", *extra]


TILE = {
    "a folder as the slide": (dict(slide="folder.svs"), r"folder\.svs"),
    "an empty spots file": (dict(spots="empty.csv"), r"empty\.csv: not a spot table"),
    "a header-only spots file": (dict(spots="header.csv"), r"header\.csv: no spots"),
    "a NaN coordinate": (dict(spots="nan.csv"), r"nan\.csv: row 3 \(spot 's2'\): x and y"),
    "a duplicate spot id": (dict(spots="dup.csv"), r"dup\.csv: row 5 \(spot 's1'\): .* row 2"),
    "text as a coordinate": (dict(spots="text.csv"), r"text\.csv: row 4 \(spot 's3'\).*'abc'"),
    "--level -1": (dict(extra=("--level", "-1")), r"level: must be >= 0, got -1"),
    "--patch-size 100000": (dict(extra=("--patch-size", "100000")), r"size: must be in \[1, "),
    "a store that is a file": (dict(extra=("--out", "AFILE")), r"afile"),
    "an output under a file": (dict(extra=("--out", "AFILE/p.zarr")), r"afile/p\.zarr"),
    # sweep #31/#33: a negative slide mpp or thread count was accepted and tiled silently
    "--slide-mpp -1": (dict(extra=("--slide-mpp", "-1")), r"slide_mpp: must be a positive"),
    "--slide-mpp nan": (dict(extra=("--slide-mpp", "nan")), r"slide_mpp: must be a positive"),
    "--threads -1": (dict(extra=("--threads", "-1")), r"n_threads: must be >= 1"),
    "--threads 0": (dict(extra=("--threads", "0")), r"n_threads: must be >= 1"),
    # sweep #38: "too little tissue" without the image's name
    "a blank --stain-target": (
        dict(extra=("--stain-normalize", "macenko", "--stain-target", "DATA/blank.tif")),
        r"blank\.tif: cannot fit a Macenko target .*too little tissue",
    ),
    # a local dask cluster of 0 workers waited forever for one
    "--dask-workers 0": (
        dict(extra=("--dask", "local", "--dask-workers", "0")),
        r"--dask-workers: must be >= 1, got 0",
    ),
}


@pytest.mark.parametrize("case", list(TILE))
@pytest.mark.parametrize("command", ["mclstexp-tile", "mclstexp tile"])
def test_tile_user_errors_are_one_line_and_status_2(
    data: Path, case: str, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    kw, match = TILE[case]
    extra = [
        str(data / "afile") + e[5:]
        if e.startswith("AFILE")
        else str(data / e[5:])
        if e.startswith("DATA/")
        else e
        for e in kw.get("extra", ())
    ]
    args = _tile(
        data, *extra, spots=kw.get("spots", "spots.csv"), slide=kw.get("slide", "slide.tif")
    )
    code = tile_main(args) if command == "mclstexp-tile" else main(["tile", *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"{command}: error: "), err
    import re

    assert re.search(match, err), err
    assert not (data / "out.zarr" / "slide").exists()  # nothing was tiled


def test_debug_shows_the_traceback(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = _tile(data, spots="header.csv")
    with pytest.raises(ValueError, match="no spots"):
        tile_main([*args, "--debug"])
    with pytest.raises(ValueError, match="no spots"):
        main(["--debug", "tile", *args])
    with pytest.raises(ValueError, match="no spots"):
        main(["tile", *args, "--debug"])
    monkeypatch.setenv("MCLSTEXP_DEBUG", "1")
    with pytest.raises(ValueError, match="no spots"):
        main(["tile", *args])


def _one_line(capsys: pytest.CaptureFixture[str], prog: str, match: str) -> None:
    import re

    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if "Warning" not in line]
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: ") and re.search(match, lines[0]), err


def test_evaluate_names_a_garbage_predictions_file_and_refuses_an_all_zero_truth(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import anndata as ad
    import pandas as pd

    assert (
        main(["evaluate", str(data / "garbage.h5ad"), "--truth", str(data / "garbage.h5ad")]) == 2
    )
    _one_line(capsys, "mclstexp evaluate", r"garbage\.h5ad: not a readable \.h5ad file")
    assert main(["evaluate", str(tmp_path / "nope.h5ad"), "--truth", str(data / "nope.h5ad")]) == 2
    _one_line(capsys, "mclstexp evaluate", r"nope\.h5ad")
    ids, genes = [f"s{i}" for i in range(30)], [f"G{j}" for j in range(4)]
    grid = {"array_row": np.arange(30) // 6, "array_col": np.arange(30) % 6}
    truth = ad.AnnData(
        np.zeros((30, 4), np.float32),
        obs=pd.DataFrame(grid, index=ids),
        var=pd.DataFrame(index=genes),
    )
    truth.obsm["spatial"] = np.stack([np.arange(30) * 10.0, np.arange(30) * 7.0], 1)
    truth.write_h5ad(tmp_path / "zero.h5ad")
    pred = ad.AnnData(
        np.random.default_rng(0).random((30, 4)).astype(np.float32),
        obs=pd.DataFrame(index=ids),
        var=pd.DataFrame(index=genes),
    )
    pred.write_h5ad(tmp_path / "pred.h5ad")
    assert (
        main(["evaluate", str(tmp_path / "pred.h5ad"), "--truth", str(tmp_path / "zero.h5ad")]) == 2
    )
    _one_line(capsys, "mclstexp evaluate", r"zero\.h5ad: .*constant")
    pred.X[3, 1] = np.nan
    pred.write_h5ad(tmp_path / "nan.h5ad")
    assert (
        main(["evaluate", str(tmp_path / "nan.h5ad"), "--truth", str(tmp_path / "zero.h5ad")]) == 2
    )
    _one_line(capsys, "mclstexp evaluate", r"nan\.h5ad: .*spot 's3'")


def test_predict_train_and_run_refuse_user_errors_in_one_line(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["predict", "--h5ad", str(data / "garbage.h5ad"), "--out", str(tmp_path / "p.h5ad")]
    assert main([*base, "--model", str(tmp_path / "nope")]) == 2
    _one_line(capsys, "mclstexp predict", r"model file not found.*nope")
    model = tmp_path / "m"
    model.mkdir()
    (model / "model.pt").write_bytes(b"garbage")
    assert main([*base, "--model", str(model), "--reference", str(data / "garbage.npz")]) == 2
    _one_line(capsys, "mclstexp predict", r"m/model\.pt")
    assert main([*base, "--model", str(model), "--device", "gpu9"]) == 2
    _one_line(capsys, "mclstexp predict", r"device: 'gpu9'")
    assert main(["train", "--preset", "nope", "--run-dir", str(tmp_path / "r")]) == 2
    _one_line(capsys, "mclstexp train", r"unknown preset 'nope'")
    assert main(["run", "her2st", "--root", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    _one_line(capsys, "mclstexp run", r"nope: no ST-cnts folder")


def test_a_reference_file_that_is_not_one_is_named(data: Path, tmp_path: Path) -> None:
    from mclstexp.tl.reference import Reference

    half = tmp_path / "half.npz"
    np.savez(half, header=np.array("{}"), embeddings=np.zeros((2, 2), np.float32))
    half.write_bytes(half.read_bytes()[:100])
    for path in (data / "garbage.npz", half):
        with pytest.raises(ValueError, match=rf"{path.name}: not a readable reference file"):
            Reference.load(path)


def test_embed_names_a_garbage_zarr_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression (sweep #148): ``mclstexp embed`` on a folder whose zarr.json is garbage said
    only "Expecting value: line 1 column 1 (char 0)" (after loading the encoder)."""
    store = tmp_path / "notazarr.zarr"
    store.mkdir()
    (store / "zarr.json").write_text("garbage")
    argv = ["embed", str(store), "--device", "cpu", "--quiet", "--preset", "cpu"]
    assert main([*argv, "--weights", str(tmp_path / "nope.pt")]) == 2
    _one_line(
        capsys, "mclstexp embed", r"notazarr\.zarr/zarr\.json: not a readable Zarr metadata file"
    )
