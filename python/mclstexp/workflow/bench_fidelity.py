"""The fidelity benchmark: preset x seed, leave-one-section-out, with depth-aware reference rows.

Each (preset, seed) runs in its own spawned process, so its training wall time and peak resident
memory are its own (not the maximum of everything before it in one process). Within a process the
tiles are read from one shared patch cache, so tiling is done once for the whole benchmark.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FIDELITY_METRICS = ("acg", "heg", "hvg", "partial_acg", "partial_heg", "partial_hvg", "mse", "mae")


def _one_run(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Body of one spawned process: load the dataset and run one preset with one seed."""
    import resource

    from mclstexp.workflow.dataset import load_dataset
    from mclstexp.workflow.experiment import run_experiment

    dataset = load_dataset(kwargs["dataset"], root=kwargs["root"], sections=kwargs["sections"])
    started = time.perf_counter()
    result = run_experiment(
        dataset,
        out_dir=kwargs["out_dir"],
        presets=[kwargs["preset"]],
        seeds=[kwargs["seed"]],
        device=kwargs["device"],
        epochs=kwargs["epochs"],
        plots=False,
        progress=False,
        log=lambda *_: None,
        patch_dir=kwargs["patch_dir"],
        baselines=kwargs["baselines"],
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {
        "records": [
            {k: v for k, v in r.items() if not isinstance(v, list | dict)} for r in result.records
        ],
        "runs": result.runs,
        "wall_seconds": time.perf_counter() - started,
        "process_peak_rss_mb": peak,
    }


def _spawned(kwargs: dict[str, Any]) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(_one_run, (kwargs,))


def _speed_text(runs: list[dict[str, Any]]) -> str:
    """Training speed and peak memory per preset, mean and sd over seeds x folds."""
    import pandas as pd

    speed = (
        pd.DataFrame(runs)
        .groupby("preset")[["seconds_per_epoch", "spots_per_second", "process_peak_rss_mb"]]
        .agg(["mean", "std"])
        .round(3)
    )
    return "training speed and memory per preset (mean, sd over seeds x folds):\n" + (
        speed.to_string()
    )


def run_fidelity_bench(
    *,
    dataset: str = "her2st",
    root: str | Path | None = None,
    sections: Sequence[str] | None = None,
    presets: Sequence[str] = ("cpu_legacy", "cpu"),
    seeds: Sequence[int] = (0, 1, 2),
    epochs: int | None = None,
    device: str = "auto",
    out_dir: str | Path = "runs/fidelity",
    log: Any = print,
) -> dict[str, Any]:
    """Run the benchmark; write ``fidelity.{json,csv,png,txt}`` and ``fidelity_runs.csv``.

    Returns
    -------
    dict
        ``records`` (per section x method x target x seed), ``summary`` (mean and sd over
        sections and seeds), ``runs`` (time and memory per preset x seed x fold) and ``table``.

    Examples
    --------
    >>> run_fidelity_bench(root="../shared/data/her2st", seeds=[0])  # doctest: +SKIP
    """
    from mclstexp.workflow.dataset import load_dataset
    from mclstexp.workflow.experiment import tile_dataset
    from mclstexp.workflow.report import format_table, summary_frame

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    spec = load_dataset(dataset, root=root, sections=sections)
    tile_dataset(spec, out_dir / "patches")
    log(f"tiled {len(spec.sections)} sections in {time.perf_counter() - started:.1f} s")
    records: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    for i, (preset, seed) in enumerate((p, s) for p in presets for s in seeds):
        t0 = time.perf_counter()
        part = _spawned(
            {
                "dataset": dataset,
                "root": str(root) if root else None,
                "sections": list(sections) if sections else None,
                "preset": preset,
                "seed": int(seed),
                "epochs": epochs,
                "device": device,
                "out_dir": str(out_dir / f"{Path(preset).stem}-seed{seed}"),
                "patch_dir": str(out_dir / "patches"),
                # The reference rows do not depend on the preset or the training seed (their
                # ridge CV folds are seeded with 0): fit them once, in the first run.
                "baselines": i == 0,
            }
        )
        records.extend(part["records"])
        for run in part["runs"]:
            run["process_peak_rss_mb"] = part["process_peak_rss_mb"]
        runs.extend(part["runs"])
        log(
            f"[{preset} seed={seed}] {time.perf_counter() - t0:.1f} s, "
            f"peak RSS {part['process_peak_rss_mb']:.0f} MB"
        )
    summary = summary_frame(records)
    table = format_table(records)
    meta = {
        "dataset": dataset,
        "sections": spec.section_names,
        "presets": list(presets),
        "seeds": [int(s) for s in seeds],
        "epochs_override": epochs,
        "wall_seconds": time.perf_counter() - started,
    }
    speed_text = _write_outputs(out_dir, meta, records, summary, runs, table)
    return {
        "records": records,
        "summary": summary,
        "runs": runs,
        "table": table,
        "speed": speed_text,
    }


def _write_outputs(
    out_dir: Path,
    meta: dict[str, Any],
    records: list[dict[str, Any]],
    summary: Any,
    runs: list[dict[str, Any]],
    table: str,
) -> str:
    """Write ``fidelity.{json,csv,png,txt}`` and ``fidelity_runs.csv``; return the speed text."""
    import pandas as pd

    from mclstexp.pl import fidelity_summary

    payload = {
        **{k: v for k, v in meta.items() if k != "wall_seconds"},
        "note": (
            "Per-section records; mean and sd over held-out sections x seeds. Targets: "
            "legacy_gene = the original's per-gene normalisation (keeps depth); default = per-spot "
            "library-size-normalised log1p. partial_* = PCC controlling for measured log library "
            "size. library_size_oracle uses the test spots' measured depth (an oracle)."
        ),
        "records": records,
        "summary": json.loads(summary.to_json(orient="records")),
        "runs": runs,
        "wall_seconds": meta["wall_seconds"],
    }
    (out_dir / "fidelity.json").write_text(json.dumps(payload, indent=2, default=float))
    summary.to_csv(out_dir / "fidelity.csv", index=False)
    pd.DataFrame(runs).to_csv(out_dir / "fidelity_runs.csv", index=False)
    fidelity_summary(summary, path=out_dir / "fidelity.png")
    speed_text = _speed_text(runs)
    (out_dir / "fidelity.txt").write_text(table + "\n\n" + speed_text + "\n")
    return speed_text
