"""``mclstexp bench gpu`` in its CPU smoke mode: every step runs, so the GPU check cannot rot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

from mclstexp.cli.main import main
from mclstexp.workflow.bench_gpu import GpuBench, run_gpu_bench


def test_every_step_runs_in_smoke_mode_on_a_cpu(tmp_path: Path) -> None:
    results = run_gpu_bench(device="cpu", smoke=True, out_dir=tmp_path, log=lambda _: None)
    errors = {k: v["error"] for k, v in results.items() if "error" in v}
    assert not errors, errors
    assert not [k for k, v in results.items() if "skipped" in v]
    expected = {
        "environment", "parity_augment", "parity_step", "train_paper_fp32", "train_default_fp32",
        "loader_ram_w0", "loader_zarr_w2", "loader_ram_w2_augment", "embed_retrieval",
        "ddp_gather", "end_to_end", "train_default_bf16_compiled",
    }  # fmt: skip
    assert expected <= set(results)
    for name in ("parity_augment", "parity_step", "ddp_gather"):
        assert results[name]["result"]["ok"], results[name]
    assert results["embed_retrieval"]["result"]["neighbour_overlap"] == 1.0
    assert results["train_default_fp32"]["result"]["spots_per_s"] > 0
    saved = json.loads((tmp_path / "gpu.json").read_text())
    assert set(saved["steps"]) == set(results) and saved["smoke"] is True
    table = (tmp_path / "gpu.txt").read_text()
    assert "parity_step" in table and "ok=True" in table


def test_a_failing_step_is_recorded_and_the_budget_skips(tmp_path: Path) -> None:
    bench = GpuBench("cpu", True, 1000.0, tmp_path, log=lambda _: None)
    bench.step("boom", 0, lambda: 1 / 0)
    bench.step("fine", 0, lambda: {"ok": True})
    bench.step("too_long", 10_000, lambda: {"ok": True})
    assert "ZeroDivisionError" in bench.results["boom"]["error"]
    assert bench.results["fine"]["result"] == {"ok": True}
    assert "budget" in bench.results["too_long"]["skipped"]
    saved = json.loads((tmp_path / "gpu.json").read_text())["steps"]
    assert list(saved) == ["boom", "fine", "too_long"]


def test_the_command_refuses_nothing_and_writes_its_outputs(tmp_path: Path) -> None:
    # a zero budget: every step is skipped, the outputs still say so, the command succeeds
    assert main(["bench", "gpu", "--device", "cpu", "--smoke", "--budget-s", "0", "--out",
                 str(tmp_path)]) == 0  # fmt: skip
    steps = json.loads((tmp_path / "gpu.json").read_text())["steps"]
    assert steps and all("skipped" in v for v in steps.values())


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--budget-s", "-1"], r"budget_s: must be a number of seconds >= 0, got -1"),
        (["--budget-s", "nan"], r"budget_s: must be a number of seconds >= 0, got nan"),
        (["--epochs", "0"], r"epochs: must be >= 1 \(or omitted for the preset's\), got 0"),
    ],
)
def test_the_command_refuses_a_negative_budget_and_zero_epochs_up_front(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], match: str
) -> None:
    """Regression (sweep #163, #164): ``--budget-s -1`` ran and wrote outputs (every step
    skipped) and ``--epochs 0`` ran the preset's full schedule (0 read as "the preset's")."""
    import re

    out = tmp_path / "gpu"
    assert main(["bench", "gpu", "--device", "cpu", "--smoke", *extra, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert re.search(rf"mclstexp bench: error: {match}", err), err
    assert not out.exists()  # refused before anything was written
