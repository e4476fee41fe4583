"""``mclstexp bench retrieval`` end to end on a tiny grid, and its engine in the library."""

from __future__ import annotations

import json

import pytest

from mclstexp import _native
from mclstexp.cli.main import main


def test_bench_retrieval_prints_a_table_and_writes_a_plot(tmp_path, capsys) -> None:
    out = tmp_path / "bench"
    status = main(
        [
            "bench",
            "retrieval",
            "--n",
            "300",
            "1200",
            "--q",
            "8",
            "40",
            "--dim",
            "16",
            "--k",
            "5",
            "--backends",
            "native",
            "numpy",
            "faiss",
            "--repeat",
            "1",
            "--out",
            str(out),
        ]
    )
    assert status == 0
    text = capsys.readouterr().out
    assert "GFLOP/s" in text and "x faiss" in text and "recall@k" in text
    assert "numpy BLAS:" in text
    # Which instruction set the native kernels ran is in the output and in the JSON.
    stored = json.loads((out / "results.json").read_text())
    assert f"native SIMD level: {_native.simd_level()}" in text
    assert stored["simd_level"] == _native.simd_level()
    records = stored["records"]
    assert {r["backend"] for r in records} >= {"native", "numpy"}
    assert len({(r["N"], r["Q"]) for r in records}) == 4
    assert all(r["recall"] == 1.0 for r in records if r["backend"] in ("native", "numpy"))
    png = (out / "retrieval_throughput.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_bench_without_kind_prints_help(capsys) -> None:
    assert main(["bench"]) == 2
    assert "retrieval" in capsys.readouterr().out


def test_retrieval_bench_engine_runs_without_the_command_line(tmp_path) -> None:
    from mclstexp.workflow.bench_retrieval import run_retrieval_bench

    lines: list[str] = []
    result = run_retrieval_bench(
        [200], [4], dim=8, k=3, backends=["numpy"], repeat=1, out_dir=tmp_path, log=lines.append
    )
    assert lines[0].startswith("mclstexp bench retrieval: dim=8 k=3")
    assert [r["backend"] for r in result["records"]] == ["native", "numpy"]  # native always runs
    assert result["table"].splitlines()[0].startswith("backend")
    assert result["memory"] is None and result["json"].is_file() and result["plot"].is_file()
    stored = json.loads(result["json"].read_text())
    assert stored["records"] == result["records"] and "memory" not in stored
    with pytest.raises(ValueError, match="k: must be <="):
        run_retrieval_bench([200], [4], k=300, out_dir=tmp_path, log=None)


def test_repeat_0_is_refused(tmp_path, capsys) -> None:
    """Regression (sweep #158): ``--repeat 0`` ran once (read as 1) and succeeded silently."""
    out = tmp_path / "b"
    argv = ["bench", "retrieval", "--n", "200", "--q", "4", "--dim", "8", "--repeat", "0"]
    assert main([*argv, "--out", str(out)]) == 2
    assert "repeat: must be >= 1, got 0" in capsys.readouterr().err
    assert not out.exists()
