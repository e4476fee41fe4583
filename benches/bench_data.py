"""Data-layer benchmarks beside their baselines (pytest benches/bench_data.py --benchmark-only).

- her2st counts: the package's parser (numpy.loadtxt on the rows) vs ``pandas.read_csv`` on the same
  gzipped TSV (C2: 187 spots x 15,706 genes).
- reading a whole her2st section with its image size check (no JPEG decode) vs the naive way
  (pandas + decoding the 92 MP JPEG with Pillow to learn its size).
- synthetic dataset generation (one small section) into a fresh folder.
"""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import pandas as pd
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "her2st" / "data"
pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason=f"real data not found at {SHARED}")


def test_counts_parser_mclstexp(benchmark) -> None:  # type: ignore[no-untyped-def]
    from mclstexp.io.her2st import read_counts_tsv

    _ids, _genes, x = benchmark.pedantic(
        read_counts_tsv, args=(SHARED / "ST-cnts/C2.tsv.gz",), rounds=3, iterations=1
    )
    assert x.shape == (187, 15706)


def test_counts_parser_baseline_pandas(benchmark) -> None:  # type: ignore[no-untyped-def]
    def run() -> pd.DataFrame:
        return pd.read_csv(SHARED / "ST-cnts/C2.tsv.gz", sep="\t", index_col=0)

    df = benchmark.pedantic(run, rounds=3, iterations=1)
    assert df.shape == (187, 15706)


def test_read_section_mclstexp(benchmark) -> None:  # type: ignore[no-untyped-def]
    from mclstexp.io import read_her2st

    a = benchmark.pedantic(read_her2st, args=(SHARED, "C2"), rounds=3, iterations=1)
    assert a.uns["mclstexp"]["slide_path"] is not None


def test_read_section_baseline_decode_image(benchmark) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    def run() -> tuple[pd.DataFrame, tuple[int, int]]:
        df = pd.read_csv(SHARED / "ST-cnts/C2.tsv.gz", sep="\t", index_col=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(next((SHARED / "ST-imgs/C/C2").glob("*.jpg")))
            im.load()
        return df, im.size

    benchmark.pedantic(run, rounds=2, iterations=1)


def test_synthetic_one_section(benchmark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from mclstexp.datasets import synthetic

    counter = itertools.count()

    def run() -> list:
        return synthetic(tmp_path / str(next(counter)), n_sections=1, n_patients=1)

    out = benchmark.pedantic(run, rounds=3, iterations=1)
    assert out[0].n_obs == 200
