"""The README's command examples run (regression for issue #18, item 12).

``mclstexp predict --model ... --grid slide.svs --out dense.h5ad --plot-genes ERBB2 CD74`` from
the README raised a traceback after the prediction was written, because ERBB2 is not in the
her2st panel. This test reads every fenced ``bash`` block of README.md and runs each command that
can run here, in a temporary folder, with the README's placeholder paths substituted by synthetic
data: five small synthetic sections written in the her2st layout as C2..C6 (their genes renamed to
the first names of the her2st panel, which holds CD74 but not ERBB2, as the real panel), their
slides, a spots table and a stain target cut from them. Options that only make a command small
(fewer sections, spots or epochs, the ``cpu`` preset instead of ``default``) are appended or
substituted and listed in :data:`SMALLER`; paths in :data:`PATHS`.

Commands that cannot run here (:data:`NOT_RUN`, each with its reason) are parsed by the real
argument parser instead when they are ``mclstexp`` commands (so a renamed flag in the README still
fails), or only listed otherwise: ``pip install`` (changes the environment, needs the network),
``pytest`` (this suite), ``torchrun`` (four processes; tests/test_train_ddp.py covers DDP), the
wheel builds and checks (.ci/run does them), the GPU node's commands, and commands that need a
CUDA GPU, published weights or data from the hub, or an hour of training.
"""

from __future__ import annotations

import re
import shlex
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from mclstexp.cli.main import build_parser, main
from mclstexp.cli.tile import build_parser as tile_parser
from mclstexp.cli.tile import main as tile_main

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[1] / "README.md"
SECTIONS = ["C2", "C3", "C4", "C5", "C6"]

#: README placeholder -> file or folder of the synthetic data (relative to the temporary folder).
PATHS = {
    "slide.svs": "slide.tif",
    "spots.csv": "spots.csv",
    "cache.zarr": "cache.zarr",
    "target.png": "target.png",
    "DATA": "her2st",
    "../shared/data/her2st": "her2st",
    "runs/c6": "runs/c6",
    "new.h5ad": "new.h5ad",
    "pred.h5ad": "pred.h5ad",
    "dense.h5ad": "dense.h5ad",
}
#: Changes that only make a command small, by the command's first words.
SMALLER: dict[str, tuple[dict[str, str], list[str]]] = {
    # (replaced option values, appended options)
    "mclstexp run": (
        {},
        [
            "--n-sections",
            "2",
            "--n-spots",
            "40",
            "--epochs",
            "1",
            "--k",
            "10",
            "--no-plots",
            "--out",
            "runs/synthetic",
            "--root",
            "synthetic",
        ],
    ),
    "mclstexp run her2st": (
        {},
        [
            "--sections",
            "C2",
            "C3",
            "--epochs",
            "1",
            "--k",
            "10",
            "--no-plots",
            "--out",
            "runs/her2st",
        ],
    ),
    "mclstexp-tile": ({"--threads": "2"}, []),
    "mclstexp train": ({"--preset": "cpu"}, ["--epochs", "1", "--no-progress"]),
    "mclstexp predict": ({}, ["--k", "10", "--device", "cpu"]),
    "mclstexp bench retrieval": (
        {},
        [
            "--n",
            "2000",
            "--q",
            "32",
            "--backends",
            "native",
            "numpy",
            "--repeat",
            "1",
            "--out",
            "runs/bench",
        ],
    ),
}
#: Commands not run, by their first words (see the module docstring); "parse": parsed instead.
NOT_RUN = {
    "pip install": "changes the environment and needs the network",
    "python3 -m pip install": "on the GPU node, installs wheels",
    "pytest": "this test suite",
    "torchrun": "needs torchrun with four processes",
    "maturin build": "builds the extension",
    "maturin sdist": "builds the source distribution (.ci/run does)",
    "auditwheel show": "checks a built wheel (.ci/run does)",
    "abi3audit": "checks a built wheel (.ci/run does)",
    "benches/gpu/prepare.sh": "builds the wheels for the GPU node (minutes)",
    "hf download": "needs the network",
    "mclstexp run her2st --root DATA --holdout C3": "parse",  # a CUDA GPU
    "mclstexp run her2st --root DATA --preset paper": "parse",  # a CUDA GPU, ImageNet weights
    "mclstexp run her2st --root DATA --preset fm": "parse",  # a CUDA GPU, hub weights
    "mclstexp embed": "parse",  # the preset's encoder weights from the hub
    "mclstexp train --her2st DATA --sections C2 C3 C4 --preset fm": "parse",  # a weights file
    "mclstexp bench fidelity": "parse",  # about an hour
    "mclstexp bench hest": "parse",  # HEST-Benchmark and published weights from the hub
    "mclstexp bench gpu": "parse",  # tests/test_bench_gpu.py runs the CPU smoke mode
}


def readme_commands() -> list[str]:
    """Every command of the README's ``bash`` blocks: continuations joined, comments dropped,
    ``a && b`` split."""
    text = README.read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("#"):
                continue
            commands += [part.strip() for part in line.split("&&") if part.strip()]
    return commands


def _bare(command: str) -> str:
    """``command`` without leading ``NAME=value`` environment settings, and ``python3 -m
    mclstexp`` written as ``mclstexp``."""
    words = command.split()
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
        words = words[1:]
    if words[:3] == ["python3", "-m", "mclstexp"]:
        words = ["mclstexp", *words[3:]]
    return " ".join(words)


