"""Model against the colour ridge over independent draws of the synthetic data, paired per section.

One draw of the generator is one dataset; a model can be ahead of a baseline on one draw by the
luck of that draw. This runs ``mclstexp run`` (preset ``cpu``, leave-one-section-out, K chosen on
the training sections) on several generator seeds and reports, per draw, the default-target
PCC-ACG of the model and of ``colour_ridge`` (per held-out section, never pooled, averaged over
the sections and training seeds), their paired difference and the sections the model wins; then
the mean ± sd of the difference over draws and a one-sample t statistic.

Reproduces the README's "Across draws of the data the lead is not significant" paragraph (model
minus ridge per draw, +0.007 ± 0.017 over twelve draws, 7 of 12 won):

    python experiments/synthetic_draws.py --draws 0 1 2 3 4 5 6 7 8 9 10 11 --out runs/draws \\
        --rows 'mclstexp[cpu]' 'mclstexp[cpu]+blend' 'probe[resnet18]'    # about 45 s a draw

A draw whose ``<out>/draw<S>/metrics.csv`` already exists is read, not re-run (``--rerun`` to
force); delete the folder to start over.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

MODEL, RIDGE = "mclstexp[cpu]", "colour_ridge"


def draw_metrics(
    out: Path, draw: int, seeds: list[int], rerun: bool, keep_models: bool = False
) -> pd.DataFrame:
    """The per-section records of one draw (running it when its metrics are not there yet; the
    fold's model files are deleted afterwards unless ``keep_models``)."""
    folder = out / f"draw{draw}"
    csv = folder / "metrics.csv"
    if rerun or not csv.is_file():
        from mclstexp.workflow import load_dataset, run_experiment

        started = time.perf_counter()
        run_experiment(
            load_dataset("synthetic", seed=draw),
            out_dir=folder,
            seeds=seeds,
            plots=False,
            progress=False,
            log=lambda *_: None,
        )
        print(f"draw {draw}: ran in {time.perf_counter() - started:.0f} s", flush=True)
        if not keep_models:  # ~1 GB a draw with the cpu preset's two variants
            for model_file in folder.rglob("*.pt"):
                model_file.unlink()
    records = pd.read_csv(csv)
    return records[(records.target == "default") & records.seed.isin(seeds)]


def paired(records: pd.DataFrame, rows: list[str], ridge: str = RIDGE) -> pd.DataFrame:
    """Per held-out section: the ACG of ``rows`` and of ``ridge``, averaged over seeds."""
    table = records.pivot_table(index="section", columns="method", values="acg", aggfunc="mean")
    missing = {*rows, ridge} - set(table.columns)
    if missing:
        raise SystemExit(f"metrics lack the rows {sorted(missing)}: run with the cpu preset")
    return table[[*rows, ridge]].rename(columns={ridge: RIDGE})


def _t(diffs: np.ndarray) -> str:
    """Mean ± sd over draws, draws ahead, one-sample t."""
    sd = float(diffs.std(ddof=1)) if diffs.size > 1 else float("nan")
    t = float(diffs.mean() / (sd / np.sqrt(diffs.size))) if sd > 0 else float("nan")
    return f"{diffs.mean():+.3f} ± {sd:.3f} (sd), ahead on {int((diffs > 0).sum())}, t = {t:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, nargs="+", default=[0, 1, 2], help="generator seeds")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds")
    parser.add_argument("--out", type=Path, default=Path("runs/draws"), help="run folders")
    parser.add_argument("--rerun", action="store_true", help="re-run draws already on disk")
    parser.add_argument(
        "--rows", nargs="+", default=[MODEL], help=f"rows compared with {RIDGE} (default: {MODEL})"
    )
    parser.add_argument(
        "--against",
        default=RIDGE,
        help=f"the reference row (default {RIDGE}; e.g. {RIDGE}+context)",
    )
    parser.add_argument("--keep-models", action="store_true", help="keep the folds' model files")
    args = parser.parse_args()
    summary = []
    for draw in args.draws:
        records = draw_metrics(args.out, draw, args.seeds, args.rerun, args.keep_models)
        table = paired(records, args.rows, args.against)
        entry: dict[str, object] = {"draw": draw, RIDGE: f"{table[RIDGE].mean():.3f}"}
        for row in args.rows:
            diff = table[row] - table[RIDGE]
            entry[row] = f"{table[row].mean():.3f}"
            entry[f"{row} - ridge"] = float(diff.mean())
            entry[f"{row} won"] = f"{int((diff > 0).sum())}/{len(diff)}"
        summary.append(entry)
    frame = pd.DataFrame(summary)
    diff_cols = [f"{row} - ridge" for row in args.rows]
    print(f"\ndefault target, PCC-ACG per held-out section; training seeds {args.seeds}")
    print(frame.to_string(index=False, formatters={c: "{:+.3f}".format for c in diff_cols}))
    for row in args.rows:
        diffs = frame[f"{row} - ridge"].to_numpy()
        print(f"{row} - {args.against} over {len(frame)} draws: {_t(diffs)}")


if __name__ == "__main__":
    main()
