"""Development runs for the ``cpu`` preset: candidate configurations scored without reported data.

A configuration (``CONFIGS``: a base preset and overrides) runs ``mclstexp run``'s protocol
(leave-one-section-out, K and heads chosen per fold on the training sections) on development
data only:

- ``--dataset synthetic --draws 100 101 ...``: independent draws of the synthetic generator
  that are never reported (the reported draws are 0-11); the held-out scores of these draws are
  development numbers and are printed (model rows minus ``colour_ridge``, paired per section);
- ``--dataset her2st``: the real sections. Their held-out scores are the reported ones, so this
  script never prints them: it prints the *inner* cross-validation scores of every fold (each
  training section predicted from the others by the fold's model: retrieval at the chosen K,
  the ridge and the blend at their chosen settings), which use the training sections only.

Every run's folder (``--out/<dataset>/<config>``) keeps ``metrics.json``; ``--out/summary.json``
collects one entry per (dataset, draw, config) with the wall time, the 1-minute load average
and the peak RSS; an entry already there is not run again (``--rerun`` to force):

    MCLSTEXP_NUM_THREADS=2 nice -n 10 python experiments/cpu_presets.py --dataset synthetic \\
        --draws 100 101 102 --configs frozen e2e_l4_112
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

#: What every end-to-end candidate overrides: train the last stages at 112 px from a stage cache.
_TRAINED = {"train__freeze_backbone": False, "model__input_size": 112, "train__stage_cache": True}

#: name -> (base preset, overrides); every candidate tried is listed here (see the log).
CONFIGS: dict[str, tuple[str, dict]] = {
    "frozen": ("cpu", {}),
    "e2e_l4_112": ("cpu", {**_TRAINED, "model__trained_stages": 1}),
    "e2e_l34_112": ("cpu", {**_TRAINED, "model__trained_stages": 2}),
    # e2e_l34_112 after 5 epochs of SimCLR on the training sections' fronts (train/ssl.py)
    "e2e_l34_112_ssl5": ("cpu", {**_TRAINED, "model__trained_stages": 2, "train__ssl_epochs": 5}),
}


def _inner_scores(metrics: dict) -> dict[str, float]:
    """Mean over folds of the inner-CV scores at the chosen settings (training sections only):
    the model's heads, and the colour ridge without and with context (its inner folds)."""
    out: dict[str, list[float]] = {}
    for run in metrics["runs"]:
        ks, hs = run.get("k_selection") or {}, run.get("head_selection") or {}
        rs = run.get("reference_selection") or {}
        if "scores" in ks:
            out.setdefault("retrieval", []).append(ks["scores"][str(ks["k"])])
        for head, score in (hs.get("chosen") or {}).items():
            out.setdefault(head, []).append(score)
        if rs.get("context_scores"):
            out.setdefault("colour_ridge", []).append(rs["context_scores"]["0"])
            out.setdefault("colour_ridge+context", []).append(
                rs["context_scores"][f"{rs['context']:g}"]
            )
    return {k: float(np.mean(v)) for k, v in out.items() if v}


def _outer_scores(metrics: dict) -> dict[str, float]:
    """Development data only: mean held-out default-target ACG per row, and model - ridge."""
    import pandas as pd

    recs = pd.DataFrame([r for r in metrics["records"] if r["target"] == "default"])
    table = recs.pivot_table(index=["section", "seed"], columns="method", values="acg")
    out = {}
    for method in table.columns:
        if method.startswith("mclstexp") or method == "colour_ridge":
            out[method] = float(table[method].mean())
    for method in [m for m in table.columns if m.startswith("mclstexp")]:
        diff = table[method] - table["colour_ridge"]
        out[f"{method} - ridge"] = float(diff.mean())
        out[f"{method} wins"] = int((diff > 0).sum())
    return out


def run_one(args: argparse.Namespace, config: str, draw: int | None) -> dict:
    """Run one configuration on one dataset (draw) and summarise it."""
    from mclstexp.models import load_preset
    from mclstexp.workflow import load_dataset, run_experiment

    base, overrides = CONFIGS[config]
    if args.dataset == "her2st":
        dataset = load_dataset("her2st", root=args.root)
        patch_dir = args.patch_dir
        folder = args.out / "her2st" / config
    else:
        dataset = load_dataset("synthetic", seed=int(draw))
        patch_dir = None
        folder = args.out / f"synthetic{draw}" / config
    preset_file = folder / "preset.json"
    folder.mkdir(parents=True, exist_ok=True)
    model_cfg, train_cfg = load_preset(base, **overrides)
    preset_file.write_text(
        json.dumps({"model": model_cfg.to_dict(), "train": train_cfg.to_dict()}, indent=1)
    )
    load0 = os.getloadavg()[0]
    started = time.perf_counter()
    run_experiment(
        dataset,
        out_dir=folder,
        presets=[str(preset_file)],
        seeds=args.seeds,
        plots=False,
        progress=False,
        log=lambda *_: None,
        patch_dir=patch_dir,
    )
    metrics = json.loads((folder / "metrics.json").read_text())
    entry = {
        "dataset": args.dataset,
        "draw": draw,
        "config": config,
        "seeds": args.seeds,
        "wall_s": round(time.perf_counter() - started, 1),
        "load_before": round(load0, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "peak_rss_mb": round(metrics["peak_rss_mb"], 1),
        "train_s": round(sum(r["train_seconds"] for r in metrics["runs"]), 1),
        "inner": _inner_scores(metrics),
    }
    if args.dataset == "synthetic":
        entry["outer"] = _outer_scores(metrics)
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=["synthetic", "her2st"], default="synthetic")
    parser.add_argument("--root", default="../shared/data/her2st", help="her2st data folder")
    parser.add_argument("--patch-dir", type=Path, default=Path("runs/her2st_patches"))
    parser.add_argument("--draws", type=int, nargs="+", default=[100], help="synthetic seeds")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds")
    parser.add_argument("--out", type=Path, default=Path("runs/cpu_presets"))
    parser.add_argument("--rerun", action="store_true")
    args = parser.parse_args()
    if args.dataset == "synthetic" and min(args.draws) < 100:
        raise SystemExit("develop on synthetic draws 100 and up (draws 0-11 are reported)")
    summary_file = args.out / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    draws = args.draws if args.dataset == "synthetic" else [None]
    for config in args.configs:
        for draw in draws:
            key = f"{args.dataset}|{draw}|{config}|{'-'.join(map(str, args.seeds))}"
            if key in summary and not args.rerun:
                continue
            summary[key] = run_one(args, config, draw)
            summary_file.parent.mkdir(parents=True, exist_ok=True)
            summary_file.write_text(json.dumps(summary, indent=1))
            print(json.dumps(summary[key]), flush=True)


if __name__ == "__main__":
    main()