def _key(command: str, table: dict) -> str | None:
    """The longest key of ``table`` that starts ``command`` (see :func:`_bare`)."""
    command = _bare(command)
    hits = [k for k in table if command == k or command.startswith(k + " ")]
    return max(hits, key=len) if hits else None


def _write_her2st(root: Path, tmp: Path) -> None:
    """Five synthetic sections as her2st C2..C6 (counts, spot files, JPEG images)."""
    import pandas as pd
    from PIL import Image

    from mclstexp.datasets import synthetic
    from mclstexp.io import open_slide

    panel = Path(__file__).resolve().parents[1] / "python/mclstexp/data/panels/her2st_785.txt"
    names = [*[g for g in panel.read_text().split() if g != "CD74"][:49], "CD74"]
    sections = synthetic(tmp / "syn5", n_sections=5, n_spots=40, seed=1)
    for name, adata in zip(SECTIONS, sections, strict=True):
        counts = np.asarray(adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X)
        cnts = pd.DataFrame(np.rint(counts).astype(int), index=adata.obs_names, columns=names)
        (root / "data/ST-cnts").mkdir(parents=True, exist_ok=True)
        cnts.to_csv(root / f"data/ST-cnts/{name}.tsv.gz", sep="\t")
        xy = np.asarray(adata.obsm["spatial"])
        spots = pd.DataFrame(
            {
                "x": adata.obs["array_col"].to_numpy(),
                "y": adata.obs["array_row"].to_numpy(),
                "new_x": adata.obs["array_col"].to_numpy(dtype=float),
                "new_y": adata.obs["array_row"].to_numpy(dtype=float),
                "pixel_x": xy[:, 0],
                "pixel_y": xy[:, 1],
                "selected": 1,
            }
        )
        (root / "data/ST-spotfiles").mkdir(parents=True, exist_ok=True)
        spots.to_csv(root / f"data/ST-spotfiles/{name}_selection.tsv", sep="\t", index=False)
        folder = root / "data/ST-imgs/C" / name
        folder.mkdir(parents=True, exist_ok=True)
        with open_slide(adata.uns["mclstexp"]["slide_path"]) as slide:
            pixels = slide.read_region((0, 0), 0, slide.dimensions)
        Image.fromarray(pixels).save(folder / f"{name}.jpg", quality=92)
        if name == "C6":  # the slide of `--grid slide.svs`, as a TIFF
            import shutil

            shutil.copy(adata.uns["mclstexp"]["slide_path"], tmp / PATHS["slide.svs"])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The temporary folder the commands run in, holding the substituted files."""
    from PIL import Image

    from mclstexp.io import open_slide, read_her2st

    tmp = tmp_path_factory.mktemp("readme")
    _write_her2st(tmp / "her2st", tmp)
    c6 = read_her2st(tmp / "her2st", "C6")
    c6.write_h5ad(tmp / "new.h5ad")
    xy = np.asarray(c6.obsm["spatial"])
    rows = "".join(f"{i},{x},{y}\n" for i, (x, y) in zip(c6.obs_names, xy, strict=True))
    (tmp / "spots.csv").write_text("id,x,y\n" + rows)
    with open_slide(tmp / PATHS["slide.svs"]) as slide:
        x, y = (int(v) for v in xy.mean(axis=0))
        target = slide.read_region((x - 200, y - 200), 0, (400, 400))
    Image.fromarray(target).save(tmp / "target.png")
    return tmp


def _substituted(command: str, tmp: Path) -> list[str]:
    words = shlex.split(command)
    out = [str(tmp / PATHS[w]) if w in PATHS else w for w in words]
    key = _key(command, SMALLER)
    if key is not None:
        replace, extra = SMALLER[key]
        for opt, value in replace.items():
            out[out.index(opt) + 1] = value
        out += [
            str(tmp / e) if e in ("runs/synthetic", "runs/her2st", "runs/bench", "synthetic") else e
            for e in extra
        ]
    return out


def _run(words: list[str]) -> int:
    if words[0] == "mclstexp-tile":
        return tile_main(words[1:])
    assert words[0] == "mclstexp", words
    return main(words[1:])


def test_every_readme_command_is_classified() -> None:
    commands = readme_commands()
    assert any("--plot-genes ERBB2 CD74" in c for c in commands)
    for command in commands:
        runs = command.startswith(("mclstexp ", "mclstexp-tile ")) or command == "mclstexp"
        assert runs or _key(command, NOT_RUN) is not None, f"unclassified: {command}"


def test_commands_that_cannot_run_here_still_parse() -> None:
    for command in readme_commands():
        key = _key(command, NOT_RUN)
        if key is None or NOT_RUN[key] != "parse":
            continue
        words = shlex.split(_bare(command))
        build_parser().parse_args(words[1:])  # SystemExit on an unknown flag
    assert tile_parser().prog == "mclstexp-tile"


def test_readme_commands_run_on_the_synthetic_data(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(workdir)
    ran = []
    for command in readme_commands():
        if _key(command, NOT_RUN) is not None:
            continue
        words = _substituted(command, workdir)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            code = _run(words)
        err = capsys.readouterr().err
        assert code == 0, f"{command}\n-> {shlex.join(words)}\n{err[-3000:]}"
        ran.append(command)
        if "--plot-genes ERBB2 CD74" in command:
            # ERBB2 is not in the panel: named in a warning with the closest names, CD74 drawn
            text = " ".join(str(w.message) for w in seen)
            assert "'ERBB2' (closest:" in text, text
            assert (workdir / "dense.png").is_file()
    assert len(ran) == 9, ran
